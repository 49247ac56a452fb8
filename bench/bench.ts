// `npm run bench`: starts a throwaway PostgreSQL, builds a benchmark database per scale, runs the
// scenarios alternated (A B C D E, A B C D E, …) and reports medians, ratios against the
// baselines and PASS/FAIL per target. It reports; it is not a test and never fails the build on a
// missed target. See docs/performance.md for what it measures and the figures.

import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startPostgres } from '../test/harness/postgres.js';
import { startS3, type S3Server } from '../test/harness/s3.js';
import { tempDir } from '../test/harness/tmp.js';
import { buildDatabase } from './database.js';
import { measure, type Measurement } from './measure.js';
import { compare, flatnessTarget, renderScale, renderTargets, scaleTargets, summarize, type RunRecord, type ScaleResult, type Target } from './report.js';
import { comparisons, NODE_STARTUP_VARS, scenarios, withoutStartupVars, type BenchContext, type Scenario } from './scenarios.js';
import { runExtensions, type ExtensionResult } from './extensions.js';
import { profileBackup, type Profile } from './profile.js';
import { PAIR_IDS, runPairs } from './pairs.js';
import { PITR_IDS, runPitrBench } from './pitr.js';
import { DASHBOARD_IDS, runDashboardBench } from './dashboard.js';
import { FLEET_IDS, runFleetBench } from './fleet.js';
import { STORAGE_IDS, runStorageBench } from './storage.js';
import { TABLESPACE_IDS, runTablespaceBench } from './tablespaces.js';

const USAGE = `usage: npm run bench -- [--scale N | --scales N,M] [--rounds N] [--only id,id] [--profile] [--json] [--save FILE] [--ambient-node-env]

  --scale N       pgbench scale of the benchmark database (default 10: ~190 MB)
  --scales N,M    several databases, one after the other (peak RSS flatness: --scales 10,100)
  --rounds N      rounds of alternated commands (default 3)
  --only ids      run only these scenarios (ids: ${scenarios().map((s) => s.id).join(', ')};
                  restores, MariaDB and fixed costs: ${PAIR_IDS.join(', ')};
                  point-in-time recovery against pgBackRest: ${PITR_IDS.join(', ')};
                  the dashboard on a big stash: ${DASHBOARD_IDS.join(', ')};
                  the fleet's queue: ${FLEET_IDS.join(', ')};
                  1 GiB uploads to SFTP and Azurite against sftp and rclone: ${STORAGE_IDS.join(', ')};
                  a base backup whose data is in a tablespace, against pg_basebackup: ${TABLESPACE_IDS.join(', ')})
  --profile       also profile one extra dbstash backup per scale (node --cpu-prof): where the time goes
  --json          print the full result as JSON on stdout (progress stays on stderr)
  --save FILE     also write the full JSON result to FILE
  --ambient-node-env
                  run dbstash with ${NODE_STARTUP_VARS.join(', ')} when set here (dropped by default;
                  the report says what they cost at start-up)`;

const CLI_PATH = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function positiveInts(value: string, flag: string): number[] {
  const list = value.split(',').map((v) => Number(v.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`${flag} takes positive whole numbers, got "${value}"`);
  return list;
}

function toolVersion(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0];
  } catch {
    return 'unknown';
  }
}

/** Median wall times of `node -e 0` in each environment, alternated, over `runs` rounds. */
async function nodeStartMs(envs: NodeJS.ProcessEnv[], runs = 7): Promise<number[]> {
  const times: number[][] = envs.map(() => []);
  for (let i = 0; i < runs; i++) {
    for (const [j, env] of envs.entries()) times[j].push((await measure({ cmd: process.execPath, args: ['-e', '0'], env })).wallMs);
  }
  return times.map((t) => t.sort((a, b) => a - b)[Math.floor(runs / 2)]);
}

/**
 * Which of NODE_STARTUP_VARS this machine sets, what they cost a node start (measured here), and
 * whether the dbstash runs keep them; undefined when none is set.
 */
async function nodeStartupVars(keep: boolean): Promise<{ vars: string[]; kept: boolean; withMs: number; withoutMs: number; note: string } | undefined> {
  const vars = NODE_STARTUP_VARS.filter((v) => process.env[v] !== undefined);
  if (vars.length === 0) return undefined;
  const [withMs, withoutMs] = await nodeStartMs([process.env, withoutStartupVars(process.env)]);
  const cost = `\`node -e 0\` takes ${withMs.toFixed(0)} ms with ${vars.join(', ')} (set on this machine), ${withoutMs.toFixed(0)} ms without`;
  const note = keep ? `${cost}; dbstash runs with it (--ambient-node-env)` : `${cost}; dbstash runs without it, as on a default install (--ambient-node-env keeps it)`;
  return { vars, kept: keep, withMs, withoutMs, note };
}

