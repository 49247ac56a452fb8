// Point-in-time recovery against Debian's pgBackRest, on one archiving PostgreSQL cluster:
//   - WAL archiving: the same amount of WAL written as fast as the server can (an INSERT of
//     random-looking rows), pushed by archive_command with dbstash and with pgBackRest, each
//     synchronous (one process per segment) and asynchronous (dbstash: the daemon's socket;
//     pgBackRest: archive-async with a spool), alternated over the rounds. Per run: segments per
//     second from the first write to the last segment archived, push latency p50/p99 (a wrapper
//     around archive_command times each call), and the most segments waiting in pg_wal (.ready).
//   - Point-in-time restore: one base backup by each tool, then WAL_SEGMENTS segments of WAL
//     archived into both (archive_command pushes to both), then, alternated, `dbstash restore
//     --at latest --pgdata` against `pgbackrest restore` plus the same replay (PostgreSQL started
//     on the restored directory until it has promoted, then stopped), with pgBackRest's default
//     archive-get and with its asynchronous prefetch. Target: dbstash ≤ 1.0× pgBackRest.
// Everything runs as the postgres OS user where the tools need it to (archive_command does).

import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPostgres, PG_BIN_DIR, type PgServer } from '../test/harness/postgres.js';
import { freePort } from '../test/harness/proc.js';
import { tempDir } from '../test/harness/tmp.js';
import type { ExtensionResult } from './extensions.js';
import { measure, median, type CommandSpec } from './measure.js';
import type { Target } from './report.js';
import { pgbackrestConf, withoutStartupVars } from './scenarios.js';

export const PITR_IDS = ['wal_archive', 'pitr_restore'];

export interface PitrContext {
  cliPath: string;
  rounds: number;
  scale: number;
  ambientNodeEnv?: boolean;
  log(message: string): void;
}

/** Segments of WAL each archiving run writes, and the WAL replayed by each restore. */
const ARCHIVE_SEGMENTS = 32;
const RESTORE_SEGMENTS = 64;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function asPostgres(cmd: string, args: string[]): { cmd: string; args: string[] } {
  return { cmd: 'runuser', args: ['-u', 'postgres', '--', cmd, ...args] };
}

