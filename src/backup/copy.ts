// Copying backups between storages (seeding a new bucket, bringing an off-site copy up to date).
// Each artifact streams from the source into the target while its size and SHA-256 are checked
// against the manifest; the signature (when there is one) and then the manifest are written last,
// byte for byte, so a copy is a backup only once all its data arrived intact. On any failure what
// was written to the target is removed again.

import { pipeline, type Readable } from 'node:stream';
import { IntegrityError, isNotFound } from '../core/errors.js';
import { artifactKey, databaseDir, manifestKey } from '../core/id.js';
import { checkSeriesFolder, seriesFileKey, seriesOfManifest, writeSeriesFile } from '../catalog/series.js';
import { listBackups } from '../catalog/catalog.js';
import type { Manifest } from '../catalog/manifest.js';
import { parseManifest } from '../catalog/manifest-schema.js';
import { Meter } from '../pipeline/meter.js';
import { isDrawable } from '../storage/drawable.js';
import { getBytes, putOwnBytes, type Storage } from '../storage/storage.js';
import { checkSignature, signatureKey, type ManifestVerifier } from '../crypto/sign.js';

export interface CopyOptions {
  verifier?: ManifestVerifier;
  allowUnsigned?: boolean;
  signal?: AbortSignal;
}

export interface CopyResult {
  id: string;
  result: 'copied' | 'present';
  bytes: number;
}

async function readOptional(storage: Storage, key: string): Promise<Buffer | undefined> {
  try {
    return await getBytes(storage, key);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Copies one backup; a backup whose manifest is already in the target is left alone. */
export async function copyBackup(from: Storage, to: Storage, id: string, opts: CopyOptions = {}): Promise<CopyResult> {
  const body = await readOptional(from, manifestKey(id));
  if (!body) throw new IntegrityError(`backup ${id} has no manifest in ${from.url}`, { hint: 'run `dbstash list --storage …` on the source to see what it holds' });
  const signature = await readOptional(from, signatureKey(id));
  if (opts.verifier) {
    if (signature) checkSignature(id, body, signature, opts.verifier);
    else if (!opts.allowUnsigned) {
      throw new IntegrityError(`backup ${id} is not signed, but a verify key is configured`, { hint: 'pass --allow-unsigned to copy unsigned backups' });
    }
  }
  const manifest: Manifest = parseManifest(body, manifestKey(id));
  if (manifest.id !== id) throw new IntegrityError(`manifest ${manifestKey(id)} in ${from.url} describes another backup (${manifest.id})`);
  if (await to.stat(manifestKey(id))) return { id, result: 'present', bytes: 0 };

  const written: string[] = [];
  let bytes = 0;
  const series = seriesOfManifest(manifest);
  // A series' folder stands for one series in every stash (series.json); older folders have none.
  const ownFolder = manifest.series !== undefined && databaseDir(id) === series.key;
  if (ownFolder) await checkSeriesFolder(to, series);
  try {
    for (const artifact of manifest.artifacts) {
      const key = artifactKey(id, artifact.file);
      const meter = new Meter({ hash: true });
      const source = await from.get(key, { signal: opts.signal });
      // A source the target can draw into its own buffers is hashed as it is drawn: no stream in
      // between, no buffer allocated per chunk (storage/drawable.ts).
      let body: Readable = meter;
      if (isDrawable(source)) body = source.observe((bytes) => meter.update(bytes));
      else pipeline(source, meter, () => {});
      written.push(key);
      // Not exclusive: without a manifest in the target, an object under this key is the leftover of
      // an interrupted copy or backup, not a backup.
      await to.put(key, body, { signal: opts.signal, sizeHint: artifact.size, retain: true });
      if (meter.bytes !== artifact.size || meter.sha256() !== artifact.sha256) {
        throw new IntegrityError(
          `${artifact.file} in ${from.url} does not match its manifest (${meter.bytes} bytes, sha256 ${meter.sha256()}; manifest: ${artifact.size} bytes, ${artifact.sha256})`,
          { hint: 'the source copy is damaged: copy this backup from another storage that holds an intact one' },
        );
      }
      bytes += meter.bytes;
    }
    if (ownFolder && (await writeSeriesFile(to, series, manifest.engine, opts.signal))) written.push(seriesFileKey(series));
    if (signature) {
      written.push(signatureKey(id));
      await putOwnBytes(to, signatureKey(id), signature, { signal: opts.signal, retain: true });
    }
    await putOwnBytes(to, manifestKey(id), body, { signal: opts.signal, retain: true });
    return { id, result: 'copied', bytes };
  } catch (err) {
    for (const key of written) await to.delete(key).catch(() => {});
    throw err;
  }
}

/** Ids of the backups the source holds and the target does not (oldest first). */
export async function missingBackups(from: Storage, to: Storage, identity?: string): Promise<string[]> {
  const [source, target] = await Promise.all([listBackups(from), listBackups(to)]);
  const present = new Set(target.entries.map((e) => e.id));
  return source.entries
    .filter((e) => !present.has(e.id) && (!identity || e.series.identity === identity))
    .map((e) => e.id)
    .reverse();
}
