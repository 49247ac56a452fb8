// The fleet's queue on this machine: a throwaway PostgreSQL as the control database, 4 real
// `dbstash worker` processes, small SQLite databases as the jobs.
//   fleet_overhead: jobs one after another (each enqueued once the one before has ended, so a
//     worker is always free): enqueue → start (the job's createdOn to the worker's start of it)
//     and finish → recorded (the worker's end of it to the queue's completedOn); median and p99.
//     Target: median under 50 ms each.
//   fleet_day: a day of 1,000 small databases whose schedules all fire at once (the worst hour):
//     throughput, and the longest wait of any job behind its schedule (createdOn → start).

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startPostgres } from '../test/harness/postgres.js';
import { tempDir } from '../test/harness/tmp.js';
import { parseConfig } from '../src/config/parse.js';
import { enqueue, findJob, openQueue, queueFor, type FleetJobOutput } from '../src/fleet/queue.js';
import type { ExtensionResult } from './extensions.js';
import { median } from './measure.js';
import type { Target } from './report.js';

export const FLEET_IDS = ['fleet_overhead', 'fleet_day'];

const WORKERS = 4;
const SERIAL_JOBS = 100;
const DAY_DATABASES = 1000;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export async function runFleetBench(ctx: { cliPath: string; log(m: string): void }, wanted: (id: string) => boolean = () => true): Promise<ExtensionResult> {
  const pg = await startPostgres();
  const workers: ChildProcess[] = [];
  try {
    await pg.createDatabase('control');
    const root = tempDir('dbstash-bench-fleet');
    const lines = [`stash: ${path.join(root, 'stash')}`, 'encryption: none', `queue: ${pg.url('control')}`, 'fleet: { retries: 0 }', 'databases:'];
    for (let i = 0; i < DAY_DATABASES; i++) {
      const file = path.join(root, `db${i}.sqlite`);
      const db = new Database(file);
      db.exec(`CREATE TABLE t (i INTEGER); INSERT INTO t VALUES (${i})`);
      db.close();
      lines.push(`  db${i}: { url: "sqlite://${file}" }`);
    }
    const yaml = lines.join('\n') + '\n';
    const configFile = path.join(root, 'dbstash.yaml');
    writeFileSync(configFile, yaml, { mode: 0o600 });
    const config = parseConfig(yaml, configFile);
    const boss = await openQueue(pg.url('control'), config);
    ctx.log(`fleet: starting ${WORKERS} workers`);
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        const child = spawn(process.execPath, [ctx.cliPath, 'worker', '--config', configFile, '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
        workers.push(child);
        let err = '';
        child.stderr!.on('data', (d: Buffer) => (err += d));
        // --quiet prints nothing: the worker is ready once it shows up as working the queue.
        for (let i = 0; i < 200; i++) {
          const rows = (await pg.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'dbstash %:${child.pid}'`, 'control')).rows as { n: number }[];
          if (rows[0].n > 0) return;
          if (child.exitCode !== null) throw new Error(`a worker exited: ${err}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(`a worker did not start: ${err}`);
      }),
    );
    await new Promise((r) => setTimeout(r, 1000));
    const queue = queueFor('backup', undefined);
    const texts: string[] = [];
    const targets: Target[] = [];
    const data: Record<string, unknown> = { workers: WORKERS };
    const waitDone = async (id: string) => {
      for (;;) {
        const job = await findJob(boss, queue, id);
        if (job && (job.state === 'completed' || job.state === 'failed')) return job;
        await new Promise((r) => setTimeout(r, 5));
      }
    };

    if (wanted('fleet_overhead')) {
      ctx.log(`fleet: ${SERIAL_JOBS} jobs one after another`);
      const startMs: number[] = [];
      const recordMs: number[] = [];
      for (let i = 0; i < SERIAL_JOBS; i++) {
        const { id } = await enqueue(boss, config, 'backup', { database: `db${i % 50}`, by: 'bench' });
        const job = await waitDone(id);
        if (job.state !== 'completed') throw new Error(`job ${id} ${job.state}: ${JSON.stringify(job.output)}`);
        const out = job.output as unknown as FleetJobOutput;
        startMs.push(Date.parse(out.startedAt) - job.createdOn.getTime());
        recordMs.push(job.completedOn!.getTime() - Date.parse(out.finishedAt));
      }
      const show = (v: number[]) => `median ${median(v).toFixed(0)} ms, p99 ${percentile(v, 99).toFixed(0)} ms (min ${Math.min(...v).toFixed(0)}, max ${Math.max(...v).toFixed(0)})`;
      texts.push(`queue overhead per job, ${WORKERS} workers, ${SERIAL_JOBS} jobs one after another:`, `  enqueue → start: ${show(startMs)}`, `  finish → recorded: ${show(recordMs)}`);
      data.overhead = { startMs, recordMs };
      targets.push(
        { name: `fleet queue: enqueue → start, median (${WORKERS} workers)`, value: `${median(startMs).toFixed(0)} ms`, limit: '< 50 ms', pass: median(startMs) < 50 },
        { name: `fleet queue: finish → recorded, median (${WORKERS} workers)`, value: `${median(recordMs).toFixed(0)} ms`, limit: '< 50 ms', pass: median(recordMs) < 50 },
      );
    }

    if (wanted('fleet_day')) {
      ctx.log(`fleet: ${DAY_DATABASES} databases whose schedules fire at once`);
      const t0 = Date.now();
      const ids: string[] = [];
      for (let i = 0; i < DAY_DATABASES; i++) ids.push((await enqueue(boss, config, 'backup', { database: `db${i}`, by: 'bench' })).id);
      const enqueuedMs = Date.now() - t0;
      let last = 0;
      const waits: number[] = [];
      const durations: number[] = [];
      let failed = 0;
      for (const id of ids) {
        const job = await waitDone(id);
        if (job.state !== 'completed') failed++;
        const out = job.output as unknown as FleetJobOutput;
        if (out?.startedAt) waits.push(Date.parse(out.startedAt) - job.createdOn.getTime());
        if (out?.durationMs !== undefined) durations.push(out.durationMs);
        last = Math.max(last, job.completedOn?.getTime() ?? 0);
      }
      const totalS = (last - t0) / 1000;
      texts.push(
        `a burst of ${DAY_DATABASES} small databases (SQLite) on ${WORKERS} workers: all done in ${totalS.toFixed(1)} s (enqueued in ${(enqueuedMs / 1000).toFixed(1)} s), ${(DAY_DATABASES / totalS).toFixed(1)} jobs/s, ${failed} failed;`,
        `  wait behind the schedule: median ${(median(waits) / 1000).toFixed(1)} s, longest ${(Math.max(...waits) / 1000).toFixed(1)} s`,
        `  a job's own run (the backup): median ${median(durations).toFixed(0)} ms; the ${WORKERS} workers were busy ${((100 * durations.reduce((a, b) => a + b, 0)) / (WORKERS * totalS * 1000)).toFixed(0)}% of the time (the rest is the queue and the wait for a free core)`,
      );
      data.day = { databases: DAY_DATABASES, totalS, enqueuedMs, failed, longestWaitMs: Math.max(...waits), medianWaitMs: median(waits), medianJobMs: median(durations), busyShare: durations.reduce((a, b) => a + b, 0) / (WORKERS * totalS * 1000) };
    }
    await boss.stop({ graceful: false, close: true });
    return { id: 'fleet', text: texts.join('\n'), data, targets };
  } finally {
    for (const w of workers) w.kill('SIGTERM');
    await Promise.all(workers.map((w) => (w.exitCode === null ? new Promise((r) => w.once('exit', r)) : undefined)));
    await pg.stop();
  }
}