function must(what: string, r: ReturnType<typeof spawnSync>): void {
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}): ${String(r.stderr || r.stdout).trim().slice(-2000)}`);
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

interface Bench {
  root: string;
  server: PgServer;
  dbstashConfig: string;
  socket: string;
  /** pgBackRest configs: archive-async off and on (same repository). */
  rest: { sync: string; async: string };
  node: string;
}

async function setUp(ctx: PitrContext): Promise<Bench> {
  const root = process.env.DBSTASH_BENCH_KEEP === '1' ? mkdtempSync(path.join(tmpdir(), 'dbstash-bench-pitr-')) : tempDir('dbstash-bench-pitr');
  chmodSync(path.dirname(root), 0o755);
  const server = await startPostgres({ conf: ['archive_mode = on', "archive_command = '/bin/true'", 'max_wal_senders = 4', 'max_wal_size = 4GB'] });
  const stash = path.join(root, 'stash');
  const socket = path.join(root, 'run', 'wal.sock');
  const dbstashConfig = path.join(root, 'dbstash.yaml');
  writeFileSync(
    dbstashConfig,
    [`stash: ${stash}`, 'daemon:', '  listen: 127.0.0.1:0', `  walSocket: ${socket}`, `  stateFile: ${path.join(root, 'daemon-state.json')}`, 'databases:', '  bench:', `    url: ${server.url()}`, '    physical: true', ''].join('\n'),
    { mode: 0o600 },
  );
  const restConf = (async: boolean) =>
    pgbackrestConf({
      repo: path.join(root, 'repo'),
      logPath: root,
      lockPath: path.join(root, 'lock'),
      server,
      options: [`spool-path=${path.join(root, 'spool')}`, `archive-async=${async ? 'y' : 'n'}`],
    });
  const rest = { sync: path.join(root, 'pgbackrest-sync.conf'), async: path.join(root, 'pgbackrest-async.conf') };
  writeFileSync(rest.sync, restConf(false));
  writeFileSync(rest.async, restConf(true));
  // archive_command's wrapper: times each call into the log given first.
  writeFileSync(path.join(root, 'timed.sh'), '#!/bin/sh\nlog="$1"; shift\nt0=$(date +%s%N)\n"$@"\nrc=$?\necho "$t0 $(date +%s%N) $rc" >> "$log"\nexit $rc\n', { mode: 0o755 });
  const node = process.execPath;
  writeFileSync(
    path.join(root, 'dbstash-and-pgbackrest.sh'),
    `#!/bin/sh\n${q(node)} ${q(ctx.cliPath)} wal push "$1" --database bench --config ${q(dbstashConfig)} --quiet && exec pgbackrest --config=${q(rest.sync)} --stanza=bench archive-push "$1"\n`,
    { mode: 0o755 },
  );
  must('chown', spawnSync('chown', ['-R', 'postgres:', root]));
  const pgbench = asPostgres(path.join(PG_BIN_DIR, 'pgbench'), ['-i', '-q', '-s', String(ctx.scale), server.url()]);
  must('pgbench -i', spawnSync(pgbench.cmd, pgbench.args, { encoding: 'utf8' }));
  const stanza = asPostgres('pgbackrest', [`--config=${rest.sync}`, '--stanza=bench', 'stanza-create']);
  must('pgbackrest stanza-create', spawnSync(stanza.cmd, stanza.args, { encoding: 'utf8' }));
  await server.query('CREATE TABLE walbench (id bigint, a text, b text, c text, d text)');
  return { root, server, dbstashConfig, socket, rest, node };
}

async function setArchiveCommand(b: Bench, command: string): Promise<void> {
  await b.server.query(`ALTER SYSTEM SET archive_command = '${command.replace(/'/g, "''")}'`);
  await b.server.query('SELECT pg_reload_conf()');
  await sleep(300);
}

function readyCount(b: Bench): number {
  return readdirSync(path.join(b.server.dataDir, 'pg_wal', 'archive_status')).filter((f) => f.endsWith('.ready')).length;
}

/** Writes about `segments` segments of WAL: rows of 4 × 32 random hex characters (compress ~2:1). */
async function writeWal(b: Bench, segments: number): Promise<void> {
  const rows = Math.round((segments * 16 * 2 ** 20) / 200);
  await b.server.query(`INSERT INTO walbench SELECT g, md5(random()::text), md5(random()::text), md5(random()::text), md5(random()::text) FROM generate_series(1, ${rows}) g`);
}

/** Switches to a new segment and waits until the archiver has archived everything before it. */
async function drain(b: Bench, timeoutMs = 600_000): Promise<void> {
  await b.server.query(`SELECT pg_logical_emit_message(false, 'dbstash-bench', 'drain')`);
  const seg = (await b.server.query('SELECT pg_walfile_name(pg_switch_wal()) AS s')).rows[0].s as string;
  const until = Date.now() + timeoutMs;
  for (;;) {
    const a = (await b.server.query('SELECT last_archived_wal, failed_count FROM pg_stat_archiver')).rows[0];
    if ((a.last_archived_wal ?? '') >= seg && readyCount(b) === 0) return;
    if (Date.now() > until) throw new Error(`WAL archiving did not reach ${seg} within ${timeoutMs / 1000}s (archived up to ${a.last_archived_wal}, ${a.failed_count} failures)`);
    await sleep(50);
  }
}

interface ArchiveMode {
  id: string;
  label: string;
  command(b: Bench, log: string): string;
  start?(b: Bench): Promise<() => Promise<void>>;
}

