// WAL for a recovery that dbstash runs (`restore --pgdata`), served over a Unix socket with
// read-ahead. PostgreSQL's restore_command asks for one segment at a time and waits for each; the
// thin client (`dbstash wal get %f %p --socket PATH`, see cli/wal-client.ts) hands the request to
// this server in the restoring dbstash, which keeps its storage clients and, after each request,
// fetches the next segments of that timeline in parallel into a spool directory beside pg_wal
// (same file system: a prefetched segment is renamed into place). Every file is checked against
// the SHA-256 in its name as it is fetched, exactly as `wal get` does, and appears in the spool
// under its own name only once complete and checked.
//
// restore_command first tries to take the file from the spool itself (`mv`, no Node.js process
// started), and only on a miss starts the thin client: the server sees those takes on the spool
// (fs.watch) and keeps reading ahead of them. Starting Node.js for every 16 MB segment would
// otherwise bound replay at ~15 segments a second on a fast disk.

import type { Server } from 'node:net';
import { promises as fsp, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { GetOutcome } from './archive.js';
import { parseWalName, segmentName } from './names.js';
import { closeServer, listenForRequests } from './socket.js';

export interface WalGetServerOptions {
  get(name: string, file: string): Promise<GetOutcome>;
  /** Where prefetched segments wait (on the data directory's file system). */
  spool: string;
  /** Segments fetched ahead. */
  ahead: number;
  segmentSize: number;
  /** Hands a file written by this process to the server's OS user. */
  own(file: string): Promise<void>;
}

export interface WalGetReply {
  found: boolean;
  error?: string;
  exitCode?: number;
}

export class WalGetServer {
  private server?: Server;
  private watcher?: FSWatcher;
  private readonly pending = new Map<string, Promise<GetOutcome>>();
  /** Files handed to the recovery (by a request or taken from the spool): never fetched again. */
  private readonly taken = new Set<string>();
  served = 0;
  prefetched = 0;

  constructor(private readonly opts: WalGetServerOptions) {}

  async listen(socketPath: string): Promise<void> {
    await fsp.mkdir(this.opts.spool, { recursive: true, mode: 0o700 });
    await this.opts.own(this.opts.spool);
    this.watcher = watch(this.opts.spool, (_event, name) => {
      if (typeof name === 'string') void this.maybeTaken(name);
    });
    this.server = await listenForRequests(socketPath, (request) => this.answer(request));
    await this.opts.own(socketPath);
  }

  async close(): Promise<void> {
    this.watcher?.close();
    await closeServer(this.server);
    await Promise.allSettled(this.pending.values());
    await fsp.rm(this.opts.spool, { recursive: true, force: true });
  }

  private answer(request: unknown): Promise<WalGetReply> {
    const r = request as { name?: unknown; path?: unknown } | undefined;
    if (typeof r?.name !== 'string' || typeof r.path !== 'string' || !parseWalName(r.name) || !path.isAbsolute(r.path)) {
      return Promise.resolve({ found: false, error: 'not a WAL get request', exitCode: 2 });
    }
    return this.handle(r.name, r.path);
  }

  private async handle(name: string, file: string): Promise<WalGetReply> {
    try {
      const spooled = path.join(this.opts.spool, name);
      const pending = this.pending.get(name);
      // Served by this request: the spool watcher must not count it again, nor readAhead fetch it.
      this.pending.delete(name);
      this.taken.add(name);
      const ahead = pending ? await pending.catch(() => undefined) : undefined;
      let outcome: GetOutcome;
      let taken = false;
      if (ahead?.found) {
        // restore_command may have taken it from the spool itself a moment ago (asked twice).
        taken = await fsp.rename(spooled, file).then(
          () => true,
          (err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOENT') return false;
            throw err;
          },
        );
      }
      if (taken) outcome = ahead!;
      else {
        outcome = await this.opts.get(name, file);
        if (outcome.found) await this.opts.own(file);
      }
      this.served++;
      if (outcome.found) this.readAhead(name);
      return { found: outcome.found };
    } catch (err) {
      return { found: false, error: (err as Error).message, exitCode: (err as { exitCode?: number }).exitCode ?? 7 };
    }
  }

  /** A file gone from the spool that restore_command took itself: count it and read further ahead. */
  private async maybeTaken(name: string): Promise<void> {
    const pending = this.pending.get(name);
    if (!pending) return;
    const outcome = await pending.catch(() => undefined);
    if (!outcome?.found || this.pending.get(name) !== pending) return;
    if (await fsp.access(path.join(this.opts.spool, name)).then(() => true, () => false)) return;
    if (this.pending.get(name) !== pending) return;
    this.pending.delete(name);
    this.taken.add(name);
    this.served++;
    this.readAhead(name);
  }

  /** Starts fetching the segments after `name` on its timeline, up to `ahead` of them. */
  private readAhead(name: string): void {
    const w = parseWalName(name, this.opts.segmentSize);
    if (w?.kind !== 'segment') return;
    for (let i = 1; i <= this.opts.ahead; i++) {
      const next = segmentName(w.timeline, w.segno! + i, this.opts.segmentSize);
      if (this.pending.has(next) || this.taken.has(next)) continue;
      const file = path.join(this.opts.spool, next);
      const p = this.opts.get(next, file).then(async (o) => {
        if (o.found) {
          await this.opts.own(file);
          this.prefetched++;
        }
        return o;
      });
      p.catch(() => {});
      this.pending.set(next, p);
    }
  }
}
