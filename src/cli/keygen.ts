// `dbstash keygen`: makes the keys dbstash uses. By default an Ed25519 key pair for signing
// manifests (PEM: the private key 0600 for `backup --signing-key`, the public key for `verify` and
// `restore --verify-key`); with --age an age X25519 identity for encryption (the file age-keygen
// would write; its age1… recipient is what backups encrypt to). Existing files are never replaced.

import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../core/errors.js';
import { keyIdOf } from '../crypto/sign.js';
import { commonOptions, runCommand, type CommonOptions } from './common.js';

interface KeygenOptions extends CommonOptions {
  out?: string;
  age?: boolean;
}

function writeNew(file: string, content: string, mode: number): void {
  try {
    writeFileSync(file, content, { mode, flag: 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new UsageError(`${file} already exists; dbstash keygen never replaces a key`, { hint: 'choose another name with --out' });
    throw new UsageError(`cannot write ${file}: ${code ?? (err as Error).message}`);
  }
}

export function registerKeygen(program: Command): void {
  const cmd = program
    .command('keygen')
    .description('make an Ed25519 key pair for signed manifests, or with --age an age identity for encryption')
    .option('--out <file>', 'private key file (default: dbstash-signing.key, or dbstash-age.key with --age)')
    .option('--age', 'make an age X25519 identity (for --recipient / --identity) instead of a signing key');
  commonOptions(cmd, { dryRun: 'say which files would be written; write nothing', codes: [] });
  cmd.addHelpText(
    'after',
    `
Examples:
  dbstash keygen --out /etc/dbstash/signing.key      # writes signing.key (0600) and signing.key.pub
  dbstash backup --signing-key /etc/dbstash/signing.key
  dbstash verify --latest --verify-key /etc/dbstash/signing.key.pub
  dbstash keygen --age --out ~/.config/dbstash/age.key  # keep this one off the backup host
  dbstash backup --recipient age1…                   # the recipient keygen printed`,
  );
  cmd.action((opts: KeygenOptions) =>
    runCommand(opts, async (ctx) => {
      if (opts.dryRun) {
        const file = opts.out ?? (opts.age ? 'dbstash-age.key' : 'dbstash-signing.key');
        const files = opts.age ? [file] : [file, `${file}.pub`];
        ctx.out.result({ dryRun: true, files }, () => `would write ${files.join(' and ')}`);
        return;
      }
      if (opts.age) {
        const file = opts.out ?? 'dbstash-age.key';
        const { generateX25519Identity, identityToRecipient } = await import('age-encryption');
        const identity = await generateX25519Identity();
        const recipient = await identityToRecipient(identity);
        writeNew(file, `# created: ${new Date().toISOString()}\n# public key: ${recipient}\n${identity}\n`, 0o600);
        ctx.out.result({ identityFile: file, recipient }, () =>
          [`wrote the age identity ${file} (mode 0600): keep it secret, and away from the backup host`, `recipient: ${recipient}`].join('\n'),
        );
        return;
      }
      const file = opts.out ?? 'dbstash-signing.key';
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const keyId = keyIdOf(publicKey);
      writeNew(file, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
      writeNew(`${file}.pub`, publicKey.export({ type: 'spki', format: 'pem' }).toString(), 0o644);
      ctx.out.result({ privateKey: file, publicKey: `${file}.pub`, keyId }, () =>
        [
          `wrote the signing key ${file} (mode 0600) and its public key ${file}.pub (key id ${keyId})`,
          `sign:  dbstash backup --signing-key ${file}`,
          `check: dbstash verify --verify-key ${file}.pub`,
        ].join('\n'),
      );
    }),
  );
}