const ARCHIVE_MODES: ArchiveMode[] = [
  {
    id: 'dbstash_sync',
    label: 'dbstash wal push (a process per segment)',
    command: (b, log) => `${b.root}/timed.sh ${log} ${b.node} ${CLI()} wal push %p --database bench --config ${b.dbstashConfig} --quiet`,
  },
  {
    id: 'pgbackrest_sync',
    label: 'pgbackrest archive-push',
    command: (b, log) => `${b.root}/timed.sh ${log} pgbackrest --config=${b.rest.sync} --stanza=bench archive-push %p`,
  },
  {
    id: 'dbstash_async',
    label: 'dbstash wal push --socket (the daemon pushes, 2 ahead)',
    command: (b, log) => `${b.root}/timed.sh ${log} ${b.node} ${CLI()} wal push %p --database bench --config ${b.dbstashConfig} --socket ${b.socket} --quiet`,
    async start(b) {
      const { spawn } = await import('node:child_process');
      const d = asPostgres(b.node, [CLI(), 'daemon', '--config', b.dbstashConfig, '--quiet']);
      const child = spawn(d.cmd, d.args, { stdio: ['ignore', 'ignore', 'pipe'], env: withoutStartupVars(process.env, false) });
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err += c));
      for (let i = 0; i < 100 && !existsSync(b.socket); i++) await sleep(100);
      if (!existsSync(b.socket)) throw new Error(`the daemon did not open ${b.socket}: ${err}`);
      return async () => {
        spawnSync('pkill', ['-TERM', '-f', `daemon --config ${b.dbstashConfig}`]);
        await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('close', resolve)));
        await fsp.rm(b.socket, { force: true });
      };
    },
  },
  {
    id: 'pgbackrest_async',
    label: 'pgbackrest archive-push, archive-async=y (process-max 2)',
    command: (b, log) => `${b.root}/timed.sh ${log} pgbackrest --config=${b.rest.async} --stanza=bench archive-push %p`,
  },
];

let cliPath = '';
const CLI = () => cliPath;

interface ArchiveRun {
  mode: string;
  segments: number;
  seconds: number;
  segmentsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  mostWaiting: number;
}

async function archiveRun(b: Bench, mode: ArchiveMode, round: number): Promise<ArchiveRun> {
  const log = path.join(b.root, `lat-${mode.id}-${round}.log`);
  writeFileSync(log, '');
  spawnSync('chown', ['postgres:', log]);
  await b.server.query('TRUNCATE walbench');
  await b.server.query('CHECKPOINT');
  const stop = await mode.start?.(b);
  try {
    await setArchiveCommand(b, mode.command(b, log));
    await drain(b);
    writeFileSync(log, '');
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        most = Math.max(most, readyCount(b));
        await sleep(100);
      }
    })();
    const t0 = performance.now();
    await writeWal(b, ARCHIVE_SEGMENTS);
    await drain(b);
    const seconds = (performance.now() - t0) / 1000;
    sampling = false;
    await sampler;
    const calls = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ').map(Number));
    const ok = calls.filter((c) => c[2] === 0);
    const latencies = ok.map((c) => (c[1] - c[0]) / 1e6);
    return { mode: mode.id, segments: ok.length, seconds, segmentsPerSecond: ok.length / seconds, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), mostWaiting: most };
  } finally {
    await setArchiveCommand(b, '/bin/true');
    await stop?.();
  }
}

interface RestoreSide {
  id: string;
  label: string;
  spec(b: Bench, dir: string, port: number): CommandSpec;
}

function restSide(id: string, label: string, conf: (b: Bench) => string): RestoreSide {
  return {
    id,
    label,
    spec(b, dir, port) {
      const pgctl = path.join(PG_BIN_DIR, 'pg_ctl');
      const psql = path.join(PG_BIN_DIR, 'psql');
      const opts = `-p ${port} -c archive_mode=off -c listen_addresses='' -c unix_socket_directories=${dir}`;
      const script = [
        `runuser -u postgres -- pgbackrest --config=${q(conf(b))} --stanza=bench --pg1-path=${q(dir)} restore`,
        `runuser -u postgres -- ${q(pgctl)} -D ${q(dir)} -o ${q(opts)} -l ${q(dir + '.log')} -w -t 3600 start >/dev/null`,
        `until [ "$(runuser -u postgres -- ${q(psql)} -X -h ${q(dir)} -p ${port} -U postgres -Atc 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ]; do sleep 0.02; done`,
        `runuser -u postgres -- ${q(pgctl)} -D ${q(dir)} -m fast -w stop >/dev/null`,
      ].join(' && ');
      return { cmd: 'bash', args: ['-o', 'pipefail', '-c', script] };
    },
  };
}

