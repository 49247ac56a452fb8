// The WAL archive: push (what archive_command runs) and get (what restore_command runs).
//
// Push reads the file PostgreSQL hands over once into memory (a segment is 16 MB by default; files
// over 64 MiB are read twice, streamed), hashes it, and streams it through the stages (compression,
// encryption) into every destination, each under a name that carries the raw bytes' SHA-256 (see
// names.ts). Objects are created exclusively (a temporary name and an atomic
// publish, as every artifact), so a half-written segment is never visible. A name already
// archived with the same hash is a success: archive_command is retried after a crash or a lost
// answer. The same name with another hash is refused loudly: two clusters are archiving into one
// series, and accepting either would leave an archive that restores neither. Push succeeds only
// when every required destination holds the file, read back, so PostgreSQL never recycles a
// segment that is not safe.
//
// Get lists the name's objects, streams one through the decoders into a temporary file beside the
// destination, checks the SHA-256 against the name, and renames it into place. A damaged copy is
// passed over for the next destination's; only when no good copy is left does it fail.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { IntegrityError, StorageError, UsageError } from '../core/errors.js';
import { Meter } from '../pipeline/meter.js';
import { gzipStage, zstdStage } from '../pipeline/compress.js';
import { ageDecoder } from '../pipeline/age.js';
import { suffixOf, type Stage, type StageContext } from '../pipeline/stage.js';
import { checkSeriesFolder, writeSeriesFile, type Series } from '../catalog/series.js';
import type { Destination } from '../backup/backup.js';
import type { Storage } from '../storage/storage.js';
import type { Target } from '../engines/engine.js';
import { parseWalName, parseWalObject, walObjectKey, walObjectPrefix, walObjectsIn, walPrefix, type WalObject } from './names.js';
import { parseHistory, type HistoryEntry } from './continuity.js';

/** One cluster's archive: where it is and whose it is. */
export interface WalSeries {
  target: Target;
  series: Series;
  destinations: Destination[];
}

export interface PushResult {
  name: string;
  sha256: string;
  size: number;
  /** Destinations that now hold it (stored by this push, or already there with the same bytes). */
  stored: { name: string; already: boolean }[];
  /** Optional destinations that failed. */
  failed: { name: string; error: string }[];
}

/** Files up to this size are read into memory once; larger ones (a wal_segment_size of 128 MB and more) are streamed twice. */
const IN_MEMORY_MAX = 64 * 2 ** 20;
const CHUNK = 1 << 20;

/** The file's bytes as a stream source, any number of times, and their SHA-256. */
async function readWalFile(file: string, size: number, signal?: AbortSignal): Promise<{ sha256: string; size: number; open: () => Readable }> {
  if (size <= IN_MEMORY_MAX) {
    const data = await fsp.readFile(file, { signal });
    const chunks = function* () {
      for (let at = 0; at < data.length; at += CHUNK) yield data.subarray(at, at + CHUNK);
    };
    return { sha256: createHash('sha256').update(data).digest('hex'), size: data.length, open: () => Readable.from(chunks(), { objectMode: false }) };
  }
  const meter = new Meter({ hash: true });
  await pipeline(createReadStream(file, { highWaterMark: CHUNK }), meter, async function* (source: AsyncIterable<Buffer>) {
    for await (const _ of source) {
      /* hashed by the meter */
    }
  }, { signal });
  return { sha256: meter.sha256(), size: meter.bytes, open: () => createReadStream(file, { highWaterMark: CHUNK }) };
}

/** Every WAL object of a series in one storage. */
export async function listWalObjects(storage: Storage, seriesKey: string, signal?: AbortSignal): Promise<WalObject[]> {
  return walObjectsIn(await storage.list(walPrefix(seriesKey), { signal }), seriesKey);
}

/** The copies of `name` one storage holds (normally none or one). */
export async function walCopies(storage: Storage, series: Series, name: string, signal?: AbortSignal): Promise<WalObject[]> {
  const objects = await storage.list(walObjectPrefix(series.key, name), { signal });
  return objects.map(parseWalObject).filter((o): o is WalObject => o !== undefined && o.name === name);
}

