// Temporary files and directories of one run in the temp dir: SQLite snapshot copies, --jobs
// directory dumps, restore materialisations, option files, the data directories of drill servers.
// Each name carries the host and the process that made it (pid and the process's start time in
// base 36, so that a pid reused by another process, as in containers where every run is pid 1, is
// not taken for the owner). The host name is cut to 24 characters to keep paths short (a drill
// server's socket path must fit in 107 bytes):
//
//   .dbstash-<kind>_<pid>_<start>_<host>_<random>[.<ext>]     e.g. .dbstash-pgdir_4711_2jx1c_db1_0f3a9c2e
//
// A run that is killed (kill -9, a power cut) cannot remove what it made; findLeftovers() lists
// what dead runs of this host left in a temp dir, removeLeftovers() removes it. What a live run
// (of this or another host) made is never touched, and neither is a leftover some process still
// has open (a drill server of a run killed before its servers died with it).

import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const NAME_RE = /^\.dbstash-([a-z]+)_(\d+)_([0-9a-z]+)_([A-Za-z0-9.-]+)_([0-9a-f]{8})(\.[a-z]+)?(-wal|-shm|-journal)?$/;

/** The process that made a scratch name: host, pid, and its start time (0 where unknown). */
export interface ScratchOwner {
  host: string;
  pid: number;
  start: number;
}

/** Something a dead run left in the temp dir. */
export interface Leftover {
  path: string;
  /** What it was (pgdir, sqlite, pgrestore, pgdrill, …). */
  kind: string;
  pid: number;
  host: string;
  /** Bytes it holds (a directory: every file in it). */
  size: number;
  directory: boolean;
}

export interface LeftoverRemoval {
  removed: Leftover[];
  /** Not removed, with the reason: still open in a live process, or the removal failed. */
  kept: (Leftover & { reason: string })[];
}

function hostPart(host: string): string {
  return host.replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 24) || 'localhost';
}

/** A process's start time in clock ticks since boot (Linux), or 0 when it cannot be read. */
function startTime(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the fields after the command name (which may hold spaces) start at field 3.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) || 0;
  } catch {
    return 0;
  }
}

let self: ScratchOwner | undefined;

function us(): ScratchOwner {
  self ??= { host: hostPart(os.hostname()), pid: process.pid, start: startTime(process.pid) };
  return self;
}

/** A fresh name for a scratch file or directory of this process; `ext` like ".sqlite". */
export function scratchName(kind: string, ext = ''): string {
  if (!/^[a-z]+$/.test(kind)) throw new Error(`scratch kind must be lower-case letters, got "${kind}"`);
  const { host, pid, start } = us();
  return `.dbstash-${kind}_${pid}_${start.toString(36)}_${host}_${randomBytes(4).toString('hex')}${ext}`;
}

/** The owner and kind a scratch name records, or undefined for any other name. */
export function parseScratchName(name: string): (ScratchOwner & { kind: string }) | undefined {
  const m = NAME_RE.exec(name);
  return m ? { kind: m[1], pid: Number(m[2]), start: parseInt(m[3], 36), host: m[4] } : undefined;
}

/** Creates a private (0700) scratch directory in `parent` and returns its path. */
export async function makeScratchDir(parent: string, kind: string): Promise<string> {
  const dir = path.join(parent, scratchName(kind));
  await mkdir(dir, { mode: 0o700 });
  return dir;
}

export function makeScratchDirSync(parent: string, kind: string): string {
  const dir = path.join(parent, scratchName(kind));
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** A path for a scratch file in `parent`; the caller creates it exclusively with mode 0600. */
export function scratchFile(parent: string, kind: string, ext = ''): string {
  return path.join(parent, scratchName(kind, ext));
}

/** Whether a process of this machine still runs (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the run that made a scratch name may still be running (always true for another host). */
export function ownerAlive(owner: ScratchOwner): boolean {
  const me = us();
  if (owner.host !== me.host) return true;
  if (owner.pid === me.pid && owner.start === me.start) return true;
  if (!processAlive(owner.pid)) return false;
  // The pid is taken: by the owner, or by a process that got the pid later.
  const start = startTime(owner.pid);
  return start === 0 || owner.start === 0 || start === owner.start;
}

async function sizeOf(file: string): Promise<number> {
  const st = await lstat(file).catch(() => undefined);
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const name of await readdir(file).catch(() => [] as string[])) total += await sizeOf(path.join(file, name));
  return total;
}

/** What dead dbstash runs of this host left in `tempDir` (nothing when it does not exist). */
export async function findLeftovers(tempDir: string): Promise<Leftover[]> {
  const names = await readdir(tempDir).catch(() => [] as string[]);
  const found: Leftover[] = [];
  for (const name of names.sort()) {
    const owner = parseScratchName(name);
    if (!owner || ownerAlive(owner)) continue;
    const file = path.join(tempDir, name);
    const st = await lstat(file).catch(() => undefined);
    if (!st) continue;
    found.push({ path: file, kind: owner.kind, pid: owner.pid, host: owner.host, size: await sizeOf(file), directory: st.isDirectory() });
  }
  return found;
}

/**
 * Processes (other than this one) that have a file below one of `paths` open or work in such a
 * directory, from /proc on Linux: path → "pid N (comm)". Processes of other users are seen only
 * when we run as root.
 */
async function openBelow(paths: string[]): Promise<Map<string, string>> {
  const users = new Map<string, string>();
  if (paths.length === 0 || process.platform !== 'linux') return users;
  const holderOf = (link: string) => paths.find((p) => link === p || link.startsWith(p + path.sep));
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const links = [await readlink(`/proc/${pid}/cwd`).catch(() => '')];
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) links.push(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
    for (const link of links) {
      const held = link && holderOf(link);
      if (held && !users.has(held)) {
        const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
        users.set(held, `pid ${pid} (${comm})`);
      }
    }
  }
  return users;
}

/**
 * Removes what dead dbstash runs of this host left in `tempDir`. A leftover that a live process
 * still has open is kept (with the reason), and so is one whose removal fails; neither throws.
 */
export async function removeLeftovers(tempDir: string): Promise<LeftoverRemoval> {
  const leftovers = await findLeftovers(tempDir);
  const result: LeftoverRemoval = { removed: [], kept: [] };
  const inUse = await openBelow(leftovers.map((l) => l.path));
  for (const leftover of leftovers) {
    const user = inUse.get(leftover.path);
    if (user) {
      result.kept.push({ ...leftover, reason: `still open in ${user}` });
      continue;
    }
    try {
      await rm(leftover.path, { recursive: true, force: true });
      result.removed.push(leftover);
    } catch (err) {
      result.kept.push({ ...leftover, reason: (err as Error).message });
    }
  }
  return result;
}
