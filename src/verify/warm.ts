// Warm scratch servers for restore drills. A drill normally starts a throwaway server (initdb and
// start for PostgreSQL, mariadb-install-db and start for MariaDB: one to two seconds before the
// first byte is restored) and stops it after. A long-running process that drills again and again
// — the daemon, `dbstash verify --all --drill` — keeps one server per engine instead: started at
// the first drill, a database created and dropped per drill (as before), and stopped when the
// process ends (close()). Drills on one warm server take turns, so that the roles one drill
// creates for its dump never meet another's. A warm server that stopped answering is replaced.

import type { Engine, EngineId, ScratchServer } from '../engines/engine.js';

interface Warm {
  server: Promise<ScratchServer>;
  /** The end of the last drill queued on this server. */
  turn: Promise<void>;
}

export class WarmScratch {
  private readonly servers = new Map<EngineId, Warm>();
  private closed = false;
  /** How many servers were started (a replaced one counts again). */
  started = 0;

  constructor(private readonly tempDir: string) {}

  /**
   * Runs `work` with this engine's warm server, started on first use (never tied to one drill's
   * signal: an interrupted drill does not take the server down). One drill at a time per server.
   */
  async use<T>(engine: Engine, work: (server: ScratchServer) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error('the warm scratch servers are closed');
    if (!engine.startScratchServer) throw new Error(`no scratch server for ${engine.id}`);
    let warm = this.servers.get(engine.id);
    if (!warm) {
      warm = { server: this.start(engine), turn: Promise.resolve() };
      this.servers.set(engine.id, warm);
    }
    const entry = warm;
    const previous = entry.turn;
    let done!: () => void;
    entry.turn = new Promise<void>((resolve) => (done = resolve));
    try {
      await previous;
      let server = await entry.server.catch((err: unknown) => {
        // A start that failed is tried again by the next drill, not remembered.
        if (this.servers.get(engine.id) === entry) this.servers.delete(engine.id);
        throw err;
      });
      if (!(await this.answers(engine, server))) {
        await server.stop().catch(() => {});
        entry.server = this.start(engine);
        server = await entry.server;
      }
      return await work(server);
    } finally {
      done();
    }
  }

  private start(engine: Engine): Promise<ScratchServer> {
    this.started++;
    return engine.startScratchServer!({ tempDir: this.tempDir });
  }

  private async answers(engine: Engine, server: ScratchServer): Promise<boolean> {
    if (!engine.listDatabases) return true;
    return engine.listDatabases(server.target).then(
      () => true,
      () => false,
    );
  }

  /** Stops every warm server (after the drills running on them). */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.servers.values()];
    this.servers.clear();
    await Promise.all(
      all.map(async (w) => {
        await w.turn;
        const server = await w.server.catch(() => undefined);
        await server?.stop();
      }),
    );
  }
}
