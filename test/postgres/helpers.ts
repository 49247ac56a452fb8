// Shared checks for the integration tests: what a stash holds, how a failed command must look,
// and the processes a running dbstash has started.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { CliResult } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { parseManifest } from '../../src/catalog/manifest-schema.js';

export const PG_BIN = '/usr/lib/postgresql/15/bin';

/** A test file's work directory, and fresh stash paths in it that do not exist yet. */
export function workDir(prefix: string): { work: string; freshStash: () => string } {
  const work = tempDir(prefix);
  let n = 0;
  return { work, freshStash: () => path.join(work, `stash-${++n}`) };
}

/** Every file below dir (hidden temporaries included), relative and sorted; [] when dir is absent. */
export function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export function readManifestFile(stash: string, id: string): Manifest {
  const file = filesUnder(stash).find((f) => path.basename(f) === `${id}.manifest.json`);
  assert.ok(file, `no manifest for ${id} in ${stash}: ${filesUnder(stash).join(', ')}`);
  return parseManifest(readFileSync(path.join(stash, file), 'utf8'), file);
}

/** The only backup in a stash: its manifest and the absolute path of its main artifact. */
export function onlyBackup(stash: string): { manifest: Manifest; artifact: string; dir: string } {
  const manifests = filesUnder(stash).filter((f) => f.endsWith('.manifest.json'));
  assert.equal(manifests.length, 1, `expected one backup in ${stash}, found: ${filesUnder(stash).join(', ')}`);
  const manifest = parseManifest(readFileSync(path.join(stash, manifests[0]), 'utf8'), manifests[0]);
  const dir = path.join(stash, path.dirname(manifests[0]));
  const main = manifest.artifacts.find((a) => a.role === 'main')!;
  return { manifest, artifact: path.join(dir, main.file), dir };
}

/**
 * A failed command as users must see it: the documented exit code, exactly one `error:` line
 * matching `message`, a `hint:` line, and no stack trace.
 */
export function assertCleanFailure(res: CliResult, code: number, message: RegExp): void {
  const detail = `exit ${res.code}\n--- stderr ---\n${res.stderr}\n--- stdout ---\n${res.stdout}`;
  assert.equal(res.code, code, detail);
  const errors = res.stderr.split('\n').filter((l) => l.startsWith('error: '));
  assert.equal(errors.length, 1, detail);
  assert.match(errors[0], message, detail);
  assert.match(res.stderr, /^hint: \S/m, detail);
  assert.doesNotMatch(res.stderr, /^\s+at /m, `stack trace printed:\n${detail}`);
  assert.doesNotMatch(res.stderr + res.stdout, /internal error/, detail);
}

interface ProcInfo {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
}

function procStat(pid: number): ProcInfo | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const m = /^(\d+) \((.*)\) (\S) (\d+)/.exec(text);
    return m ? { pid: Number(m[1]), comm: m[2], state: m[3], ppid: Number(m[4]) } : undefined;
  } catch {
    return undefined;
  }
}

/** Live (non-zombie) children of `ppid`, found through /proc/<pid>/stat. */
export function childrenOf(ppid: number, comm?: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = procStat(Number(name));
    if (st && st.ppid === ppid && st.state !== 'Z' && (!comm || st.comm === comm)) out.push(st.pid);
  }
  return out;
}

/** True while the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const st = procStat(pid);
  return !!st && st.state !== 'Z';
}

export function cmdlineOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Runs a shell pipeline with pipefail; resolves with its output, rejects with it on failure. */
export function sh(script: string, env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve({ stdout, stderr }) : reject(new Error(`${script}\nexit ${code}\n${stderr}`))));
  });
}

export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}