async function emptyDir(dir: string): Promise<void> {
  for (const entry of await fsp.readdir(dir)) await fsp.rm(path.join(dir, entry), { recursive: true, force: true });
}

async function benchScale(scale: number, rounds: number, selected: Scenario[], wantProfile: boolean, ctxBase: Omit<BenchContext, 'db' | 'workDir'>): Promise<ScaleResult> {
  const log = ctxBase.log;
  const db = await buildDatabase(ctxBase.server, scale, log);
  const ctx: BenchContext = { ...ctxBase, db, workDir: tempDir(`dbstash-bench-s${scale}`) };
  log(`${db.name}: ${(db.sizeBytes / 1024 / 1024).toFixed(0)} MB, built in ${db.buildSeconds.toFixed(0)} s`);

  const active: Scenario[] = [];
  const skipped = new Map<string, string>();
  for (const s of selected) {
    const reason = await s.setup?.(ctx);
    await emptyDir(ctx.workDir);
    if (reason) {
      skipped.set(s.id, reason);
      log(`skipping ${s.id}: ${reason}`);
    } else {
      active.push(s);
    }
  }
  // Untimed warm-up: a dump warms the page cache, a backup the row counts' first scans; the
  // first round then measures the same steady state as the others.
  for (const id of ['pg_dump_floor', 'dbstash']) {
    const warm = scenarios().find((s) => s.id === id)!;
    await measure((await warm.prepare(ctx, 0)).spec);
    await emptyDir(ctx.workDir);
  }

  const runs: RunRecord[] = [];
  const failures: ScaleResult['failures'] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const s of active) {
      const prepared = await s.prepare(ctx, round);
      const loadAverage = os.loadavg()[0];
      let m: Measurement;
      let size: number | undefined;
      try {
        m = await measure({ ...prepared.spec, serverPid: ctx.server.pid });
        size = await prepared.outputSize(m);
      } catch (err) {
        // One failed run (a busy machine, a flaky fake S3) costs that run, not the whole benchmark.
        const reason = (err as Error).message.split('\n').filter(Boolean).slice(-1)[0] ?? 'failed';
        failures.push({ scenario: s.id, round, reason });
        log(`scale ${scale} round ${round}/${rounds} ${s.id}: FAILED: ${reason}`);
        continue;
      } finally {
        await emptyDir(ctx.workDir);
      }
      runs.push({ scenario: s.id, round, wallMs: m.wallMs, userMs: m.userMs, sysMs: m.sysMs, cpuMs: m.cpuMs, serverCpuMs: m.serverCpuMs ?? 0, rootPeakRss: m.rootPeakRss, treePeakRss: m.treePeakRss, size, loadAverage });
      log(`scale ${scale} round ${round}/${rounds} ${s.id}: wall ${(m.wallMs / 1000).toFixed(2)} s, CPU ${(m.cpuMs / 1000).toFixed(2)} s, server CPU ${((m.serverCpuMs ?? 0) / 1000).toFixed(2)} s, RSS ${(m.rootPeakRss / 1024 / 1024).toFixed(1)} MB (load ${loadAverage.toFixed(1)})`);
    }
  }
  let profile: Profile | undefined;
  if (wantProfile) {
    log(`scale ${scale}: profiling one more dbstash backup`);
    profile = await profileBackup(ctx);
    await emptyDir(ctx.workDir);
  }
  await ctx.server.query(`DROP DATABASE ${db.name}`);

  const summaries = selected.map((s) => summarize(s.id, s.label, runs.filter((r) => r.scenario === s.id), skipped.get(s.id)));
  const compared = comparisons()
    .map((c) => compare(c, summaries))
    .filter((c): c is NonNullable<typeof c> => !!c);
  return { database: db, rounds, scenarios: summaries, comparisons: compared, targets: scaleTargets(compared, summaries), profile, failures };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scale: { type: 'string' },
      scales: { type: 'string' },
      rounds: { type: 'string', default: '3' },
      only: { type: 'string' },
      json: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      save: { type: 'string' },
      'ambient-node-env': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const scales = values.scales ? positiveInts(values.scales, '--scales') : positiveInts(values.scale ?? '10', '--scale');
  const [rounds] = positiveInts(values.rounds!, '--rounds');
  const all = scenarios();
  const only = values.only?.split(',').map((s) => s.trim());
  const unknown = only?.filter((id) => !all.some((s) => s.id === id) && !PAIR_IDS.includes(id) && !PITR_IDS.includes(id) && !DASHBOARD_IDS.includes(id) && !FLEET_IDS.includes(id) && !STORAGE_IDS.includes(id) && !TABLESPACE_IDS.includes(id)) ?? [];
  if (unknown.length) throw new Error(`--only: unknown scenario ${unknown.join(', ')}; valid: ${[...all.map((s) => s.id), ...PAIR_IDS, ...PITR_IDS, ...DASHBOARD_IDS, ...FLEET_IDS, ...STORAGE_IDS, ...TABLESPACE_IDS].join(', ')}`);
  const selected = only ? all.filter((s) => only.includes(s.id)) : all;
  const pairsWanted = !only || only.some((id) => PAIR_IDS.includes(id));
  const pitrWanted = !only || only.some((id) => PITR_IDS.includes(id));
  const dashboardWanted = !only || only.some((id) => DASHBOARD_IDS.includes(id));
  const fleetWanted = !only || only.some((id) => FLEET_IDS.includes(id));
  const storageWanted = !only || only.some((id) => STORAGE_IDS.includes(id));
  const tablespaceWanted = !only || only.some((id) => TABLESPACE_IDS.includes(id));
  const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);

  const startedAt = new Date();
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    loadAverageAtStart: os.loadavg(),
    node: process.version,
    pgDump: toolVersion('/usr/lib/postgresql/15/bin/pg_dump', ['--version']),
    zstd: toolVersion('zstd', ['--version']),
    gzip: toolVersion('gzip', ['--version']),
  };
  log(`${machine.cpus} CPUs (${machine.cpuModel}), load average ${machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(' ')}`);
  const nodeEnv = await nodeStartupVars(values['ambient-node-env']!);
  if (nodeEnv) log(nodeEnv.note);

  const server = await startPostgres();
  let s3: S3Server | undefined;
  const results: ScaleResult[] = [];
  let extensions: ExtensionResult[] = [];
  try {
    const ctxBase = { server, cliPath: CLI_PATH, log, ambientNodeEnv: values['ambient-node-env'], s3: async () => (s3 ??= await startS3({ buckets: ['bench'] })) };
    if (selected.length > 0) for (const scale of scales) results.push(await benchScale(scale, rounds, selected, values.profile!, ctxBase));
    if (pairsWanted) {
      // Pairs of short commands: more rounds than the database scenarios, whose runs take seconds.
      extensions.push(await runPairs({ pg: server, cliPath: CLI_PATH, ambientNodeEnv: values['ambient-node-env'], rounds: Math.max(rounds, 7), log }, only ? (id) => only.includes(id) : undefined));
    }
    if (pitrWanted) {
      // Its own archiving cluster, the bench database's scale.
      extensions.push(await runPitrBench({ cliPath: CLI_PATH, rounds, scale: scales[0], ambientNodeEnv: values['ambient-node-env'], log }, only ? (id) => only.includes(id) : undefined));
    }
    if (dashboardWanted) extensions.push(await runDashboardBench({ cliPath: CLI_PATH, log }));
    if (fleetWanted) extensions.push(await runFleetBench({ cliPath: CLI_PATH, log }, only ? (id) => only.includes(id) : undefined));
    if (storageWanted) extensions.push(await runStorageBench({ cliPath: CLI_PATH, rounds, ambientNodeEnv: values['ambient-node-env'], log }, only ? (id) => only.includes(id) : undefined));
    // Its own cluster per scale, its data in a tablespace.
    if (tablespaceWanted) for (const scale of scales) extensions.push(await runTablespaceBench({ cliPath: CLI_PATH, rounds, scale, ambientNodeEnv: values['ambient-node-env'], log }));
    if (!only) extensions.push(...(await runExtensions(log)));
  } finally {
    await s3?.stop();
    await server.stop();
  }

  const targets: Target[] = results.flatMap((r) => r.targets.map((t) => ({ ...t, name: `scale ${r.database.scale}: ${t.name}` })));
  const flat = flatnessTarget(results);
  if (flat) targets.push(flat);
  targets.push(...extensions.flatMap((e) => e.targets));
  const finishedAt = new Date();
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();

  const json = JSON.stringify({ command, startedAt, finishedAt, machine: { ...machine, loadAverageAtEnd: os.loadavg(), nodeStartupVars: nodeEnv }, scales: results, extensions, targets }, null, 2) + '\n';
  if (values.save) await fsp.writeFile(values.save, json);
  if (values.json) {
    process.stdout.write(json);
    return;
  }
  const text = [
    `dbstash benchmark: ${command}`,
    `machine: ${machine.cpus} CPUs (${machine.cpuModel}), ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB; load average ${machine.loadAverageAtStart[0].toFixed(2)} at start, ${os.loadavg()[0].toFixed(2)} at end`,
    `tools: node ${machine.node}, ${machine.pgDump}, ${machine.zstd}, ${machine.gzip}`,
    ...(nodeEnv ? [`environment: ${nodeEnv.note}`] : []),
    `took ${((finishedAt.getTime() - startedAt.getTime()) / 1000).toFixed(0)} s`,
    '',
    ...results.map((r) => renderScale(r) + '\n'),
    ...extensions.map((e) => e.text + '\n'),
    flat ? '' : 'peak RSS flatness: not checked (one scale; run with --scales 10,100)\n',
    renderTargets(targets),
  ];
  process.stdout.write(text.join('\n') + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`[bench] failed: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
