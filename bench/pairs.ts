// Restores, MariaDB and fixed costs, each measured as a pair: the dbstash command and the plain
// tools doing the same job, alternated over the rounds (dbstash, plain, dbstash, plain, …).
//   - fixed cost: backup and restore of an EMPTY database, PostgreSQL and MariaDB; the target is
//     the difference of the medians (dbstash − plain), ≤ 0.15 s;
//   - MariaDB: backup and restore of a small database (16 tables with triggers, views and
//     routines, ~50k rows) and of a larger one, against `mariadb-dump … | zstd -3` and
//     `zstd -dc | mariadb`; target ratio ≤ 1.15.
//   - in a running dbstash: the same backups and restores run inside the bench's process, as the
//     daemon, a fleet worker and the dashboard run them (Node's start and its libraries paid once
//     per process, not per job), against the same plain tools; and the restore of the scenarios'
//     scale-10 database the same way, ≤ 1.1× (r).
// Every restore goes into a database that does not exist (dropped, untimed, before each run):
// both sides create it. Both sides restore the same artifact (the dbstash backup's own file).

import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PgServer } from '../test/harness/postgres.js';
import { MARIADBD, startMariadb, type MariaServer } from '../test/harness/mariadb.js';
import { tempDir } from '../test/harness/tmp.js';
import { buildDatabase, pgEnv } from './database.js';
import type { ExtensionResult } from './extensions.js';
import { measure, median, type CommandSpec } from './measure.js';
import type { Target } from './report.js';
import { withoutStartupVars } from './scenarios.js';

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface Side {
  /** Untimed work before each run (dropping the restore target). */
  before?: () => Promise<void>;
  spec: () => CommandSpec;
}

/** A dbstash side run inside the bench's own process, as the daemon, the dashboard and the fleet's workers run a job. */
interface InProcessSide {
  before?: () => Promise<void>;
  run: () => Promise<void>;
}

interface Pair {
  id: string;
  /** Rounds for this pair when fewer than the others' (long runs). */
  rounds?: number;
  label: string;
  dbstash: Side | InProcessSide;
  plain: Side & { label: string };
  /** 'difference': dbstash − plain ≤ max seconds; 'ratio': dbstash / plain ≤ max. */
  target: { kind: 'difference' | 'ratio'; max: number };
}

interface PairResult {
  id: string;
  label: string;
  plainLabel: string;
  dbstashMs: number[];
  plainMs: number[];
  dbstashRss: number;
  inProcess: boolean;
  target: Target;
}

export interface PairContext {
  pg: PgServer;
  cliPath: string;
  ambientNodeEnv?: boolean;
  rounds: number;
  log(message: string): void;
}

/** The single artifact of backup `id` in a local stash (main dump, not globals). */
async function artifactOf(stash: string, id: string): Promise<string> {
  for (const dir of await fsp.readdir(stash)) {
    const files = await fsp.readdir(path.join(stash, dir)).catch(() => [] as string[]);
    const main = files.find((f) => f.startsWith(`${id}.`) && /\.(dump|sql)(\.zst)?$/.test(f));
    if (main) return path.join(stash, dir, main);
  }
  throw new Error(`no artifact of ${id} in ${stash}`);
}

function dbstash(ctx: PairContext, args: string[], env: NodeJS.ProcessEnv, cwd: string): CommandSpec {
  return { cmd: process.execPath, args: [ctx.cliPath, ...args], env: withoutStartupVars(env, ctx.ambientNodeEnv), cwd, captureStdout: true };
}

function shell(script: string, env: NodeJS.ProcessEnv, cwd: string): CommandSpec {
  return { cmd: 'bash', args: ['-o', 'pipefail', '-c', script], env, cwd };
}

