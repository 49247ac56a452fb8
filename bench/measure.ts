// Runs one command and measures it: wall time, CPU time of its whole process tree, and peak RSS.
//
// CPU: the kernel adds a child's user+sys time, including that of every descendant it waited
// for, to its parent's cutime/cstime when the parent reaps it. The difference of our own
// /proc/self/stat cutime+cstime across one run is therefore the CPU of everything the command
// started (pg_dump under node, gzip and zstd under bash), like getrusage(RUSAGE_CHILDREN), with
// the kernel's clock-tick resolution (10 ms). Only one command runs at a time, so nothing else is
// reaped in between; the PostgreSQL server is not our child, so its work is never counted.
//
// Server CPU: the PostgreSQL backends a command connects to are children of the postmaster, so
// the postmaster's cutime+cstime grows by their CPU when they exit and are reaped. Its difference
// across a run is the server-side work (COPY, row counts) of that command (plus any autovacuum
// worker that ended meanwhile, which the rounds' medians smooth out).
//
// Peak RSS: VmHWM (the kernel's high-water mark) of every process in the command's tree, polled
// while it runs. The root process's figure is the one the targets use (for `dbstash backup` that
// is the node process itself); the largest process of the tree is reported beside it.

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { atExit } from '../test/harness/tmp.js';

export interface CommandSpec {
  cmd: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Keep stdout (small outputs only, such as `--json` results); otherwise it is discarded. */
  captureStdout?: boolean;
  /** The postmaster's pid, to measure the server-side CPU of the run. */
  serverPid?: number;
  /** Sample the root process's CPU per thread (main thread vs the others). */
  threads?: boolean;
}

export interface Measurement {
  wallMs: number;
  userMs: number;
  sysMs: number;
  cpuMs: number;
  /** CPU of the PostgreSQL backends that served the command (when serverPid was given). */
  serverCpuMs?: number;
  /** Peak RSS of the command's own process (bytes). */
  rootPeakRss: number;
  /** The largest peak RSS among all processes of the tree, and which process it was. */
  treePeakRss: { bytes: number; name: string };
  /** CPU of the root's main thread and of its other threads, as last sampled (up to 50 ms early). */
  rootThreads?: { mainMs: number; otherMs: number };
  stdout: string;
}

const TICK_MS = 10;
const POLL_MS = 50;
const STDERR_LIMIT = 16 * 1024;
const SERVER_REAP_MS = 100;

/** cutime and cstime of a process (default: this one), in milliseconds. */
function reapedChildrenCpu(pid: number | 'self' = 'self'): { user: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ", fields[0] is the state (field 3); cutime and cstime are fields 16 and 17.
  return { user: Number(fields[13]) * TICK_MS, sys: Number(fields[14]) * TICK_MS };
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function peakRssOf(pid: number): { bytes: number; name: string } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
    const name = /^Name:\s+(.*)$/m.exec(status);
    return hwm ? { bytes: Number(hwm[1]) * 1024, name: name?.[1] ?? '?' } : undefined;
  } catch {
    return undefined;
  }
}

/** user+sys of each thread of `pid`, in milliseconds, by thread id. */
function threadCpu(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), (Number(fields[11]) + Number(fields[12])) * TICK_MS);
    }
  } catch {
    /* the process is gone; keep the last sample */
  }
  return out;
}

/** Follows a process tree through /proc, reading each new pid's parent only once. */
class TreeWatcher {
  private readonly members = new Set<number>();
  private readonly seen = new Set<number>();
  readonly peaks = new Map<number, { bytes: number; name: string }>();
  /** The root's CPU per thread at the last poll (only when asked for). */
  readonly threads = new Map<number, number>();

  constructor(
    private readonly root: number,
    private readonly watchThreads: boolean,
  ) {
    this.members.add(root);
    this.seen.add(root);
  }

  poll(): void {
    for (const entry of readdirSync('/proc')) {
      const pid = Number(entry);
      if (!Number.isInteger(pid) || this.seen.has(pid)) continue;
      this.seen.add(pid);
      const parent = parentOf(pid);
      if (parent !== undefined && this.members.has(parent)) this.members.add(pid);
    }
    for (const pid of this.members) {
      const peak = peakRssOf(pid);
      const known = this.peaks.get(pid);
      if (peak && (!known || peak.bytes > known.bytes)) this.peaks.set(pid, peak);
    }
    if (this.watchThreads) for (const [tid, ms] of threadCpu(this.root)) this.threads.set(tid, ms);
  }
}

function splitThreads(threads: Map<number, number>, mainTid: number): { mainMs: number; otherMs: number } {
  let otherMs = 0;
  for (const [tid, ms] of threads) if (tid !== mainTid) otherMs += ms;
  return { mainMs: threads.get(mainTid) ?? 0, otherMs };
}

/** Runs `spec` to completion; rejects with its stderr when it exits non-zero. */
export function measure(spec: CommandSpec): Promise<Measurement> {
  return new Promise((resolve, reject) => {
    const cpuBefore = reapedChildrenCpu();
    const serverBefore = spec.serverPid ? reapedChildrenCpu(spec.serverPid) : undefined;
    const started = process.hrtime.bigint();
    const child = spawn(spec.cmd, spec.args, {
      env: spec.env ?? process.env,
      cwd: spec.cwd,
      stdio: ['ignore', spec.captureStdout ? 'pipe' : 'ignore', 'pipe'],
      // Its own process group, so an interrupted benchmark kills the whole pipeline before the
      // harness removes the directories it writes to.
      detached: true,
    });
    const unregister = atExit(() => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* the group is already gone */
      }
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += d;
    });
    const watcher = child.pid !== undefined ? new TreeWatcher(child.pid, !!spec.threads) : undefined;
    watcher?.poll();
    const timer = setInterval(() => watcher?.poll(), POLL_MS);
    child.once('error', (err) => {
      unregister();
      clearInterval(timer);
      reject(new Error(`cannot run ${spec.cmd}: ${err.message}`));
    });
    child.once('close', async (code, signal) => {
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      unregister();
      clearInterval(timer);
      const cpuAfter = reapedChildrenCpu();
      let serverCpuMs: number | undefined;
      if (spec.serverPid && serverBefore) {
        // Give the postmaster a moment to reap the backends of connections that just closed.
        await new Promise((r) => setTimeout(r, SERVER_REAP_MS));
        const after = reapedChildrenCpu(spec.serverPid);
        serverCpuMs = after.user + after.sys - serverBefore.user - serverBefore.sys;
      }
      if (code !== 0) {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        reject(new Error(`${[spec.cmd, ...spec.args].join(' ')} ${how}\n${stderr.trimEnd()}`));
        return;
      }
      const peaks = [...(watcher?.peaks.values() ?? [])];
      const userMs = cpuAfter.user - cpuBefore.user;
      const sysMs = cpuAfter.sys - cpuBefore.sys;
      resolve({
        wallMs,
        userMs,
        sysMs,
        cpuMs: userMs + sysMs,
        serverCpuMs,
        rootPeakRss: (child.pid !== undefined && watcher?.peaks.get(child.pid)?.bytes) || 0,
        treePeakRss: peaks.reduce((a, b) => (b.bytes > a.bytes ? b : a), { bytes: 0, name: '?' }),
        rootThreads: spec.threads && watcher ? splitThreads(watcher.threads, child.pid!) : undefined,
        stdout,
      });
    });
  });
}

/** The median of a non-empty list. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
