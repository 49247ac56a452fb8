// A base backup of a cluster with tablespaces, streamed as one tar. pg_basebackup writes a cluster
// with tablespaces only as one file per tablespace (`-D -` takes a single one), so dbstash speaks
// the replication protocol's BASE_BACKUP itself, as pg_basebackup does, and joins what the server
// sends into a single archive on the way:
//
//   pg_tblspc/<oid>/PG_15_…/…   each tablespace's archive, its names under pg_tblspc/<oid>/
//   base archive                 the data directory, with tablespace_map (oid and location)
//   backup_manifest              the server's manifest, last, as pg_basebackup -D - places it
//
// Untarred by hand, each tablespace lies in pg_tblspc/<oid>, a directory inside the data
// directory; a restore (wal/recover.ts) instead points pg_tblspc/<oid> at the tablespace's
// directory before it untars, so the files land there. Nothing is written to local disk; the
// server's data is copied once, out of the protocol's buffers into pieces of 256 KiB, and its
// headers are rewritten on the way. The stream errors, never ends cleanly, unless the server said
// the backup is complete.

import { Readable } from 'node:stream';
import pg from 'pg';
import { BackupError } from '../../core/errors.js';
import type { Target } from '../engine.js';
import { cancelRunningQuery, classifyPgError, clientConfig } from './connection.js';
import { entryName, sealHeader, TarSplitter, tarHeader } from './tar.js';

const BLOCK = 512;
/** Bytes per chunk of the joined stream. */
const PIECE = 256 * 1024;
/** The largest manifest kept in memory before it is written as the archive's last entry. */
const MAX_MANIFEST_BYTES = 512 * 1024 * 1024;

export interface StreamedTablespace {
  oid: number;
  location: string;
}

export interface BaseStream {
  stream: Readable;
  /** Resolves once the server has ended the backup (its end position), rejects on any failure. */
  done: Promise<{ tablespaces: StreamedTablespace[]; endLsn: string; endTimeline: number }>;
  /** The command sent to the server, for the manifest. */
  command: string;
  /** Asks the server to cancel the backup (a CancelRequest); resolves once the server has it. */
  cancel(): Promise<void>;
}

/** A tar header's entry name moved under `prefix`, in the name field or split into the ustar prefix field. */
export function renameEntry(header: Buffer, prefix: string): void {
  const full = `${prefix}${entryName(header).replace(/^\.\//, '')}`;
  let head = '';
  let tail = full;
  if (Buffer.byteLength(full) > 100) {
    // ustar: the name is prefix + "/" + name, cut at a slash (not a directory's trailing one).
    let at = full.lastIndexOf('/', full.length - 2);
    while (at > 0 && (Buffer.byteLength(full.slice(0, at)) > 155 || Buffer.byteLength(full.slice(at + 1)) > 100)) at = full.lastIndexOf('/', at - 1);
    if (at <= 0) throw new BackupError(`[postgres] a file name in the base backup does not fit a tar header under ${prefix}: ${full}`);
    head = full.slice(0, at);
    tail = full.slice(at + 1);
  }
  header.fill(0, 0, 100);
  header.write(tail, 0, 100, 'utf8');
  if (header.toString('latin1', 257, 263).startsWith('ustar')) {
    header.fill(0, 345, 500);
    header.write(head, 345, 155, 'utf8');
  } else if (head) {
    throw new BackupError(`[postgres] a file name in the base backup is too long for its tar header: ${full}`);
  }
  sealHeader(header);
}

/**
 * One archive of the server's stream, passed on entry by entry: headers get `prefix` before their
 * names (tablespaces), the contents go through unchanged, and the archive's end-of-archive blocks
 * are dropped (the joined archive gets one of its own, at its end). `emit` copies what it gets.
 */
class ArchiveRelay {
  private readonly tar: TarSplitter;

  constructor(prefix: string, emit: (b: Buffer) => void) {
    this.tar = new TarSplitter({
      header: (header) => {
        if (prefix) renameEntry(header, prefix);
        emit(header);
      },
      content: emit,
      padding: emit,
    });
  }

