// The tool launcher's own process (see launcher.ts): a small Node process that starts tools for a
// long-running dbstash and hands their stdio pipes over to it through the IPC channel. It runs
// each tool as the command dbstash gives it (setpriv … tool args), keeps nothing of their output,
// relays exits, spawn errors and kills, and when dbstash goes (the channel closes, or its own
// death signal fires) its tools go with it.

import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';

interface SpawnRequest {
  type: 'spawn';
  id: number;
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  stdin: boolean;
}

interface KillRequest {
  type: 'kill';
  id: number;
  signal: NodeJS.Signals | number;
}

const tools = new Map<number, ChildProcess>();
const send = (message: object, handle?: Socket) => process.send?.(message, handle);

/** Stops reading at once: nothing is read here, every byte stays in the pipe for dbstash. */
function keepUnread(stream: unknown): void {
  (stream as { _handle?: { readStop?(): void } } | null)?._handle?.readStop?.();
}

function start(m: SpawnRequest): void {
  let child: ChildProcess;
  try {
    child = spawn(m.file, m.args, { env: m.env, cwd: m.cwd, stdio: [m.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  } catch (err) {
    send({ type: 'error', id: m.id, message: (err as Error).message, code: (err as NodeJS.ErrnoException).code });
    return;
  }
  child.on('error', (err: NodeJS.ErrnoException) => {
    tools.delete(m.id);
    send({ type: 'error', id: m.id, message: err.message, code: err.code });
  });
  if (child.pid === undefined) return; // the 'error' above follows
  keepUnread(child.stdout);
  keepUnread(child.stderr);
  tools.set(m.id, child);
  // One handle per message; the channel keeps their order. Each is closed here once sent.
  send({ type: 'stdout', id: m.id, pid: child.pid }, child.stdout as Socket);
  send({ type: 'stderr', id: m.id }, child.stderr as Socket);
  if (m.stdin) send({ type: 'stdin', id: m.id }, child.stdin as unknown as Socket);
  child.on('exit', (code, signal) => {
    tools.delete(m.id);
    send({ type: 'exit', id: m.id, code, signal });
  });
}

process.on('message', (m: SpawnRequest | KillRequest) => {
  if (m.type === 'spawn') start(m);
  else if (m.type === 'kill') tools.get(m.id)?.kill(m.signal);
});

process.on('disconnect', () => {
  for (const child of tools.values()) child.kill('SIGKILL');
  process.exit(0);
});
