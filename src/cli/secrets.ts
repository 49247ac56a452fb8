// Flags and config for encryption, decryption and manifest signatures, shared by backup, verify,
// restore and copy. Secrets are read from files or the environment (never from argv) and end up
// only in a StageContext or a signer; manifests record public keys and key ids alone.
//
// Precedence: command-line flags, then the database's config entry, then the global config.
//   encrypt:  --recipient (repeatable), --recipients-file, --passphrase-file, DBSTASH_PASSPHRASE
//   decrypt:  --identity FILE (repeatable), --passphrase-file, DBSTASH_PASSPHRASE
//   sign:     --signing-key FILE / signing.keyFile;  check: --verify-key FILE / signing.publicKeyFile

import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ConfigError, UsageError } from '../core/errors.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { ageStage, checkRecipient } from '../pipeline/age.js';
import type { Stage, StageContext } from '../pipeline/stage.js';
import { loadSigner, loadVerifier, type ManifestSigner, type ManifestVerifier } from '../crypto/sign.js';
import { collect } from './common.js';
import { secretFileProblem } from '../core/fs.js';

export interface SecretOptions {
  recipient?: string[];
  recipientsFile?: string;
  passphraseFile?: string;
  identity?: string[];
  signingKey?: string;
  verifyKey?: string;
  allowUnsigned?: boolean;
}

export const PASSPHRASE_ENV = 'DBSTASH_PASSPHRASE';

/** backup: what to encrypt to, and the key that signs manifests. */
export function encryptionOptions(cmd: Command): Command {
  return cmd
    .option('--recipient <age1…>', 'encrypt to this age X25519 public key (repeatable)', collect)
    .option('--recipients-file <file>', 'encrypt to every age1… key in this file (one per line, # comments)')
    .option('--passphrase-file <file>', `encrypt with the passphrase in this file (or set ${PASSPHRASE_ENV})`)
    .option('--signing-key <file>', 'sign the manifest with this Ed25519 private key (see `dbstash keygen`)');
}

/** verify, restore, copy: how to decrypt, and the key that signatures must match. */
export function decryptionOptions(cmd: Command): Command {
  return cmd
    .option('--identity <file>', 'age identity file to decrypt with (repeatable)', collect)
    .option('--passphrase-file <file>', `decrypt with the passphrase in this file (or set ${PASSPHRASE_ENV})`)
    .option('--verify-key <file>', 'require manifests signed by this Ed25519 public key')
    .option('--allow-unsigned', 'with a verify key, accept backups that carry no signature');
}

