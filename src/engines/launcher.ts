// Starting tools without forking a long-running dbstash. Node's spawn forks the whole process
// (libuv forks on Linux): the fork blocks the event loop while the page tables are copied (4-6 ms
// at 60 MB of RSS, 15-17 ms at 260 MB), and afterwards every page the process writes faults once
// more, as the fork left it copy-on-write: compressing a 7 MB dump with a kept zstd context took
// 20 ms of CPU, and 64 ms right after a spawn. The daemon, a fleet worker and the dashboard run for
// days with a grown heap; there each backup's dump tool cost that twice over. They start one small
// launcher process instead (launcher-child.ts), tied to dbstash like every tool, which starts the
// tools and passes their stdio pipes over the IPC channel: the bytes go from the tool to dbstash
// directly, as before. A one-shot command keeps spawning its tools itself (starting the launcher,
// a Node process, would cost more than the one fork it saves).
//
// What a caller sees is a child process: stdin/stdout/stderr streams (stand-ins until the pipes
// arrive, then fed from them), kill(), pid, exitCode/signalCode, 'error', 'exit' and 'close'.

import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams, type SpawnOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PassThrough, Writable } from 'node:stream';
import { pooledReader } from '../pipeline/pooled.js';

const LAUNCHER_SCRIPT = fileURLToPath(new URL('./launcher-child.js', import.meta.url));

let wanted = false;

/**
 * For the long-running front ends (daemon, fleet worker, dashboard): tools are started through the
 * launcher from now on. DBSTASH_NO_LAUNCHER=1 keeps spawning them directly.
 */
export function useToolLauncher(): void {
  wanted = !process.env.DBSTASH_NO_LAUNCHER;
}

export function toolLauncherWanted(): boolean {
  return wanted;
}

type Message =
  | { type: 'stdout'; id: number; pid: number }
  | { type: 'stderr' | 'stdin'; id: number }
  | { type: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null }
  | { type: 'error'; id: number; message: string; code?: string };

let launcher: ChildProcess | undefined;
const running = new Map<number, LaunchedTool>();
let nextId = 0;

/** The launcher's pid (for tests), once it runs. */
export function launcherPid(): number | undefined {
  return launcher?.pid;
}

/** The launcher, started on first use; `command` is how to run `node <script>` tied to dbstash. */
function ensureLauncher(command: (bin: string, args: string[]) => [string, string[]]): ChildProcess {
  if (launcher?.connected) return launcher;
  const [file, argv] = command(process.execPath, [LAUNCHER_SCRIPT]);
  const started = spawn(file, argv, { stdio: ['ignore', 'ignore', 'ignore', 'ipc'], env: process.env });
  started.on('message', (m: Message, handle?: Socket) => running.get(m.id)?.receive(m, handle));
  const gone = () => {
    if (launcher === started) launcher = undefined;
    for (const tool of running.values()) tool.lost();
  };
  started.on('error', gone);
  started.on('exit', gone);
  launcher = started;
  return started;
}

/** Holds dbstash's event loop only while a tool it started through the launcher runs. */
function holdWhileRunning(): void {
  const channel = launcher?.channel as { ref?(): void; unref?(): void } | undefined;
  if (running.size > 0) {
    launcher?.ref();
    channel?.ref?.();
  } else {
    launcher?.unref();
    channel?.unref?.();
  }
}

/**
 * The tool's stdin until its pipe arrives, and then a thin front of it: each write is called back
 * when the pipe has taken it, as a direct child's stdin does, so a writer that reuses its buffers
 * (the restore's feed draws the dump into two of its own) never has them sent after a change.
 */
class ToolInput extends Writable {
  private out: Socket | undefined;
  private waiting: (() => void)[] = [];

  constructor() {
    super({ highWaterMark: 64 * 1024 });
  }

  connect(pipe: Socket): void {
    // This end only writes; the tool's end is never read from here.
    (pipe as unknown as { _handle?: { readStop?(): void } })._handle?.readStop?.();
    pipe.on('error', (err) => this.destroy(err));
    this.out = pipe;
    if (this.destroyed) return void pipe.destroy();
    for (const resume of this.waiting.splice(0)) resume();
  }

  private whenConnected(then: (pipe: Socket) => void): void {
    if (this.out) return then(this.out);
    this.waiting.push(() => then(this.out!));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.whenConnected((pipe) => pipe.write(chunk, (err) => done(err)));
  }

  override _final(done: (err?: Error | null) => void): void {
    this.whenConnected((pipe) => pipe.end(() => done()));
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    // Destroyed before its end (a feed that failed): the tool's stdin closes, as it would.
    if (!this.writableFinished) this.out?.destroy();
    this.waiting = [];
    done(err);
  }
}

