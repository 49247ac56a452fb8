// --profile: one extra, untimed `dbstash backup` under `node --cpu-prof`, to say where the dbstash
// process spends its time. The V8 profile samples the main thread by the wall clock, so it tells
// what the event loop was doing — idle (waiting for pg_dump's output or the disk), handing data
// to libzstd (which blocks while libzstd's worker is behind), hashing, collecting garbage, loading
// modules. Beside it, the CPU each thread burnt: the main thread against the others (libzstd's
// worker, libuv's pool, V8's helpers), from /proc.

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { measure, median } from './measure.js';
import { dbstashSpec, type BenchContext } from './scenarios.js';

export interface Profile {
  /** Medians of backups of an empty database: what every backup costs before its first row. */
  fixedCost: { wallMs: number; cpuMs: number; runs: number };
  wallMs: number;
  cpuMs: number;
  mainThreadCpuMs: number;
  otherThreadsCpuMs: number;
  /** Main-thread wall-clock time by category, in milliseconds, largest first. */
  mainThread: { category: string; ms: number }[];
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const CATEGORIES: { name: string; match: (leaf: CpuProfileNode, stack: CpuProfileNode[]) => boolean }[] = [
  { name: 'idle: waiting for pg_dump output, the server or the disk', match: (n) => n.callFrame.functionName === '(idle)' },
  { name: 'garbage collection', match: (n) => n.callFrame.functionName === '(garbage collector)' },
  { name: 'startup: loading and compiling modules', match: (_, s) => s.some((n) => /internal\/modules\/|wrapSafe|compileSourceTextModule/.test(n.callFrame.url + n.callFrame.functionName)) },
  { name: 'zstd: handing data to libzstd (blocks while its worker is behind)', match: (_, s) => s.some((n) => n.callFrame.url.includes('zstd-napi')) },
  { name: 'SHA-256 of the stored bytes', match: (n) => n.callFrame.url.includes('crypto/hash') },
  { name: 'pg client: probe, snapshot, row counts', match: (_, s) => s.some((n) => /node_modules\/(pg|pg-protocol)\//.test(n.callFrame.url)) },
  { name: 'stream plumbing (pipe, transforms, writes)', match: (_, s) => s.some((n) => /internal\/streams|internal\/fs\/streams|node:stream/.test(n.callFrame.url)) },
  { name: 'V8 and native code outside JS', match: (n) => n.callFrame.functionName === '(program)' },
];

export function categorize(profile: CpuProfile): { category: string; ms: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const leaf = byId.get(id)!;
    const stack: CpuProfileNode[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) stack.push(byId.get(cur)!);
    const category = CATEGORIES.find((c) => c.match(leaf, stack))?.name ?? 'other JS (dbstash, node internals)';
    totals.set(category, (totals.get(category) ?? 0) + profile.timeDeltas[i] / 1000);
  });
  return [...totals].map(([category, ms]) => ({ category, ms })).sort((a, b) => b.ms - a.ms);
}

const EMPTY_DATABASE = 'bench_empty';
const FIXED_COST_RUNS = 5;

async function fixedCost(ctx: BenchContext): Promise<Profile['fixedCost']> {
  const exists = await ctx.server.query(`SELECT 1 FROM pg_database WHERE datname = '${EMPTY_DATABASE}'`);
  if (exists.rowCount === 0) await ctx.server.createDatabase(EMPTY_DATABASE);
  const emptyCtx = { ...ctx, db: { ...ctx.db, name: EMPTY_DATABASE } };
  const runs = [];
  for (let i = 1; i <= FIXED_COST_RUNS; i++) runs.push(await measure(dbstashSpec(emptyCtx, i, [], {})));
  return { wallMs: median(runs.map((r) => r.wallMs)), cpuMs: median(runs.map((r) => r.cpuMs)), runs: runs.length };
}

export async function profileBackup(ctx: BenchContext): Promise<Profile> {
  const fixed = await fixedCost(ctx);
  const dir = path.join(ctx.workDir, 'cpu-profile');
  const spec = dbstashSpec(ctx, 0, [], {});
  const m = await measure({ ...spec, args: [`--cpu-prof`, `--cpu-prof-dir=${dir}`, ...spec.args], threads: true });
  const [file] = await fsp.readdir(dir);
  const profile = JSON.parse(await fsp.readFile(path.join(dir, file), 'utf8')) as CpuProfile;
  return {
    fixedCost: fixed,
    wallMs: m.wallMs,
    cpuMs: m.cpuMs,
    mainThreadCpuMs: m.rootThreads?.mainMs ?? 0,
    otherThreadsCpuMs: m.rootThreads?.otherMs ?? 0,
    mainThread: categorize(profile),
  };
}

export function renderProfile(p: Profile): string {
  const lines = [
    `fixed cost per backup (dbstash backup of an empty database, median of ${p.fixedCost.runs}): wall ${(p.fixedCost.wallMs / 1000).toFixed(2)} s, CPU ${(p.fixedCost.cpuMs / 1000).toFixed(2)} s`,
    `profile of one extra dbstash backup (node --cpu-prof): wall ${(p.wallMs / 1000).toFixed(2)} s; CPU of the tree ${(p.cpuMs / 1000).toFixed(2)} s, of which node's main thread ${(p.mainThreadCpuMs / 1000).toFixed(2)} s, node's other threads (libzstd worker, libuv pool, V8 helpers) ${(p.otherThreadsCpuMs / 1000).toFixed(2)} s, the rest pg_dump`,
    'main thread, by wall-clock samples:',
  ];
  const total = p.mainThread.reduce((a, c) => a + c.ms, 0);
  for (const c of p.mainThread) lines.push(`  ${((c.ms / total) * 100).toFixed(1).padStart(5)}%  ${(c.ms / 1000).toFixed(2).padStart(6)} s  ${c.category}`);
  return lines.join('\n');
}
