// Asynchronous WAL archiving: the running daemon serves `dbstash wal push --socket PATH` over a
// Unix socket, so PostgreSQL's archive_command does not start a whole dbstash (config, storage
// clients, stages) for every 16 MB segment.
//
//   client  `dbstash wal push %p --database NAME --socket PATH`: a thin path in main.ts that loads
//           nothing but node:net, sends {database, path} and waits for the answer. It exits 0 only
//           when the daemon says the file is stored in every required destination, so the promise
//           of the synchronous push holds. When no daemon answers at PATH, it falls back to the
//           synchronous push in the same process.
//   server  each request is pushed with the same pushWal as the synchronous command (hash, list,
//           exclusive put, read back). Looking ahead: after each request the server reads
//           pg_wal/archive_status/*.ready of that cluster and starts pushing the next segments
//           already (`parallel` at once), so when PostgreSQL asks for them, pushWal finds them
//           stored with the same bytes and answers at once. pg_wal stays near its minimum.
// A request for a file whose push is running waits for that push, then confirms it.

import { connect, type Server } from 'node:net';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { PushResult } from './archive.js';
import { closeServer, listenForRequests } from './socket.js';

export interface WalPushRequest {
  database: string;
  /** Absolute path of the file (the client resolves %p against PostgreSQL's working directory). */
  path: string;
}

export interface WalPushReply {
  ok: boolean;
  name?: string;
  already?: boolean;
  error?: string;
  exitCode?: number;
}

export interface WalPushServerOptions {
  /** Pushes one file of one configured database (pushWal with that database's stash and stages). */
  push(database: string, file: string): Promise<PushResult>;
  /** Segments pushed ahead at once, besides the requests. */
  parallel: number;
  log(message: string): void;
}

export class WalPushServer {
  private server?: Server;
  private readonly running = new Map<string, Promise<PushResult>>();

  constructor(private readonly opts: WalPushServerOptions) {}

  async listen(socketPath: string): Promise<void> {
    // A socket file left by a daemon that died is in the way; one that answers is another daemon's.
    if (await answers(socketPath)) throw new Error(`another daemon serves WAL pushes at ${socketPath}`);
    await fsp.rm(socketPath, { force: true });
    await fsp.mkdir(path.dirname(socketPath), { recursive: true });
    // PostgreSQL's user connects; nobody else may.
    this.server = await listenForRequests(socketPath, (request) => this.answer(request));
  }

  async close(): Promise<void> {
    await closeServer(this.server);
    await Promise.allSettled(this.running.values());
  }

  private answer(request: unknown): Promise<WalPushReply> {
    const r = request as Partial<WalPushRequest> | undefined;
    if (typeof r?.database !== 'string' || typeof r.path !== 'string' || !path.isAbsolute(r.path)) {
      return Promise.resolve({ ok: false, error: 'not a WAL push request', exitCode: 2 });
    }
    return this.handle({ database: r.database, path: r.path });
  }

  private async handle(request: WalPushRequest): Promise<WalPushReply> {
    try {
      const key = `${request.database}\u0000${request.path}`;
      const earlier = this.running.get(key);
      if (earlier) await earlier.catch(() => {});
      const result = await this.track(key, () => this.opts.push(request.database, request.path));
      void this.lookAhead(request);
      return { ok: true, name: result.name, already: result.stored.every((s) => s.already) };
    } catch (err) {
      const e = err as Error & { exitCode?: number };
      this.opts.log(`wal push ${path.basename(request.path)} of ${request.database} failed: ${e.message}`);
      return { ok: false, error: e.message, exitCode: e.exitCode ?? 1 };
    }
  }

  private track(key: string, run: () => Promise<PushResult>): Promise<PushResult> {
    const p = run().finally(() => {
      if (this.running.get(key) === p) this.running.delete(key);
    });
    this.running.set(key, p);
    return p;
  }

  /** Starts pushing the segments PostgreSQL has marked ready and not asked for yet. */
  private async lookAhead(request: WalPushRequest): Promise<void> {
    const dir = path.dirname(request.path);
    let ready: string[];
    try {
      ready = (await fsp.readdir(path.join(dir, 'archive_status'))).filter((f) => f.endsWith('.ready')).map((f) => f.slice(0, -'.ready'.length)).sort();
    } catch {
      return;
    }
    const busy = [...this.running.keys()].filter((k) => k.startsWith(`${request.database}\u0000`)).length;
    for (const name of ready.slice(0, Math.max(0, this.opts.parallel - busy + 1))) {
      const file = path.join(dir, name);
      const key = `${request.database}\u0000${file}`;
      if (this.running.has(key) || file === request.path) continue;
      void this.track(key, () => this.opts.push(request.database, file)).catch(() => {
          /* PostgreSQL asks for it itself, and that request reports the failure */
        });
    }
  }
}

/** Whether something accepts connections at `socketPath`. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