  write(chunk: Buffer): void {
    try {
      this.tar.write(chunk);
    } catch (err) {
      throw err instanceof BackupError ? err : new BackupError('[postgres] the server sent a tar header that does not read', { cause: err });
    }
  }

  finish(name: string): void {
    if (this.tar.partial) throw new BackupError(`[postgres] the server's archive ${name} ended inside a file`);
  }
}

function optionList(walIncluded: boolean): string {
  const o = ["LABEL 'dbstash'", "CHECKPOINT 'fast'", "MANIFEST 'yes'", 'TABLESPACE_MAP', "TARGET 'client'"];
  // With the WAL inside, the backup does not wait for the archive (as pg_basebackup -X fetch).
  if (walIncluded) o.push('WAL', 'WAIT 0');
  return o.join(', ');
}

/**
 * Starts BASE_BACKUP on a replication connection to `target` and returns the joined tar as a
 * stream. `onNotice` gets the server's notices (the wait for the archive). Aborting `signal`, or
 * destroying the stream before its end, cancels the backup on the server and closes the connection.
 */
export async function streamBaseBackup(target: Target, opts: { walIncluded: boolean; signal: AbortSignal; onNotice(message: string): void }): Promise<BaseStream> {
  const command = `BASE_BACKUP (${optionList(opts.walIncluded)})`;
  const client = new pg.Client({ ...clientConfig(target, target.database), replication: true } as pg.ClientConfig);
  client.on('error', () => {
    /* reported through the query */
  });
  client.on('notice', (n: { message?: string }) => opts.onNotice(n.message ?? ''));
  // The server does not notice a closed connection while it waits for the archive (it only
  // notices when it next sends): a cancel request ends the backup on its side too.
  let cancelling: Promise<void> | undefined;
  const cancel = () => (cancelling ??= cancelRunningQuery(client));
  const kill = () => {
    void cancel();
    client.connection.stream.destroy();
  };
  opts.signal.addEventListener('abort', kill, { once: true });
  try {
    await client.connect();
  } catch (err) {
    opts.signal.removeEventListener('abort', kill);
    await client.end().catch(() => {});
    opts.signal.throwIfAborted();
    throw classifyPgError(err, target);
  }
  const socket = client.connection.stream;
  const stream = new Readable({
    highWaterMark: 1 << 20,
    read: () => socket.resume(),
    destroy: (err, cb) => {
      if (!finished) kill();
      cb(err);
    },
  });
  // The server sends 32 KiB at a time: passed on in pieces of PIECE bytes, copied out of the
  // protocol's buffers once, so each stage downstream (compression, hashing, storage) handles an
  // eighth as many chunks.
  let piece = Buffer.allocUnsafe(PIECE);
  let filled = 0;
  const flush = () => {
    if (filled === 0) return;
    const out = filled === PIECE ? piece : piece.subarray(0, filled);
    piece = Buffer.allocUnsafe(PIECE);
    filled = 0;
    if (!stream.push(out)) socket.pause();
  };
  const emit = (b: Buffer) => {
    for (let at = 0; at < b.length; ) {
      const n = b.copy(piece, filled, at, Math.min(b.length, at + PIECE - filled));
      filled += n;
      at += n;
      if (filled === PIECE) flush();
    }
  };

  let finished = false;
  let resultSets = 0;
  let endLsn = '';
  let endTimeline = 0;
  const tablespaces: StreamedTablespace[] = [];
  let relay: ArchiveRelay | undefined;
  let relayName = '';
  let manifest: Buffer[] | undefined;
  let manifestBytes = 0;
  let failure: Error | undefined;
  let resolveDone!: (v: { tablespaces: StreamedTablespace[]; endLsn: string; endTimeline: number }) => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<{ tablespaces: StreamedTablespace[]; endLsn: string; endTimeline: number }>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  done.catch(() => {});

  const fail = (err: Error) => {
    if (failure || finished) return;
    failure = err;
    opts.signal.removeEventListener('abort', kill);
    stream.destroy(err);
    socket.destroy();
    void client.end().catch(() => {});
    // Settled once the server has the cancel (if one was sent), so the process does not exit first.
    void Promise.resolve(cancelling).then(() => rejectDone(err));
  };
  const closeArchive = () => {
    relay?.finish(relayName);
    relay = undefined;
  };

  const query = {
    submit(connection: { query(text: string): void }) {
      connection.query(command);
    },
    handleRowDescription() {
      resultSets++;
    },
    handleDataRow(msg: { fields: (string | null)[] }) {
      // 1: start position and timeline; 2: the tablespaces (oid, location, size), the data
      // directory last with no oid; 3: end position and timeline.
      if (resultSets === 2 && msg.fields[0] !== null) tablespaces.push({ oid: Number(msg.fields[0]), location: String(msg.fields[1]) });
      if (resultSets === 3) {
        endLsn = String(msg.fields[0]);
        endTimeline = Number(msg.fields[1]);
      }
    },
    handleCommandComplete() {},
    handleEmptyQuery() {},
    handlePortalSuspended() {},
    handleCopyInResponse() {
      fail(new BackupError('[postgres] the server asked for data during BASE_BACKUP'));
    },
    handleCopyData(msg: { chunk: Buffer }) {
      if (failure) return;
      try {
        const chunk = msg.chunk;
        const type = chunk[0];
        if (type === 0x6e /* n: a new archive */) {
          closeArchive();
          const body = chunk.subarray(1);
          const nul = body.indexOf(0);
          relayName = body.toString('utf8', 0, nul);
          const oid = /^(\d+)\.tar$/.exec(relayName)?.[1];
          if (relayName !== 'base.tar' && !oid) throw new BackupError(`[postgres] the server sent an archive named ${relayName}`);
          relay = new ArchiveRelay(oid ? `pg_tblspc/${oid}/` : '', emit);
        } else if (type === 0x64 /* d: data */) {
          const data = chunk.subarray(1);
          if (manifest) {
            manifestBytes += data.length;
            if (manifestBytes > MAX_MANIFEST_BYTES) throw new BackupError(`[postgres] the backup manifest is larger than ${MAX_MANIFEST_BYTES / 1024 / 1024} MiB`);
            manifest.push(Buffer.from(data));
          } else if (relay) {
            relay.write(data);
          } else {
            throw new BackupError('[postgres] the server sent backup data before naming its archive');
          }
        } else if (type === 0x6d /* m: the manifest follows */) {
          closeArchive();
          manifest = [];
        }
        // p: progress, ignored.
      } catch (err) {
        fail(err as Error);
      }
    },
    handleError(err: Error) {
      fail(new BackupError(`[postgres] the server ended the base backup: ${err.message}`, { cause: err }));
    },
    handleReadyForQuery() {
      if (failure) return;
      try {
        closeArchive();
        if (!manifest) throw new BackupError('[postgres] the server ended BASE_BACKUP without a backup manifest');
        if (!endLsn) throw new BackupError('[postgres] the server ended BASE_BACKUP without its end position');
        const body = Buffer.concat(manifest);
        emit(tarHeader('backup_manifest', body.length, Date.now() / 1000));
        emit(body);
        emit(Buffer.alloc((BLOCK - (body.length % BLOCK)) % BLOCK + 2 * BLOCK));
        flush();
        finished = true;
        opts.signal.removeEventListener('abort', kill);
        stream.push(null);
        resolveDone({ tablespaces, endLsn, endTimeline });
        void client.end().catch(() => {});
      } catch (err) {
        fail(err as Error);
      }
    },
  };
  client.on('end', () => fail(new BackupError('[postgres] the replication connection closed before the base backup ended')));
  (client as unknown as { query(q: unknown): void }).query(query);
  return { stream, done, command, cancel };
}