function readSecretFile(file: string, flag: string, secret = true): string {
  // As ssh refuses a private key others can read: the key is as good as public already.
  const problem = secret ? secretFileProblem(file) : undefined;
  if (problem) throw new UsageError(`${flag}: ${problem}`, { hint: `then run the command again; if others may have read it, consider the key compromised` });
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Lines that are neither blank nor comments, with their line numbers. */
function keyLines(text: string): { line: number; value: string }[] {
  return text
    .split(/\r?\n/)
    .map((value, i) => ({ line: i + 1, value: value.trim() }))
    .filter((l) => l.value && !l.value.startsWith('#'));
}

export function readRecipientsFile(file: string): string[] {
  const lines = keyLines(readSecretFile(file, '--recipients-file', false));
  if (lines.length === 0) throw new UsageError(`--recipients-file ${file} holds no recipient`);
  return lines.map((l) => checkRecipient(l.value, `${file}:${l.line}`));
}

export function readIdentityFile(file: string): string[] {
  const identities = keyLines(readSecretFile(file, '--identity')).map((l) => l.value);
  const usable = identities.filter((l) => /^AGE-SECRET-KEY-(PQ-)?1[0-9A-Z]+$/.test(l));
  if (usable.length === 0) {
    throw new UsageError(`--identity ${file} holds no age identity (AGE-SECRET-KEY-1…)`, {
      hint: 'give the file written by age-keygen or `dbstash keygen --age`',
    });
  }
  return usable;
}

function readPassphrase(file: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  let passphrase: string | undefined;
  if (file) passphrase = readSecretFile(file, '--passphrase-file').replace(/\r?\n$/, '');
  else if (env[PASSPHRASE_ENV] !== undefined) passphrase = env[PASSPHRASE_ENV];
  if (passphrase === '') throw new UsageError(`the passphrase is empty (${file ?? PASSPHRASE_ENV})`);
  return passphrase;
}

type EncryptionSettings = Exclude<NonNullable<ConfigFile['encryption']>, 'none'> & { none?: boolean };

/** The database's encryption settings over the global ones; `none` when the config says "none" for it. */
function encryptionConfig(config: ConfigFile, entry?: DatabaseConfig): Partial<EncryptionSettings> {
  const own = entry?.encryption;
  const global = config.encryption;
  if (own === 'none') return { none: true };
  return { ...(global === 'none' ? { none: own === undefined } : global), ...(own ?? {}) };
}

/** Whether the config says on purpose that this database's backups stay unencrypted. */
export function encryptionDeclinedInConfig(config: ConfigFile, entry?: DatabaseConfig): boolean {
  return encryptionConfig(config, entry).none === true;
}

/** The age stage for a backup, or undefined when nothing asks for encryption. */
export function encryptionStage(opts: SecretOptions, config: ConfigFile, entry?: DatabaseConfig, env = process.env): Stage | undefined {
  const fromFlags = (opts.recipient?.length ?? 0) > 0 || opts.recipientsFile !== undefined;
  const conf = encryptionConfig(config, entry);
  const recipients = fromFlags
    ? [...(opts.recipient ?? []).map((r) => checkRecipient(r, '--recipient')), ...(opts.recipientsFile ? readRecipientsFile(opts.recipientsFile) : [])]
    : [...(conf.recipients ?? []).map((r) => checkRecipient(r, 'config encryption.recipients')), ...(conf.recipientsFile ? readRecipientsFile(conf.recipientsFile) : [])];
  const passphraseFile = opts.passphraseFile ?? (fromFlags ? undefined : conf.passphraseFile);
  if (recipients.length > 0) {
    if (passphraseFile) {
      throw new UsageError('age encrypts to recipients or to a passphrase, not both', { hint: 'drop --passphrase-file, or the recipients' });
    }
    // A DBSTASH_PASSPHRASE kept in the environment for decrypting does not change what backups encrypt to.
    return ageStage({ recipients: [...new Set(recipients)] });
  }
  const passphrase = readPassphrase(passphraseFile, env);
  return passphrase === undefined ? undefined : ageStage({ scrypt: true }, { passphrase });
}

/** Secrets a restore, verify or copy needs to decode encrypted artifacts. */
export function stageContext(opts: SecretOptions, config: ConfigFile, entry?: DatabaseConfig, env = process.env): StageContext {
  const conf = encryptionConfig(config, entry);
  const files = opts.identity?.length ? opts.identity : conf.identityFile ? [conf.identityFile] : [];
  return {
    identities: files.flatMap(readIdentityFile),
    passphrase: readPassphrase(opts.passphraseFile ?? conf.passphraseFile, env),
  };
}

export function signerFor(opts: SecretOptions, config: ConfigFile): ManifestSigner | undefined {
  const file = opts.signingKey ?? config.signing?.keyFile;
  return file ? loadSigner(file) : undefined;
}

export function verifierFor(opts: SecretOptions, config: ConfigFile): ManifestVerifier | undefined {
  const file = opts.verifyKey ?? config.signing?.publicKeyFile;
  if (!file && opts.allowUnsigned) throw new ConfigError('--allow-unsigned only makes sense with a verify key (--verify-key or signing.publicKeyFile)');
  return file ? loadVerifier(file) : undefined;
}
