// Maintenance sessions kept for the next question to the same server. A restore asks the server a
// dozen things one after the other (does the target exist, the plan, leftovers, create,
// properties, rename), and a new connection costs the server a session's start and end each time
// (~20 ms on a local PostgreSQL). One idle session per server (per key: host, port, user,
// credentials) waits for the next question, for `idleMs` at most, without keeping the process
// alive. A session is given back only after work that succeeded and left it as it found it (no
// transaction open, no role, database or setting changed); one the server ends while it waits is
// never handed out again.

import type { Socket } from 'node:net';

export interface SessionHandle<C> {
  /** The session's socket: it keeps the process alive or not, and its close ends the session. */
  socket(session: C): Partial<Socket> | undefined;
  close(session: C): Promise<void>;
}

/** A session that reports its failures ('error'), as pg's Client and mysql2's Connection do. */
type Session = { on(event: 'error', listener: () => void): unknown };

export class IdleSessions<C extends Session> {
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
    this.handle.socket(entry.session)?.ref?.();
    return entry.session;
  }

  /** Keeps `session` for the next question, or closes it when one is kept already. */
  async giveBack(key: string, session: C): Promise<void> {
    if (this.idle.has(key)) return this.handle.close(session);
    if (!this.watched.has(session)) {
      this.watched.add(session);
      // Ended by the server while it waits (a restart, a timeout, a kill): never handed out again.
      const ended = () => this.dropIfKept(key, session);
      session.on('error', ended);
      this.handle.socket(session)?.once?.('close', ended);
    }
    this.handle.socket(session)?.unref?.();
    const timer = setTimeout(() => this.dropIfKept(key, session), this.idleMs).unref();
    this.idle.set(key, { session, timer });
  }

  /** Closes `session` if it is the one kept for `key` (not if it was handed out since). */
  private dropIfKept(key: string, session: C): void {
    const entry = this.idle.get(key);
    if (entry?.session !== session) return;
    clearTimeout(entry.timer);
    this.idle.delete(key);
    this.handle.close(session).catch(() => {});
  }
}
