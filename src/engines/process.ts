// Child processes for dump and restore tools: spawned without a shell, secrets only in the
// environment, stderr kept (bounded) for the error message, killed when the signal aborts.
//
// Children die with dbstash, also when dbstash itself is killed (kill -9, the OOM killer). On
// Linux every child is started through util-linux's setpriv with --pdeathsig KILL: setpriv sets
// PR_SET_PDEATHSIG and execs the tool in place (same pid), so the kernel kills the tool when its
// parent goes. The death signal fires when the parent *thread* exits; Node spawns from its main
// thread, which lives as long as the process. A tool that forks workers of its own (pg_dump and
// pg_restore with --jobs) runs in a process group of its own, watched by a small shell that kills
// the whole group once dbstash's end of its stdin closes, because the death signal is not
// inherited by the tool's own children. Where setpriv is missing (not Linux, util-linux before
// 2.33) children are spawned plainly and may outlive a killed dbstash: childGuard() says so.

import { spawn, spawnSync, type ChildProcessWithoutNullStreams, type SpawnOptions } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import { Socket } from 'node:net';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pooledReader } from '../pipeline/pooled.js';
import { launchTool, toolLauncherWanted } from './launcher.js';

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

/**
 * The database size from which a dump's output goes through that buffer. Below it the buffer
 * costs more than it saves: the tool writes 1 MiB at a time into a 64 KiB pipe and stalls until
 * all of it is read, and stdbuf is one more exec. A 7 MB MariaDB dump read by Node, alternated
 * (14 runs): 170-174 ms without the buffer, 189-191 ms with it.
 */
export const BULK_OUTPUT_MIN_BYTES = 64 << 20;

/** Whether a dump of a database of `sizeBytes` (unknown: yes) should get the larger output buffer. */
export function bulkOutputFor(sizeBytes: number | undefined): boolean {
  return sizeBytes === undefined || !Number.isFinite(sizeBytes) || sizeBytes >= BULK_OUTPUT_MIN_BYTES;
}

let stdbufPath: string | null | undefined;

function findStdbuf(): string | null {
  if (stdbufPath !== undefined) return stdbufPath;
  stdbufPath = process.platform !== 'linux' || process.env.DBSTASH_NO_STDBUF ? null : findOnPath('stdbuf');
  return stdbufPath;
}

function findOnPath(name: string): string | null {
  for (const dir of pathDirs()) {
    try {
      accessSync(path.join(dir, name), fsConstants.X_OK);
      return path.join(dir, name);
    } catch {
      /* try the next */
    }
  }
  return null;
}

/** Another OS user to run a tool as (the scratch servers of drills, when dbstash runs as root). */
export interface RunAs {
  user: string;
  uid: number;
  gid: number;
}

