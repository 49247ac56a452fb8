// Signed manifests. With a signing key (Ed25519, node:crypto), each manifest is signed over its
// exact bytes and the signature is published beside it as "<id>.manifest.sig", before the
// manifest itself. verify/restore check it against the configured public key, so someone who can
// write to the bucket but does not hold the private key cannot slip in an altered or swapped
// backup: the manifest names the artifact's SHA-256 and the backup id, and the signature covers both.
//
// Signature file: one line "dbstash-signature v1 ed25519 <key id> <base64 signature>", where the
// key id is the first 16 hex digits of the SHA-256 of the public key (SPKI DER).

import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError, IntegrityError, isNotFound } from '../core/errors.js';
import { databaseDir, manifestKey } from '../core/id.js';
import type { Manifest } from '../catalog/manifest.js';
import { getBytes, type Storage } from '../storage/storage.js';
import { secretFileProblem } from '../core/fs.js';

export const SIGNATURE_SUFFIX = '.manifest.sig';
const SIGNATURE_RE = /^dbstash-signature v1 ed25519 ([0-9a-f]{16}) ([A-Za-z0-9+/=]+)\s*$/;

export function signatureKey(id: string): string {
  return `${databaseDir(id)}/${id}${SIGNATURE_SUFFIX}`;
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

export interface ManifestSigner {
  keyId: string;
  /** The signature file's content for these exact manifest bytes. */
  sign(manifest: Buffer): Buffer;
}

export interface ManifestVerifier {
  keyId: string;
  publicKey: KeyObject;
}

function readKeyFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read the ${what} ${file}: ${(err as Error).message}`, { hint: 'make one with `dbstash keygen`' });
  }
}

function requireEd25519(key: KeyObject, file: string): void {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError(`${file} holds a ${key.asymmetricKeyType ?? 'non-asymmetric'} key, not an Ed25519 key`, { hint: 'make one with `dbstash keygen`' });
  }
}

export function loadSigner(file: string): ManifestSigner {
  let key: KeyObject;
  const problem = secretFileProblem(file);
  if (problem) throw new ConfigError(`signing key: ${problem}`, { hint: 'then run the command again; if others may have read it, make a new key with `dbstash keygen`' });
  try {
    key = createPrivateKey(readKeyFile(file, 'signing key'));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`${file} is not a PEM private key: ${(err as Error).message}`, { hint: 'give the private key that `dbstash keygen` wrote' });
  }
  requireEd25519(key, file);
  const keyId = keyIdOf(createPublicKey(key));
  return {
    keyId,
    sign: (manifest) => Buffer.from(`dbstash-signature v1 ed25519 ${keyId} ${sign(null, manifest, key).toString('base64')}\n`),
  };
}

/** A public key file (a private key file also works: its public half is used). */
export function loadVerifier(file: string): ManifestVerifier {
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(readKeyFile(file, 'verify key'));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`${file} is not a PEM public key: ${(err as Error).message}`, { hint: 'give the .pub file that `dbstash keygen` wrote' });
  }
  requireEd25519(publicKey, file);
  return { keyId: keyIdOf(publicKey), publicKey };
}

/** Checks a signature file's content against the exact manifest bytes; IntegrityError when it fails. */
export function checkSignature(id: string, manifest: Buffer, signatureFile: Buffer, verifier: ManifestVerifier): void {
  const m = SIGNATURE_RE.exec(signatureFile.toString('utf8'));
  if (!m) throw new IntegrityError(`the signature of ${id} is unreadable`, { hint: 'the .manifest.sig file was damaged or replaced' });
  if (m[1] !== verifier.keyId) {
    throw new IntegrityError(`backup ${id} is signed by key ${m[1]}, not by the configured verify key ${verifier.keyId}`, {
      hint: 'check --verify-key / signing.publicKeyFile; a backup signed by an unknown key is not trusted',
    });
  }
  if (!verify(null, manifest, verifier.publicKey, Buffer.from(m[2], 'base64'))) {
    throw new IntegrityError(`the manifest of ${id} does not match its signature: it was altered after the backup was made`, {
      hint: 'do not restore this backup; use another copy (--storage) or an older backup',
    });
  }
}

export type SignatureState = 'valid' | 'unsigned' | 'not-checked';

/**
 * Reads a manifest and, when a verifier is given, checks its signature first. Unsigned backups
 * fail unless allowUnsigned: otherwise deleting the .sig file would switch the check off.
 */
export async function readCheckedManifest(
  storage: Storage,
  id: string,
  verifier: ManifestVerifier | undefined,
  opts: { allowUnsigned?: boolean } = {},
): Promise<{ manifest: Manifest; signature: SignatureState }> {
  // The readers (and their schema) load here, not with the signer a backup needs.
  const [{ readManifest }, { parseManifest }] = await Promise.all([import('../catalog/catalog.js'), import('../catalog/manifest-schema.js')]);
  if (!verifier) return { manifest: await readManifest(storage, id), signature: 'not-checked' };
  let bytes: Buffer;
  try {
    bytes = await getBytes(storage, manifestKey(id));
  } catch (err) {
    if (isNotFound(err)) return { manifest: await readManifest(storage, id), signature: 'not-checked' };
    throw err;
  }
  let signature: SignatureState = 'valid';
  try {
    checkSignature(id, bytes, await getBytes(storage, signatureKey(id)), verifier);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    if (!opts.allowUnsigned) {
      throw new IntegrityError(`backup ${id} is not signed, but a verify key is configured`, {
        hint: 'backups made before signing was enabled are unsigned: pass --allow-unsigned to accept them',
      });
    }
    signature = 'unsigned';
  }
  const manifest = parseManifest(bytes, manifestKey(id));
  if (manifest.id !== id) throw new IntegrityError(`manifest ${manifestKey(id)} describes another backup (${manifest.id})`);
  return { manifest, signature };
}