/** Backs up `db` once with dbstash (untimed); the restore pairs restore this backup. */
async function sourceBackup(ctx: PairContext, env: NodeJS.ProcessEnv, work: string): Promise<{ stash: string; id: string; artifact: string }> {
  const stash = path.join(work, 'source');
  const m = await measure(dbstash(ctx, ['backup', '--output-dir', stash, '--env', 'dev', '--json'], env, work));
  const { id } = JSON.parse(m.stdout) as { id: string };
  return { stash, id, artifact: await artifactOf(stash, id) };
}

interface InProcessJobs {
  backup: () => Promise<void>;
  restore: () => Promise<void>;
  /** The database `restore` creates; it must not exist before each run. */
  restoreTarget: string;
}

/**
 * The backup and the restore of a pair run inside the bench's own process, the way a long-running
 * dbstash runs them: the daemon's (and a fleet worker's) backup job, `planBackup` then
 * `runNotifiedBackup`, and the dashboard's restore, `restoreBackup` of src/app, with every check
 * of the command line. Node's start and the loading of the libraries are paid once per process
 * there, not once per job; what is left over the plain tools is dbstash's own work. Each backup
 * goes to a folder of its own, as the command-line side's does (two backups of one series within
 * one second would otherwise wait for the next second, for an id of their own).
 */
async function inProcess(
  ctx: PairContext,
  work: string,
  name: string,
  url: (db: string) => string,
  source: { stash: string; id: string },
): Promise<InProcessJobs> {
  const [{ Output }, { loadConfig }, { planBackup }, { runNotifiedBackup }, { createNotifier }, { restoreBackup }, { useToolLauncher }] = await Promise.all([
    import('../src/cli/output.js'),
    import('../src/config/load.js'),
    import('../src/cli/backup.js'),
    import('../src/notify/backup.js'),
    import('../src/notify/notifier.js'),
    import('../src/app/actions.js'),
    import('../src/engines/launcher.js'),
  ]);
  // As the daemon, a fleet worker and the dashboard do: tools start from the launcher process.
  useToolLauncher();
  // Passwords in a config file (0600), as for the command line's MariaDB pairs.
  const file = path.join(work, `${name}.in-process.dbstash.yaml`);
  const restoreTarget = `${name}_p`;
  await fsp.writeFile(
    file,
    `storages:\n  source:\n    url: ${source.stash}\ndatabases:\n  ${name}:\n    url: ${url(name)}\n    storages: [source]\n  ${restoreTarget}:\n    url: ${url(restoreTarget)}\n`,
    { mode: 0o600 },
  );
  const loaded = await loadConfig(file);
  const out = new Output({ quiet: true });
  const signal = new AbortController().signal;
  const jobCtx = { out, loaded, envName: 'dev', signal };
  const notifier = createNotifier(loaded.config.notifications, out);
  const events = { info: () => {}, warn: ctx.log };
  let run = 0;
  return {
    backup: async () => {
      const plan = await planBackup(name, { outputDir: path.join(work, `in-process-${name}-${++run}`) }, jobCtx);
      await runNotifiedBackup(plan, events, signal, notifier);
    },
    restore: async () => void (await restoreBackup(loaded.config, name, source.id, restoreTarget, { dryRun: false, typed: restoreTarget, signal, events })),
    restoreTarget,
  };
}