const RESTORE_SIDES: RestoreSide[] = [
  {
    id: 'dbstash',
    label: 'dbstash restore --at latest --pgdata DIR --no-archive',
    spec: (b, dir) => ({ cmd: b.node, args: [CLI(), 'restore', '--database', 'bench', '--config', b.dbstashConfig, '--at', 'latest', '--pgdata', dir, '--no-archive', '--quiet'], env: withoutStartupVars(process.env, false) }),
  },
  restSide('pgbackrest', 'pgbackrest restore + PostgreSQL replaying until promoted, then stopped', (b) => b.rest.sync),
  restSide('pgbackrest_async', 'the same with archive-async=y (archive-get prefetches)', (b) => b.rest.async),
];

export async function runPitrBench(ctx: PitrContext, only?: (id: string) => boolean): Promise<ExtensionResult> {
  cliPath = ctx.cliPath;
  if (spawnSync('pgbackrest', ['version']).status !== 0) {
    return { id: 'pitr', text: 'point-in-time recovery: skipped, pgbackrest is not installed (apt-get install pgbackrest)', data: {}, targets: [] };
  }
  const version = spawnSync('pgbackrest', ['version'], { encoding: 'utf8' }).stdout.trim();
  ctx.log(`PITR: setting up an archiving cluster (pgbench scale ${ctx.scale}) and a pgBackRest stanza (${version})`);
  const b = await setUp(ctx);
  const lines: string[] = [`point-in-time recovery against ${version}, alternated over ${ctx.rounds} rounds (median, min–max)`];
  const targets: Target[] = [];
  const data: Record<string, unknown> = { version };
  const range = (v: number[], unit: string, digits = 1) => `${median(v).toFixed(digits)} ${unit} (${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)})`;
  try {
    if (!only || only('wal_archive')) {
      const runs: ArchiveRun[] = [];
      for (let round = 1; round <= ctx.rounds; round++) {
        for (const mode of ARCHIVE_MODES) {
          const r = await archiveRun(b, mode, round);
          ctx.log(`PITR archiving round ${round}: ${mode.id} ${r.segments} segments in ${r.seconds.toFixed(1)} s, p50 ${r.p50Ms.toFixed(0)} ms, p99 ${r.p99Ms.toFixed(0)} ms, at most ${r.mostWaiting} waiting`);
          runs.push(r);
        }
      }
      data.archive = runs;
      lines.push(`  WAL archiving: about ${median(runs.map((r) => r.segments))} segments per run, written as fast as the server can (the run ends when the last is archived), archived by archive_command`);
      const of = (id: string) => runs.filter((r) => r.mode === id);
      for (const mode of ARCHIVE_MODES) {
        const rs = of(mode.id);
        lines.push(
          `    ${mode.label}: ${range(rs.map((r) => r.segmentsPerSecond), 'segments/s')}, push p50 ${range(rs.map((r) => r.p50Ms), 'ms', 0)}, p99 ${range(rs.map((r) => r.p99Ms), 'ms', 0)}, at most ${Math.max(...rs.map((r) => r.mostWaiting))} segments waiting`,
        );
      }
      for (const [mine, theirs] of [
        ['dbstash_sync', 'pgbackrest_sync'],
        ['dbstash_async', 'pgbackrest_async'],
      ]) {
        const ratio = median(of(mine).map((r) => r.segmentsPerSecond)) / median(of(theirs).map((r) => r.segmentsPerSecond));
        lines.push(`    ${mine} / ${theirs}, segments per second: ${ratio.toFixed(2)}×`);
      }
    }
    if (!only || only('pitr_restore')) {
      ctx.log(`PITR restore: base backups by both tools, then ${RESTORE_SEGMENTS} segments of WAL archived into both`);
      await setArchiveCommand(b, `${b.root}/dbstash-and-pgbackrest.sh %p`);
      await b.server.query('TRUNCATE walbench');
      const backup = asPostgres(b.node, [CLI(), 'backup', 'bench', '--config', b.dbstashConfig, '--quiet']);
      must('dbstash backup --physical', spawnSync(backup.cmd, backup.args, { encoding: 'utf8' }));
      const full = asPostgres('pgbackrest', [`--config=${b.rest.sync}`, '--stanza=bench', 'backup', '--type=full']);
      must('pgbackrest backup', spawnSync(full.cmd, full.args, { encoding: 'utf8' }));
      const from = (await b.server.query('SELECT pg_current_wal_lsn() AS l')).rows[0].l as string;
      await writeWal(b, RESTORE_SEGMENTS / 2);
      await writeWal(b, RESTORE_SEGMENTS / 2);
      await drain(b);
      const walBytes = Number((await b.server.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${from}') AS n`)).rows[0].n);
      const times = new Map<string, number[]>(RESTORE_SIDES.map((s) => [s.id, []]));
      const rss = new Map<string, number>();
      for (let round = 1; round <= ctx.rounds; round++) {
        for (const side of RESTORE_SIDES) {
          const dir = path.join(b.root, `restored-${side.id}`);
          await fsp.rm(dir, { recursive: true, force: true });
          await fsp.rm(dir + '.log', { force: true });
          await fsp.mkdir(dir, { mode: 0o700 });
          spawnSync('chown', ['postgres:', dir]);
          const m = await measure(side.spec(b, dir, await freePort()));
          times.get(side.id)!.push(m.wallMs);
          rss.set(side.id, Math.max(rss.get(side.id) ?? 0, m.treePeakRss.bytes));
          ctx.log(`PITR restore round ${round}: ${side.id} ${(m.wallMs / 1000).toFixed(1)} s`);
          await fsp.rm(dir, { recursive: true, force: true });
        }
      }
      data.restore = { walBytes, times: Object.fromEntries(times), peakRss: Object.fromEntries(rss) };
      lines.push(`  point-in-time restore to the end of the archive: base backup + ${(walBytes / 2 ** 30).toFixed(2)} GiB of WAL written after both base backups`);
      for (const side of RESTORE_SIDES) lines.push(`    ${side.label}: ${range(times.get(side.id)!.map((t) => t / 1000), 's')}`);
      lines.push(`    dbstash restore peak RSS (largest process): ${((rss.get('dbstash') ?? 0) / 2 ** 20).toFixed(0)} MB`);
      const mine = median(times.get('dbstash')!);
      for (const other of ['pgbackrest', 'pgbackrest_async']) {
        const ratio = mine / median(times.get(other)!);
        const name = `point-in-time restore, wall time vs ${other === 'pgbackrest' ? 'pgbackrest restore + replay' : 'the same with archive-async=y'}`;
        targets.push({ name, value: `${ratio.toFixed(2)}×`, limit: '≤ 1.0×', pass: ratio <= 1.0 });
        lines.push(`    ${name}: ${ratio.toFixed(2)}×`);
      }
    }
  } finally {
    await b.server.stop();
    // DBSTASH_BENCH_KEEP=1 keeps the stash and the pgBackRest repository, to look into a run by hand.
    if (process.env.DBSTASH_BENCH_KEEP === '1') ctx.log(`PITR: kept ${b.root}`);
    else await fsp.rm(b.root, { recursive: true, force: true });
  }
  return { id: 'pitr', text: lines.join('\n'), data, targets };
}