class LaunchedTool extends EventEmitter {
  readonly stdin: ToolInput | null;
  readonly stdout = new PassThrough({ highWaterMark: 64 * 1024 });
  readonly stderr = new PassThrough();
  pid: number | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  private exited = false;
  private ended = 0;
  private closed = false;
  private pendingKill: NodeJS.Signals | number | undefined;

  constructor(
    private readonly id: number,
    private readonly channel: ChildProcess,
    withStdin: boolean,
    /** stdout is read into reused buffers (pipeline/pooled.ts). */
    private readonly pooled: boolean,
  ) {
    super();
    this.stdin = withStdin ? new ToolInput() : null;
  }

  receive(m: Message, handle?: Socket): void {
    switch (m.type) {
      case 'stdout':
        this.pid = m.pid;
        this.attach(handle, this.stdout, this.pooled);
        if (this.pendingKill !== undefined) this.kill(this.pendingKill);
        break;
      case 'stderr':
        this.attach(handle, this.stderr);
        break;
      case 'stdin':
        if (handle && this.stdin) this.stdin.connect(handle);
        else this.stdin?.destroy(new Error('the launcher sent no stdin for the tool'));
        break;
      case 'exit':
        this.finish(m.code, m.signal);
        break;
      case 'error': {
        const err = Object.assign(new Error(m.message), { code: m.code }) as NodeJS.ErrnoException;
        this.endStreams();
        this.done();
        this.emit('error', err);
        break;
      }
    }
  }

  /**
   * Feeds a pipe into its stand-in. As for a child spawned directly, 'close' does not wait for a
   * stream nobody reads: a pipe counts as done once it has closed and its stand-in has handed
   * everything on to a reader, or has none.
   */
  private attach(handle: Socket | undefined, into: PassThrough, pooled = false): void {
    if (!handle) {
      into.end();
      return this.streamDone();
    }
    // The stand-in hands the pooled chunks on as they are, so they can still be released.
    const source = (pooled && pooledReader(handle)) || handle;
    let counted = false;
    const done = () => {
      if (counted) return;
      counted = true;
      this.streamDone();
    };
    handle.on('error', (err) => into.destroy(err));
    // A reader that destroys the stream before its end closes the pipe, as with a direct child.
    into.once('close', () => {
      if (!into.readableEnded) handle.destroy();
    });
    handle.once('close', () => {
      if (into.readableFlowing && !into.readableEnded && !into.destroyed) into.once('end', done).once('close', done);
      else done();
    });
    if (source !== handle) source.on('error', (err) => into.destroy(err));
    source.pipe(into);
  }

  private streamDone(): void {
    this.ended++;
    this.maybeClose();
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.exited) return false;
    if (this.pid === undefined) {
      this.pendingKill = signal;
      return true;
    }
    if (!this.channel.connected) return false;
    this.channel.send({ type: 'kill', id: this.id, signal });
    return true;
  }

  /** The launcher went away: its tools were killed with it. */
  lost(): void {
    if (this.exited) return;
    this.endStreams();
    this.finish(null, 'SIGKILL');
  }

  /** No pipe will come (a spawn error, the launcher gone): the stand-ins end here. */
  private endStreams(): void {
    this.stdin?.destroy();
    this.stdout.end();
    this.stderr.end();
    this.ended = 2;
  }

  private finish(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exited) return;
    this.exited = true;
    this.exitCode = code;
    this.signalCode = signal;
    this.done();
    this.emit('exit', code, signal);
    this.maybeClose();
  }

  private done(): void {
    running.delete(this.id);
    holdWhileRunning();
  }

  private maybeClose(): void {
    if (!this.exited || this.ended < 2 || this.closed) return;
    this.closed = true;
    this.emit('close', this.exitCode, this.signalCode);
  }
}

/**
 * Starts `file argv` (already the guarded command) through the launcher, which `command` starts
 * when it is not running. Only plain children go this way (no process group of their own): the
 * caller spawns the rest itself.
 */
export function launchTool(
  file: string,
  argv: string[],
  options: SpawnOptions,
  command: (bin: string, args: string[]) => [string, string[]],
  pooled = false,
): ChildProcessWithoutNullStreams {
  const channel = ensureLauncher(command);
  const id = ++nextId;
  const stdin = (options.stdio as string[])[0] === 'pipe';
  const tool = new LaunchedTool(id, channel, stdin, pooled);
  running.set(id, tool);
  holdWhileRunning();
  channel.send({ type: 'spawn', id, file, args: argv, env: options.env ?? process.env, cwd: options.cwd, stdin });
  return tool as unknown as ChildProcessWithoutNullStreams;
}
