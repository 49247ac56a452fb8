// File-system helpers shared by the local storage and the commands that write files.

import { promises as fsp, statSync } from 'node:fs';
import path from 'node:path';

/**
 * Creates `dir` and its missing parents, one level at a time. Node's own recursive mkdir loops
 * for ever where a parent exists but refuses children with ENOENT (/proc, /sys): here every level
 * is tried once, so a directory that cannot be made is an error, never a spin.
 */
export async function makeDirs(dir: string, mode = 0o777): Promise<string[]> {
  const missing: string[] = [];
  let current = path.resolve(dir);
  for (;;) {
    try {
      const st = await fsp.stat(current);
      if (!st.isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${current}'`), { code: 'ENOTDIR', path: current });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const parent = path.dirname(current);
    if (parent === current) break;
    missing.push(current);
    current = parent;
  }
  const made: string[] = [];
  for (const d of missing.reverse()) {
    try {
      await fsp.mkdir(d, { mode });
      // The umask may have taken bits away; the mode asked for is the mode wanted.
      if (mode !== 0o777) await fsp.chmod(d, mode);
      made.push(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return made;
}

/** "0640"-style text of a mode's permission bits. */
export function modeText(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

/**
 * Why a file that holds a secret (a private key, a passphrase) must not be used: readable or
 * writable by anyone but its owner, as ssh refuses such keys. undefined when it is private.
 */
export function secretFileProblem(file: string): string | undefined {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return undefined; // the read that follows reports a missing file
  }
  if ((mode & 0o077) === 0) return undefined;
  return `${file} can be read or written by other users (mode ${modeText(mode)}); a secret must be private: chmod 600 ${file}`;
}