async function postgresPairs(ctx: PairContext, work: string, wanted: (id: string) => boolean): Promise<Pair[]> {
  const pg = ctx.pg;
  const db = 'bench_empty';
  await pg.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await pg.createDatabase(db);
  const env = { ...pgEnv(pg, db), DATABASE_URL: `postgres://${pg.user}@${pg.host}:${pg.port}/${db}` };
  const source = await sourceBackup(ctx, env, work);
  const bin = (t: string) => shellQuote(path.join(pg.binDir, t));
  const drop = (name: string) => async () => void (await pg.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  let run = 0;
  const plain = {
    backup: { label: 'pg_dump -Fc -f file', spec: () => shell(`${bin('pg_dump')} -Fc -f ${shellQuote(path.join(work, `plain-${++run}.dump`))}`, env, work) },
    restore: {
      label: 'createdb + zstd -dc | pg_restore -d',
      before: drop('bench_empty_r2'),
      spec: () => shell(`${bin('createdb')} bench_empty_r2 && zstd -dc -q ${shellQuote(source.artifact)} | ${bin('pg_restore')} --exit-on-error -d bench_empty_r2`, env, work),
    },
  };
  const fixed: Pair['target'] = { kind: 'difference', max: 0.15 };
  const url = (name: string) => `postgres://${pg.user}:${encodeURIComponent(pg.password)}@${pg.host}:${pg.port}/${name}`;
  return [
    {
      id: 'pg_empty_backup',
      label: 'PostgreSQL, empty database: dbstash backup (fixed cost)',
      dbstash: { spec: () => dbstash(ctx, ['backup', '--output-dir', path.join(work, `stash-${++run}`), '--env', 'dev', '--json'], env, work) },
      plain: plain.backup,
      target: fixed,
    },
    {
      id: 'pg_empty_restore',
      label: 'PostgreSQL, empty database: dbstash restore --to <new> (fixed cost)',
      dbstash: {
        before: drop('bench_empty_r1'),
        spec: () => dbstash(ctx, ['restore', source.id, '--output-dir', source.stash, '--to', `postgres://${pg.user}@${pg.host}:${pg.port}/bench_empty_r1`, '--yes', '--json'], env, work),
      },
      plain: plain.restore,
      target: fixed,
    },
    ...(wanted('pg_empty_in_process') ? inProcessPairs(await inProcess(ctx, work, db, url, source), 'pg_empty', 'PostgreSQL, empty database', plain, drop, fixed) : []),
  ];
}

/**
 * The restore of the bench's PostgreSQL database at `scale` (the scenarios' database, built under
 * a name of its own) in a running dbstash, against `createdb` + `zstd -dc | pg_restore` of the
 * same artifact: the restore target of the scenarios without Node's start.
 */
async function pgScalePairs(ctx: PairContext, work: string, scale: number): Promise<Pair[]> {
  const pg = ctx.pg;
  const name = `bench_pairs_s${scale}`;
  await pg.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  const db = await buildDatabase(pg, scale, ctx.log, name);
  const env = { ...pgEnv(pg, name), DATABASE_URL: `postgres://${pg.user}@${pg.host}:${pg.port}/${name}` };
  const dir = path.join(work, name);
  await fsp.mkdir(dir, { recursive: true });
  const source = await sourceBackup(ctx, env, dir);
  const drop = (db: string) => async () => void (await pg.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`));
  const bin = (t: string) => shellQuote(path.join(pg.binDir, t));
  const url = (db: string) => `postgres://${pg.user}:${encodeURIComponent(pg.password)}@${pg.host}:${pg.port}/${db}`;
  const jobs = await inProcess(ctx, dir, name, url, source);
  return [
    {
      id: `pg_s${scale}_in_process_restore`,
      rounds: 5,
      label: `PostgreSQL, pgbench scale ${scale} (${(db.sizeBytes / 2 ** 20).toFixed(0)} MB): restore in a running dbstash (dashboard)`,
      dbstash: { before: drop(jobs.restoreTarget), run: jobs.restore },
      plain: {
        label: '(r) createdb + zstd -dc | pg_restore -d',
        before: drop(`${name}_r2`),
        spec: () => shell(`${bin('createdb')} ${name}_r2 && zstd -dc -q ${shellQuote(source.artifact)} | ${bin('pg_restore')} --exit-on-error -d ${name}_r2`, env, dir),
      },
      target: { kind: 'ratio', max: 1.1 },
    },
  ];
}

/** The in-process pairs `<prefix>_in_process_backup` and `_restore` (see inProcess): the same plain sides as the command line's pairs. */
function inProcessPairs(
  jobs: InProcessJobs,
  prefix: string,
  what: string,
  plain: { backup: Pair['plain']; restore: Pair['plain'] },
  drop: (name: string) => () => Promise<void>,
  target: Pair['target'],
): Pair[] {
  const fixed = target.kind === 'difference' ? ' (fixed cost)' : '';
  return [
    { id: `${prefix}_in_process_backup`, label: `${what}: backup job in a running dbstash (daemon, fleet worker)${fixed}`, dbstash: { run: jobs.backup }, plain: plain.backup, target },
    { id: `${prefix}_in_process_restore`, label: `${what}: restore in a running dbstash (dashboard)${fixed}`, dbstash: { before: drop(jobs.restoreTarget), run: jobs.restore }, plain: plain.restore, target },
  ];
}

/** 16 tables (with foreign keys, a trigger, views and routines), ~50k rows in all. */
function smallMysqlSql(scale: number): string {
  const tables: string[] = [];
  for (let i = 1; i <= 16; i++) {
    const rows = Math.round((i <= 4 ? 10_000 : 800) * scale);
    tables.push(
      `CREATE TABLE t${i} (id INT PRIMARY KEY, ref INT, label VARCHAR(80), amount DECIMAL(12,2), body TEXT, at DATETIME, KEY (ref)) ENGINE=InnoDB;`,
      `INSERT INTO t${i} SELECT seq, seq % 97, CONCAT('label ', seq), seq * 1.25, REPEAT(MD5(seq), 1 + seq % 4), '2026-01-01' + INTERVAL seq MINUTE FROM seq_1_to_${rows};`,
    );
  }
  return [
    ...tables,
    'CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t1_id INT, at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB;',
    'CREATE TRIGGER t1_ai AFTER INSERT ON t1 FOR EACH ROW INSERT INTO audit (t1_id) VALUES (NEW.id);',
    'CREATE VIEW v_big AS SELECT id, amount FROM t1 WHERE amount > 100;',
    'CREATE VIEW v_join AS SELECT a.id, b.label FROM t1 a JOIN t2 b ON b.id = a.id;',
    'CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;',
    'CREATE PROCEDURE count_t1() SELECT COUNT(*) FROM t1;',
  ].join('\n');
}

async function mysqlPairs(ctx: PairContext, my: MariaServer, work: string, db: string, scale: number, target: Pair['target'], wanted: (id: string) => boolean, rounds?: number): Promise<Pair[]> {
  await my.query(`DROP DATABASE IF EXISTS ${db}`);
  if (scale > 0) {
    await my.createDatabase(db);
    await my.query(smallMysqlSql(scale), db);
  } else {
    await my.createDatabase(db);
  }
  // The password goes in a config file (0600), as in a real set-up: none in argv.
  const config = path.join(work, `${db}.dbstash.yaml`);
  await fsp.writeFile(config, `databases:\n  ${db}_r1:\n    url: mysql://${my.user}:${my.password}@${my.host}:${my.port}/${db}_r1\n`, { mode: 0o600 });
  const env = { ...process.env, DATABASE_URL: `mysql://${my.user}:${my.password}@${my.host}:${my.port}/${db}`, MYSQL_PWD: my.password };
  const source = await sourceBackup(ctx, env, work);
  const conn = `--host=${my.host} --port=${my.port} --user=${my.user}`;
  const drop = (name: string) => async () => void (await my.query(`DROP DATABASE IF EXISTS ${name}`));
  let run = 0;
  const [size] = (await my.query(`SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS size FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${db}'`)) as { size: string }[];
  const what = scale > 0 ? `MariaDB, ${db} (${(Number(size.size) / 2 ** 20).toFixed(0)} MB)` : 'MariaDB, empty database';
  const plain = {
    backup: {
      label: 'mariadb-dump --single-transaction --routines --triggers --events | zstd -3',
      spec: () => shell(`mariadb-dump ${conn} --single-transaction --routines --triggers --events ${db} | zstd -3 -q > ${shellQuote(path.join(work, `plain-${++run}.sql.zst`))}`, env, work),
    },
    restore: {
      label: 'mariadb -e CREATE DATABASE + zstd -dc | mariadb',
      before: drop(`${db}_r2`),
      spec: () => shell(`mariadb ${conn} -e 'CREATE DATABASE ${db}_r2' && zstd -dc -q ${shellQuote(source.artifact)} | mariadb ${conn} ${db}_r2`, env, work),
    },
  };
  const url = (name: string) => `mysql://${my.user}:${encodeURIComponent(my.password)}@${my.host}:${my.port}/${name}`;
  return [
    {
      id: `${db}_backup`,
      rounds,
      label: `${what}: dbstash backup${scale > 0 ? '' : ' (fixed cost)'}`,
      dbstash: { spec: () => dbstash(ctx, ['backup', '--output-dir', path.join(work, `stash-${++run}`), '--env', 'dev', '--json'], env, work) },
      plain: plain.backup,
      target,
    },
    {
      id: `${db}_restore`,
      rounds,
      label: `${what}: dbstash restore --to <new>${scale > 0 ? '' : ' (fixed cost)'}`,
      dbstash: { before: drop(`${db}_r1`), spec: () => dbstash(ctx, ['restore', source.id, '--output-dir', source.stash, '--config', config, '--to', `${db}_r1`, '--yes', '--json'], env, work) },
      plain: plain.restore,
      target,
    },
    ...(wanted(`${db}_in_process`) ? inProcessPairs(await inProcess(ctx, work, db, url, source), db, what, plain, drop, target).map((p) => ({ ...p, rounds })) : []),
  ];
}

/**
 * The floor under any fixed cost of a Node.js command line: starting Node and loading the
 * libraries the command needs, nothing else; alternated with a bare `node -e 0`.
 */
async function floor(ctx: PairContext): Promise<{ label: string; bareMs: number[]; loadMs: Record<string, number[]> }> {
  // A backup never parses a manifest and does not load zod (test/unit/startup.test.ts); a restore does.
  const sets: Record<string, string[]> = {
    'commander + pg + zstd-napi (a PostgreSQL backup)': ['commander', 'pg', 'zstd-napi'],
    'commander + zod + pg + zstd-napi (a PostgreSQL restore)': ['commander', 'zod', 'pg', 'zstd-napi'],
    'commander + mysql2 + zstd-napi (a MariaDB backup)': ['commander', 'mysql2/promise', 'zstd-napi'],
    'commander + zod + mysql2 + zstd-napi (a MariaDB restore)': ['commander', 'zod', 'mysql2/promise', 'zstd-napi'],
  };
  const root = path.resolve(path.dirname(ctx.cliPath), '../../..');
  const bareMs: number[] = [];
  const loadMs: Record<string, number[]> = Object.fromEntries(Object.keys(sets).map((k) => [k, []]));
  const spec = (modules: string[]): CommandSpec => ({
    cmd: process.execPath,
    args: ['--input-type=module', '-e', modules.map((m) => `await import(${JSON.stringify(m)});`).join(' ') || '0'],
    env: withoutStartupVars(process.env, ctx.ambientNodeEnv),
    cwd: root,
  });
  for (let round = 0; round <= ctx.rounds; round++) {
    const bare = await measure(spec([]));
    if (round > 0) bareMs.push(bare.wallMs);
    for (const [label, modules] of Object.entries(sets)) {
      const m = await measure(spec(modules));
      if (round > 0) loadMs[label].push(m.wallMs);
    }
  }
  return { label: 'node start + libraries', bareMs, loadMs };
}

async function runPair(ctx: PairContext, pair: Pair): Promise<PairResult> {
  const dbstashMs: number[] = [];
  const plainMs: number[] = [];
  let rss = 0;
  // One untimed run of each side first (page cache, the server's own caches).
  const rounds = Math.min(ctx.rounds, pair.rounds ?? ctx.rounds);
  for (let round = 0; round <= rounds; round++) {
    for (const [side, times] of [[pair.dbstash, dbstashMs], [pair.plain, plainMs]] as const) {
      await side.before?.();
      if ('run' in side) {
        const started = performance.now();
        await side.run();
        if (round > 0) times.push(performance.now() - started);
        rss = Math.max(rss, process.memoryUsage.rss());
        continue;
      }
      const m = await measure(side.spec());
      if (round === 0) continue;
      times.push(m.wallMs);
      if (side === pair.dbstash) rss = Math.max(rss, m.rootPeakRss);
    }
  }
  const d = median(dbstashMs);
  const p = median(plainMs);
  const value = pair.target.kind === 'difference' ? (d - p) / 1000 : d / p;
  const shown = pair.target.kind === 'difference' ? `${value >= 0 ? '+' : ''}${value.toFixed(3)} s` : `${value.toFixed(3)}×`;
  const limit = pair.target.kind === 'difference' ? `≤ +${pair.target.max.toFixed(2)} s` : `≤ ${pair.target.max}×`;
  ctx.log(`${pair.id}: dbstash ${(d / 1000).toFixed(3)} s, plain ${(p / 1000).toFixed(3)} s → ${shown}`);
  return {
    id: pair.id,
    label: pair.label,
    plainLabel: pair.plain.label,
    dbstashMs,
    plainMs,
    dbstashRss: rss,
    // dbstash ran inside the bench's process: the RSS is the bench process's.
    inProcess: 'run' in pair.dbstash,
    target: { name: `${pair.label} vs ${pair.plain.label}`, value: shown, limit, pass: value <= pair.target.max },
  };
}

/** The ids of every pair, for --only. */
export const PAIR_IDS = [
  ...['pg_empty', 'bench_my_empty', 'bench_my_small', 'bench_my_large'].flatMap((db) => [`${db}_backup`, `${db}_restore`, `${db}_in_process_backup`, `${db}_in_process_restore`]),
  'pg_s10_in_process_restore',
  'pg_small_drill',
];

/**
 * Restore drills of a small PostgreSQL database (4 tables, 20k rows) as the daemon runs them: in
 * one process, with warm scratch servers (src/verify/warm.ts). The first drill starts the server;
 * the target holds for the others. A throwaway server per drill (the default of a single
 * `dbstash verify --drill`) is the first drill's figure.
 */
async function drills(ctx: PairContext, work: string): Promise<{ coldMs: number; warmMs: number[]; target: Target }> {
  const pg = ctx.pg;
  const db = 'bench_small_pg';
  await pg.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await pg.createDatabase(db);
  await pg.query(
    Array.from({ length: 4 }, (_, i) => `CREATE TABLE t${i} (id int PRIMARY KEY, label text, at timestamptz DEFAULT now()); INSERT INTO t${i} (id, label) SELECT g, md5(g::text) FROM generate_series(1, 5000) g;`).join('\n'),
    db,
  );
  const env = { ...pgEnv(pg, db), DATABASE_URL: `postgres://${pg.user}@${pg.host}:${pg.port}/${db}` };
  await fsp.mkdir(path.join(work, 'drill'), { recursive: true });
  const source = await sourceBackup(ctx, env, path.join(work, 'drill'));
  const [{ openStorage }, { locateBackup }, { verifyBackup }, { WarmScratch }] = await Promise.all([
    import('../src/storage/index.js'),
    import('../src/verify/locate.js'),
    import('../src/verify/verify.js'),
    import('../src/verify/warm.js'),
    import('../src/pipeline/compress.js'),
  ]);
  const storage = await openStorage(source.stash);
  const { manifest } = await locateBackup([{ name: 'local', storage, optional: false }], source.id);
  // The scratch server runs as the "postgres" OS user: its data directory goes in the system temp dir.
  const warm = new WarmScratch(os.tmpdir());
  const times: number[] = [];
  try {
    for (let i = 0; i <= ctx.rounds; i++) {
      const started = performance.now();
      await verifyBackup(storage, manifest, { level: 'drill', stageContext: {}, tempDir: os.tmpdir(), dryRun: true, warm, signal: new AbortController().signal, events: { info: () => {}, warn: ctx.log } });
      times.push(performance.now() - started);
    }
  } finally {
    await warm.close();
  }
  const [coldMs, ...warmMs] = times;
  const m = median(warmMs) / 1000;
  ctx.log(`drills: first (starts the server) ${(coldMs / 1000).toFixed(3)} s, warm median ${m.toFixed(3)} s`);
  return { coldMs, warmMs, target: { name: 'restore drill of a small PostgreSQL database, warm scratch server (daemon)', value: `${m.toFixed(3)} s`, limit: '≤ 1.50 s', pass: m <= 1.5 } };
}

export async function runPairs(ctx: PairContext, only?: (id: string) => boolean): Promise<ExtensionResult> {
  const work = tempDir('dbstash-bench-pairs');
  const pairs: Pair[] = [];
  const skipped: string[] = [];
  let my: MariaServer | undefined;
  try {
    const wanted = (prefix: string) => !only || PAIR_IDS.some((id) => id.startsWith(prefix) && only(id));
    if (wanted('pg_empty') || wanted('pg_small')) pairs.push(...(await postgresPairs(ctx, work, wanted)));
    if (wanted('pg_s10')) pairs.push(...(await pgScalePairs(ctx, work, 10)));
    if (!wanted('bench_my')) {
      // no MariaDB pair asked for
    } else if (existsSync(MARIADBD)) {
      my = await startMariadb();
      if (wanted('bench_my_empty')) pairs.push(...(await mysqlPairs(ctx, my, work, 'bench_my_empty', 0, { kind: 'difference', max: 0.15 }, wanted)));
      if (wanted('bench_my_small')) pairs.push(...(await mysqlPairs(ctx, my, work, 'bench_my_small', 1, { kind: 'ratio', max: 1.15 }, wanted)));
      // ~40 times the small one: where the fixed cost no longer decides the ratio; 3 rounds.
      if (wanted('bench_my_large')) pairs.push(...(await mysqlPairs(ctx, my, work, 'bench_my_large', 40, { kind: 'ratio', max: 1.15 }, wanted, 3)));
    } else {
      skipped.push(`MariaDB pairs: ${MARIADBD} not found`);
    }
    const results: PairResult[] = [];
    for (const pair of pairs.filter((p) => !only || only(p.id))) results.push(await runPair(ctx, pair));
    const s = (ms: number[]) => `${(median(ms) / 1000).toFixed(3)} s (${(Math.min(...ms) / 1000).toFixed(3)}–${(Math.max(...ms) / 1000).toFixed(3)})`;
    const floorMs = results.length > 0 ? await floor(ctx) : undefined;
    const drilled = !only || only('pg_small_drill') ? await drills(ctx, work) : undefined;
    const text = [
      `restores, MariaDB and fixed costs: pairs alternated over ${ctx.rounds} rounds (median, min–max wall time)`,
      ...results.map((r) => `  ${r.label}: ${s(r.dbstashMs)}, ${r.inProcess ? 'RSS of the bench process' : 'peak RSS'} ${(r.dbstashRss / 2 ** 20).toFixed(1)} MB\n    ${r.plainLabel}: ${s(r.plainMs)} → ${r.target.value}`),
      ...(floorMs
        ? [
            `  the floor of a Node.js command line, alternated: \`node -e 0\` ${s(floorMs.bareMs)}`,
            ...Object.entries(floorMs.loadMs).map(([label, ms]) => `    node, loading ${label}: ${s(ms)}`),
          ]
        : []),
      ...(drilled
        ? [
            `  restore drill of a small PostgreSQL database (4 tables, 20k rows), in one process as the daemon runs it: first drill, starting the scratch server ${(drilled.coldMs / 1000).toFixed(3)} s; with the server warm ${s(drilled.warmMs)}`,
          ]
        : []),
      ...skipped.map((x) => `  skipped: ${x}`),
    ].join('\n');
    return { id: 'pairs', text, data: { results, floor: floorMs, drills: drilled, skipped }, targets: [...results.map((r) => r.target), ...(drilled ? [drilled.target] : [])] };
  } finally {
    await my?.stop();
  }
}