function conflict(storage: Storage, name: string, theirs: WalObject, ours: string): IntegrityError {
  return new IntegrityError(
    `${name} is already archived in ${storage.url} with other contents (sha256 ${theirs.sha256.slice(0, 12)}…, this file ${ours.slice(0, 12)}…)`,
    {
      hint: 'two clusters are archiving into one series, or a restored copy kept archiving: give each cluster its own name: in the config (or turn archiving off on the copy), and keep the archive of the cluster you restore from',
    },
  );
}

/** Stores one file in one storage; `already` when the same bytes were there. */
async function pushTo(storage: Storage, series: Series, open: () => Readable, name: string, sha256: string, size: number, stages: Stage[], signal?: AbortSignal): Promise<boolean> {
  const existing = await walCopies(storage, series, name, signal);
  const same = existing.find((o) => o.sha256 === sha256);
  if (same) return true;
  if (existing.length > 0) throw conflict(storage, name, existing[0], sha256);
  if (!(await checkSeriesFolder(storage, series))) await writeSeriesFile(storage, series, 'postgres', signal);
  const key = walObjectKey(series.key, name, sha256, suffixOf(stages));
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const local = new AbortController();
  const onAbort = () => local.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const chain = pipeline([open(), ...stages.map((s) => s.encode()), out] as unknown as [Readable, ...NodeJS.WritableStream[]], { signal: local.signal });
  chain.catch((err: unknown) => local.abort(err));
  try {
    await Promise.all([chain, storage.put(key, out, { exclusive: true, retain: true, signal: local.signal, sizeHint: size })]);
  } catch (err) {
    if ((err as { reason?: string }).reason !== 'exists') throw err;
    // Another push of the same name got there first (archive_command retried, two pushers).
    const now = await walCopies(storage, series, name, signal);
    if (now.some((o) => o.sha256 === sha256)) return true;
    throw now[0] ? conflict(storage, name, now[0], sha256) : err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  const info = await storage.stat(key, { signal });
  if (!info) throw new StorageError('not-found', `${name} is not in ${storage.url} after it was stored`);
  return false;
}

/**
 * Archives one WAL file (a segment, a partial segment, a backup history or a timeline history
 * file) into every destination. Resolves only when every required destination holds it.
 */
export async function pushWal(
  file: string,
  opts: { destinations: Destination[]; series: Series; stages: Stage[]; signal?: AbortSignal; warn: (m: string) => void },
): Promise<PushResult> {
  const name = path.basename(file);
  if (!parseWalName(name)) {
    throw new UsageError(`"${name}" is not the name of a WAL file (a segment such as 000000010000000000000003, a .partial, .backup or .history file)`, {
      hint: 'archive_command must pass %p, the path of the file PostgreSQL archives: archive_command = \'dbstash wal push %p --database NAME\'',
    });
  }
  let stat;
  try {
    stat = await fsp.stat(file);
  } catch (err) {
    throw new UsageError(`cannot read the WAL file ${file}: ${(err as Error).message}`, {
      hint: 'archive_command runs in the data directory: pass %p (pg_wal/…), not %f',
    });
  }
  if (!stat.isFile()) throw new UsageError(`${file} is not a file`);
  const { sha256, size, open } = await readWalFile(file, stat.size, opts.signal);
  const stored: PushResult['stored'] = [];
  const failed: PushResult['failed'] = [];
  const results = await Promise.allSettled(
    opts.destinations.map((d) => pushTo(d.storage, opts.series, open, name, sha256, size, opts.stages, opts.signal)),
  );
  let firstRequired: unknown;
  results.forEach((r, i) => {
    const dest = opts.destinations[i];
    if (r.status === 'fulfilled') stored.push({ name: dest.name, already: r.value });
    else if (!dest.optional || r.reason instanceof IntegrityError) firstRequired ??= r.reason;
    else {
      failed.push({ name: dest.name, error: (r.reason as Error).message });
      opts.warn(`optional destination ${dest.name} did not store ${name}: ${(r.reason as Error).message}`);
    }
  });
  if (firstRequired) throw firstRequired;
  if (stored.length === 0) throw new StorageError('permanent', `no destination stored ${name}`);
  return { name, sha256, size, stored, failed };
}

/** The decoders for a WAL object's suffix (".zst", ".gz", ".age" in the order they were applied). */
export function walDecoders(suffix: string, context: StageContext): Duplex[] {
  return suffix
    .split('.')
    .filter(Boolean)
    .reverse()
    .map((ext) => {
      if (ext === 'zst') return zstdStage({}).decode();
      if (ext === 'gz') return gzipStage({}).decode();
      if (ext === 'age') return ageDecoder(context, 'the WAL archive is encrypted with age');
      throw new IntegrityError(`unknown stage suffix ".${ext}" in a WAL object's name`, { hint: 'a newer dbstash may have archived it' });
    });
}

/** Streams one WAL object, decoded and checked, into `file` (via a temporary name beside it). */
export async function fetchWalObject(storage: Storage, obj: WalObject, file: string, context: StageContext, signal?: AbortSignal): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.dbstash-${process.pid}`);
  const meter = new Meter({ hash: true });
  try {
    await pipeline([await storage.get(obj.key, { signal }), ...walDecoders(obj.suffix, context), meter, createWriteStream(temp, { mode: 0o600 })] as unknown as [Readable, ...NodeJS.WritableStream[]], { signal });
    if (meter.sha256() !== obj.sha256) {
      throw new IntegrityError(`${obj.name} in ${storage.url} is damaged: its bytes decode to sha256 ${meter.sha256().slice(0, 12)}…, its name says ${obj.sha256.slice(0, 12)}…`);
    }
    await fsp.rename(temp, file);
  } catch (err) {
    await fsp.rm(temp, { force: true });
    throw err;
  }
}

/** Reads one small WAL object (a history file) into memory, decoded and checked. */
export async function readWalObject(storage: Storage, obj: WalObject, context: StageContext, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const meter = new Meter({ hash: true });
  await pipeline([await storage.get(obj.key, { signal }), ...walDecoders(obj.suffix, context), meter, async function* (source: AsyncIterable<Buffer>) {
    for await (const c of source) chunks.push(c);
  }] as unknown as [Readable, ...NodeJS.WritableStream[]], { signal });
  if (meter.sha256() !== obj.sha256) throw new IntegrityError(`${obj.name} in ${storage.url} is damaged: its bytes do not match the SHA-256 in its name`);
  return Buffer.concat(chunks);
}

/** The timeline histories the archive holds, by timeline. */
export async function readHistories(storage: Storage, objects: WalObject[], context: StageContext, signal?: AbortSignal): Promise<Map<number, HistoryEntry[]>> {
  const out = new Map<number, HistoryEntry[]>();
  for (const o of objects) {
    const n = parseWalName(o.name);
    if (n?.kind === 'history') out.set(n.timeline, parseHistory((await readWalObject(storage, o, context, signal)).toString('utf8')));
  }
  return out;
}

export type GetOutcome = { found: true; from: string; warnings: string[] } | { found: false };

/**
 * Fetches `name` into `file` from the first destination that holds a good copy. Not found
 * anywhere: `{ found: false }` (the end of the archive, for PostgreSQL). Copies that exist but
 * are all damaged or unreadable: the first such error.
 */
export async function getWal(
  name: string,
  file: string,
  opts: { destinations: Destination[]; series: Series; context: StageContext; signal?: AbortSignal },
): Promise<GetOutcome> {
  if (!parseWalName(name)) throw new UsageError(`"${name}" is not the name of a WAL file`, { hint: "restore_command must pass %f and %p: restore_command = 'dbstash wal get %f %p --database NAME'" });
  const warnings: string[] = [];
  let firstError: unknown;
  for (const dest of opts.destinations) {
    let copies: WalObject[];
    try {
      copies = await walCopies(dest.storage, opts.series, name, opts.signal);
    } catch (err) {
      firstError ??= err;
      warnings.push(`${dest.name}: ${(err as Error).message}`);
      continue;
    }
    if (new Set(copies.map((c) => c.sha256)).size > 1) {
      firstError ??= new IntegrityError(`${name} is archived in ${dest.storage.url} with ${copies.length} different contents: the archive mixes two clusters`);
      continue;
    }
    if (copies.length === 0) continue;
    try {
      await fetchWalObject(dest.storage, copies[0], file, opts.context, opts.signal);
      return { found: true, from: dest.name, warnings };
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      firstError ??= err;
      warnings.push(`${dest.name}: ${(err as Error).message}`);
    }
  }
  if (firstError) throw firstError;
  return { found: false };
}

/** The SHA-256 of a buffer, hex. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
