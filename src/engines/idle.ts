// Maintenance sessions kept for the next question to the same server. A restore asks the server a
// dozen things one after the other (does the target exist, the plan, leftovers, create,
// properties, rename), and a new connection costs the server a session's start and end each time
// (~20 ms on a local PostgreSQL). One idle session per server (per key: host, port, user,
// credentials) waits for the next question, for `idleMs` at most, without keeping the process
// alive. A session is given back only after work that succeeded and left it as it found it (no
// transaction open, no role, database or setting changed); one the server ends while it waits is
// never handed out again.

export interface SessionHandle<C> {
  /** Whether the session's socket keeps the process alive. */
  hold(session: C, hold: boolean): void;
  close(session: C): Promise<void>;
  /** Calls `ended` when the server ends the session or its socket fails. */
  watch(session: C, ended: () => void): void;
}

export class IdleSessions<C extends object> {
  private readonly idle = new Map<string, { session: C; timer: NodeJS.Timeout }>();
  private readonly watched = new WeakSet<C>();

  constructor(
    private readonly idleMs: number,
    private readonly handle: SessionHandle<C>,
  ) {}

  /** The idle session kept for `key`, if any; it is the caller's until given back or closed. */
  async take(key: string): Promise<C | undefined> {
    if (!this.idle.has(key)) return undefined;
    // One turn of the event loop first: the end of a session the server closed while it waited
    // (already in the socket) is read, and the session dropped, before it could be handed out.
    await new Promise((resolve) => setImmediate(resolve));
    const entry = this.idle.get(key);
    if (!entry) return undefined;
    this.idle.delete(key);
    clearTimeout(entry.timer);
    this.handle.hold(entry.session, true);
    return entry.session;
  }

  /** Keeps `session` for the next question, or closes it when one is kept already. */
  async giveBack(key: string, session: C): Promise<void> {
    if (this.idle.has(key)) return this.handle.close(session);
    if (!this.watched.has(session)) {
      this.watched.add(session);
      this.handle.watch(session, () => {
        const entry = this.idle.get(key);
        if (entry?.session !== session) return;
        this.drop(key, entry);
      });
    }
    this.handle.hold(session, false);
    const timer = setTimeout(() => {
      const entry = this.idle.get(key);
      if (entry?.session === session) this.drop(key, entry);
    }, this.idleMs).unref();
    this.idle.set(key, { session, timer });
  }

  private drop(key: string, entry: { session: C; timer: NodeJS.Timeout }): void {
    clearTimeout(entry.timer);
    this.idle.delete(key);
    this.handle.close(entry.session).catch(() => {});
  }
}
