// Child processes for dump and restore tools: spawned without a shell, secrets only in the
// environment, stderr kept (bounded) for the error message, killed when the signal aborts.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';

export interface ToolExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

export interface RunningTool {
  child: ChildProcessWithoutNullStreams;
  stdout: Readable;
  /** Resolves when the process has exited (whatever the code) and its stderr is drained. */
  exit: Promise<ToolExit>;
}

const STDERR_LIMIT = 64 * 1024;

/**
 * Dump tools write their output through stdio, whose buffer for a pipe is one page: a 4 KiB
 * write() each time, and a wake-up of our event loop for every few KiB read. coreutils' stdbuf
 * gives the tool a larger stdio buffer (same bytes, same order, flushed at exit), which cuts the
 * reads ~7-fold and with them a third of our CPU per byte. Without stdbuf the tool runs as is.
 */
export const OUTPUT_BUFFER = 1 << 20;
let stdbufPath: string | null | undefined;

function findStdbuf(): string | null {
  if (stdbufPath !== undefined) return stdbufPath;
  stdbufPath = null;
  if (process.platform !== 'linux' || process.env.DBSTASH_NO_STDBUF) return stdbufPath;
  for (const dir of pathDirs()) {
    try {
      accessSync(path.join(dir, 'stdbuf'), fsConstants.X_OK);
      stdbufPath = path.join(dir, 'stdbuf');
      break;
    } catch {
      /* try the next */
    }
  }
  return stdbufPath;
}

export function startTool(
  bin: string,
  args: string[],
  opts: {
    env?: NodeJS.ProcessEnv;
    signal?: AbortSignal;
    cwd?: string;
    stdin?: 'pipe' | 'ignore';
    /** The tool streams bulk output on stdout: give it a larger stdio buffer where we can. */
    bulkOutput?: boolean;
  } = {},
): RunningTool {
  const stdbuf = opts.bulkOutput ? findStdbuf() : null;
  // stdbuf execs the tool in place: the child's pid, signals and exit status are the tool's own.
  const [file, argv] = stdbuf ? [stdbuf, [`--output=${OUTPUT_BUFFER}`, bin, ...args]] : [bin, args];
  const child = spawn(file, argv, {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
  }) as ChildProcessWithoutNullStreams;
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    if (stderr.length < STDERR_LIMIT) stderr += d;
  });
  const onAbort = () => child.kill('SIGTERM');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  const exit = new Promise<ToolExit>((resolve) => {
    let spawnError: Error | undefined;
    child.on('error', (err) => {
      spawnError = err;
      resolve({ code: 127, signal: null, stderr: `${bin}: ${err.message}` });
    });
    child.on('close', (code, signal) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (!spawnError) resolve({ code, signal, stderr });
    });
  });
  return { child, stdout: child.stdout, exit };
}

/** Runs a tool to completion and returns its stdout as text (for --version, --list, …). */
export async function runTool(bin: string, args: string[], opts: { env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {}): Promise<ToolExit & { stdout: string }> {
  const tool = startTool(bin, args, opts);
  let stdout = '';
  tool.stdout.setEncoding('utf8');
  tool.stdout.on('data', (d: string) => (stdout += d));
  const result = await tool.exit;
  return { ...result, stdout };
}

/** The last meaningful line(s) of a tool's stderr, for a one-line error message. */
export function stderrSummary(stderr: string, maxLines = 2): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.slice(-maxLines).join(' / ');
}

export function describeExit(name: string, exit: ToolExit): string {
  const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
  const detail = stderrSummary(exit.stderr);
  return `${name} ${how}${detail ? `: ${detail}` : ''}`;
}

/**
 * Holds back the end of `stream` until `check` has resolved, and turns a rejection into a stream
 * error. A dump whose stdout ended but whose process failed therefore never looks complete.
 */
export function gateOnExit(stream: Readable, check: () => Promise<void>): Transform {
  const gate = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      done(null, chunk);
    },
    flush(done: TransformCallback) {
      check().then(
        () => done(),
        (err: Error) => done(err),
      );
    },
  });
  stream.on('error', (err) => gate.destroy(err));
  stream.pipe(gate);
  // When the consumer goes away, stop reading from the tool.
  gate.on('close', () => {
    if (!stream.readableEnded) stream.destroy();
  });
  return gate;
}

/** Finds an executable: in binDir when given, else each PATH entry. */
export async function findExecutable(name: string, dirs: string[]): Promise<string | undefined> {
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* try the next */
    }
  }
  return undefined;
}

export function pathDirs(): string[] {
  return (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
}