export async function lookupUser(user: string): Promise<RunAs | undefined> {
  const [uid, gid] = await Promise.all([runTool('id', ['-u', user]), runTool('id', ['-g', user])]);
  if (uid.code !== 0 || gid.code !== 0) return undefined;
  return { user, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

type Guard = { setpriv: string | null; reason?: string };

let guard: Guard | undefined;
let probing: Promise<void> | undefined;

/** Where setpriv's --pdeathsig cannot be had, the reason; else setpriv's path, still to be probed. */
function setprivCandidate(): Guard {
  if (process.platform !== 'linux') return { setpriv: null, reason: 'the parent-death signal exists on Linux only' };
  if (process.env.DBSTASH_NO_SETPRIV) return { setpriv: null, reason: 'DBSTASH_NO_SETPRIV is set' };
  const setpriv = findOnPath('setpriv');
  if (!setpriv) return { setpriv: null, reason: 'setpriv (util-linux) is not installed' };
  return { setpriv };
}

// setpriv of util-linux before 2.33 has no --pdeathsig; it would refuse every tool.
const PROBE_ARGS = ['--pdeathsig', 'KILL', '--', 'true'];
const noPdeathsig = (setpriv: string): Guard => ({ setpriv: null, reason: `${setpriv} has no --pdeathsig (util-linux 2.33 or later needed)` });

function findSetpriv(): Guard {
  if (guard) return guard;
  const candidate = setprivCandidate();
  if (!candidate.setpriv) return (guard = candidate);
  const probe = spawnSync(candidate.setpriv, PROBE_ARGS, { stdio: 'ignore' });
  return (guard = probe.status === 0 ? candidate : noPdeathsig(candidate.setpriv));
}

/**
 * Runs setpriv's probe in the background, so that the first tool a command starts does not wait
 * for it (a blocking spawn of ~10 ms otherwise): for the commands that start tools, called as they
 * begin. Whichever of the two finishes first decides; both find the same.
 */
export function probeChildGuard(): void {
  if (guard || probing) return;
  const candidate = setprivCandidate();
  if (!candidate.setpriv) return void (guard = candidate);
  const setpriv = candidate.setpriv;
  probing = new Promise((resolve) => {
    const probe = spawn(setpriv, PROBE_ARGS, { stdio: 'ignore' });
    probe.on('error', () => resolve(void (guard ??= noPdeathsig(setpriv))));
    probe.on('exit', (code) => resolve(void (guard ??= code === 0 ? candidate : noPdeathsig(setpriv))));
  });
}

/**
 * Whether the children dbstash starts here die with it (also on kill -9 of dbstash); when they do
 * not, `reason` says why, for a warning.
 */
export function childGuard(): { active: boolean; reason?: string } {
  const { setpriv, reason } = findSetpriv();
  return setpriv ? { active: true } : { active: false, reason };
}

/** childGuard(), once a probe started by probeChildGuard() has ended. */
export async function settledChildGuard(): Promise<{ active: boolean; reason?: string }> {
  probeChildGuard();
  await probing;
  return childGuard();
}

/**
 * The command that runs `bin args` as a child that dies with dbstash, as `runAs` when given:
 * `setpriv [--reuid --regid --init-groups] --pdeathsig KILL -- bin args`. setpriv sets the death
 * signal after switching users (a switch afterwards would clear it). Without setpriv: the tool
 * itself, or `runuser -u <user> --` for another user. The one place every child is started from.
 */
export function guardedCommand(bin: string, args: string[], opts: { runAs?: RunAs } = {}): [string, string[]] {
  const { setpriv } = findSetpriv();
  if (setpriv) {
    const user = opts.runAs ? [`--reuid=${opts.runAs.uid}`, `--regid=${opts.runAs.gid}`, '--init-groups'] : [];
    return [setpriv, [...user, '--pdeathsig', 'KILL', '--', bin, ...args]];
  }
  if (opts.runAs) return ['runuser', ['-u', opts.runAs.user, '--', bin, ...args]];
  return [bin, args];
}

/** A shell that kills process group $1 once its stdin closes without a line (dbstash is gone). */
const GROUP_WATCH = `trap '' INT TERM HUP; read -r _ || kill -s KILL -- "-$1" 2>/dev/null`;

/**
 * Ties a tool that leads its own process group, workers included, to dbstash's life: a watcher
 * (not tied itself, so that it outlives dbstash) kills the group when dbstash dies; when the tool
 * exits, whatever is left of its group is killed and the watcher is told to stand down.
 */
function tieGroup(child: ChildProcessWithoutNullStreams): void {
  const pgid = child.pid;
  if (pgid === undefined) return;
  const watcher = spawn('/bin/sh', ['-c', GROUP_WATCH, 'dbstash-group-watch', String(pgid)], { stdio: ['pipe', 'ignore', 'ignore'] });
  watcher.on('error', () => {});
  watcher.stdin!.on('error', () => {});
  child.once('exit', () => {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      /* the group is empty */
    }
    watcher.stdin!.end('\n');
  });
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
    /**
     * stdout is read into reused buffers (pipeline/pooled.ts): only for a stream whose stages hand
     * each chunk on whole, or copy what they keep, up to the encoder that releases it.
     */
    pooled?: boolean;
    /** The tool forks worker processes (pg_dump/pg_restore --jobs): they must die with it. */
    workers?: boolean;
    runAs?: RunAs;
    /** Sees each line of stderr as it comes; lines it returns true for are not kept in `stderr`. */
    stderrLine?: (line: string) => boolean;
  } = {},
): RunningTool {
  const stdbuf = opts.bulkOutput ? findStdbuf() : null;
  // setpriv and stdbuf exec the tool in place: the child's pid, signals and exit status are the
  // tool's own.
  const [tool, toolArgs] = stdbuf ? [stdbuf, [`--output=${OUTPUT_BUFFER}`, bin, ...args]] : [bin, args];
  const [file, argv] = guardedCommand(tool, toolArgs, { runAs: opts.runAs });
  const group = !!opts.workers && process.platform !== 'win32';
  const spawnOptions: SpawnOptions = {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    detached: group,
  };
  // A long-running dbstash starts plain tools through its launcher (launcher.ts): no fork of itself.
  const child = toolLauncherWanted() && !group ? launchTool(file, argv, spawnOptions, guardedCommand, !!opts.pooled) : (spawn(file, argv, spawnOptions) as ChildProcessWithoutNullStreams);
  if (group) tieGroup(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  const keep = (d: string) => {
    if (stderr.length < STDERR_LIMIT) stderr += d;
  };
  if (opts.stderrLine) {
    const onLine = opts.stderrLine;
    let partial = '';
    child.stderr.on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (!onLine(line)) keep(`${line}\n`);
    });
    child.stderr.on('end', () => {
      if (partial && !onLine(partial)) keep(partial);
    });
  } else {
    child.stderr.on('data', keep);
  }
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
  const stdout = (opts.pooled && child.stdout instanceof Socket && pooledReader(child.stdout)) || child.stdout;
  return { child, stdout, exit };
}

/** Runs a tool to completion and returns its stdout as text (for --version, --list, …). */
export async function runTool(
  bin: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; signal?: AbortSignal; runAs?: RunAs; workers?: boolean } = {},
): Promise<ToolExit & { stdout: string }> {
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
