// File-system helpers shared by the local storage and the commands that write files.

import { promises as fsp } from 'node:fs';
import path from 'node:path';

/**
 * Creates `dir` and its missing parents, one level at a time. Node's own recursive mkdir loops
 * for ever where a parent exists but refuses children with ENOENT (/proc, /sys): here every level
 * is tried once, so a directory that cannot be made is an error, never a spin.
 */
export async function makeDirs(dir: string, mode = 0o777): Promise<void> {
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
  for (const d of missing.reverse()) {
    try {
      await fsp.mkdir(d, { mode });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
