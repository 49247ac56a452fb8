// The commands the benchmark alternates, as named scenarios. Each scenario turns into one
// command per run plus a way to read its output size; scenarios for features that are not
// available yet (encryption, S3, parallel dumps) find that out in setup() and are skipped with
// the reason printed. A new measurement is a new entry in scenarios(), and, when it should be
// held to a target, a new entry in comparisons().

import { promises as fsp } from 'node:fs';
import { tempDir } from '../test/harness/tmp.js';
import path from 'node:path';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import type { PgServer } from '../test/harness/postgres.js';
import type { S3Server } from '../test/harness/s3.js';
import { pgEnv, type BenchDatabase } from './database.js';
import { measure, type CommandSpec, type Measurement } from './measure.js';

export interface BenchContext {
  server: PgServer;
  db: BenchDatabase;
  /** Scratch directory for this database's outputs; emptied after every run. */
  workDir: string;
  cliPath: string;
  /** Starts (once) the S3 endpoint for the S3 scenario. */
  s3(): Promise<S3Server>;
  log(message: string): void;
  /** Keep NODE_STARTUP_VARS in dbstash's environment (--ambient-node-env). */
  ambientNodeEnv?: boolean;
}

/**
 * Variables that change what Node does at every start, dropped from dbstash's environment unless
 * --ambient-node-env is given. NODE_EXTRA_CA_CERTS makes Node 20 build its whole TLS root store at
 * start-up (Node >= 22 does it on first use): ~30 ms before the first line of dbstash runs. Some
 * machines set it globally for other tools; a default install has none, and no bench run uses TLS.
 */
export const NODE_STARTUP_VARS = ['NODE_EXTRA_CA_CERTS'];

export interface PreparedRun {
  spec: CommandSpec;
  /** Size in bytes of what the command wrote (undefined when it writes nothing). */
  outputSize(m: Measurement): Promise<number | undefined>;
}

export interface Scenario {
  id: string;
  /** The command as a reader would type it. */
  label: string;
  /** Checks the feature and warms up; returns why the scenario cannot run, or undefined. */
  setup?(ctx: BenchContext): Promise<string | undefined>;
  prepare(ctx: BenchContext, run: number): Promise<PreparedRun>;
}

/** A ratio held to a target: `of` / `against` on `metric` must be ≤ `max`. */
export interface Comparison {
  of: string;
  against: string;
  metric: 'wallMs' | 'cpuMs' | 'size';
  max?: number;
  label: string;
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function pgTool(ctx: BenchContext, tool: string): string {
  return path.join(ctx.server.binDir, tool);
}

async function fileSize(file: string): Promise<number> {
  return (await fsp.stat(file)).size;
}

/** A shell pipeline with pipefail, so a failing pg_dump fails the run. */
function shell(ctx: BenchContext, script: string): CommandSpec {
  return { cmd: 'bash', args: ['-o', 'pipefail', '-c', script], env: pgEnv(ctx.server, ctx.db.name), cwd: ctx.workDir };
}

interface DbstashResult {
  manifest: {
    artifacts: { role: string; size: number; rawSize: number; stages: { id: string; params: Record<string, unknown> }[] }[];
    dump: { args: string[] };
  };
}

function parseResult(stdout: string): DbstashResult {
  try {
    return JSON.parse(stdout) as DbstashResult;
  } catch {
    throw new Error(`dbstash backup --json printed no JSON result:\n${stdout.slice(0, 500)}`);
  }
}

function mainArtifact(result: DbstashResult) {
  const main = result.manifest.artifacts.find((a) => a.role === 'main');
  if (!main) throw new Error('the backup manifest lists no main artifact');
  return main;
}

/** `env` without NODE_STARTUP_VARS (unless `keep`). */
export function withoutStartupVars(env: NodeJS.ProcessEnv, keep = false): NodeJS.ProcessEnv {
  if (keep) return env;
  return Object.fromEntries(Object.entries(env).filter(([k]) => !NODE_STARTUP_VARS.includes(k)));
}

/**
 * `dbstash backup` as a user runs it: the built CLI, the database from DATABASE_URL (no password
 * in argv), a fresh local stash per run unless `extraArgs` names another destination.
 */
export function dbstashSpec(ctx: BenchContext, run: number, extraArgs: string[], extraEnv: NodeJS.ProcessEnv = {}): CommandSpec {
  const stash = path.join(ctx.workDir, `stash-${run}`);
  const destination = extraArgs.includes('--storage') ? [] : ['--output-dir', stash];
  return {
    cmd: process.execPath,
    args: [ctx.cliPath, 'backup', ...destination, '--env', 'dev', '--json', ...extraArgs],
    env: { ...withoutStartupVars(pgEnv(ctx.server, ctx.db.name), ctx.ambientNodeEnv), DATABASE_URL: ctx.server.url(ctx.db.name), ...extraEnv },
    cwd: ctx.workDir,
    captureStdout: true,
  };
}

interface DbstashVariant {
  /** Extra backup flags, computed once per database in setup(). */
  args?: (ctx: BenchContext) => Promise<string[]>;
  env?: (ctx: BenchContext) => Promise<NodeJS.ProcessEnv>;
  /** Looks at the probe run's result; returns why the variant does not measure what it claims. */
  check?: (result: DbstashResult) => string | undefined;
}

/**
 * A `dbstash backup` scenario. A variant (extra flags or environment) first runs one untimed probe
 * backup: when that fails (an unknown flag, an unsupported storage scheme) or its check objects,
 * the scenario is skipped with that reason.
 */
function dbstashScenario(id: string, label: string, variant?: DbstashVariant): Scenario {
  let env: NodeJS.ProcessEnv = {};
  let args: string[] = [];
  const scenario: Scenario = {
    id,
    label,
    async prepare(ctx, run) {
      return {
        spec: dbstashSpec(ctx, run, args, env),
        outputSize: async (m) => mainArtifact(parseResult(m.stdout)).size,
      };
    },
  };
  if (variant) {
    scenario.setup = async (ctx) => {
      env = (await variant.env?.(ctx)) ?? {};
      args = (await variant.args?.(ctx)) ?? [];
      let result: DbstashResult;
      try {
        result = parseResult((await measure(dbstashSpec(ctx, 0, args, env))).stdout);
      } catch (err) {
        const lines = (err as Error).message.trimEnd().split('\n');
        return lines.find((l) => l.startsWith('error:')) ?? lines[lines.length - 1];
      }
      return variant.check?.(result);
    };
  }
  return scenario;
}

/**
 * The backup every restore scenario of one database restores: one dbstash backup (zstd -3, local
 * stash), made once per database, untimed, outside the work dir that is emptied after each run.
 * Both sides restore the very same dump: dbstash from its stash, the plain pipeline from the
 * stored artifact file.
 */
interface RestoreSource {
  stash: string;
  id: string;
  artifact: string;
}

const restoreSources = new Map<string, Promise<RestoreSource>>();

/** The source backup; with `jobs`, one made with --jobs (pg_dump's directory format, packed). */
function restoreSource(ctx: BenchContext, jobs?: number): Promise<RestoreSource> {
  const key = `${ctx.db.name}${jobs ? `-jobs${jobs}` : ''}`;
  let source = restoreSources.get(key);
  if (!source) {
    source = (async () => {
      const stash = tempDir(`dbstash-bench-restore-${key}`);
      const spec = dbstashSpec(ctx, 0, jobs ? ['--jobs', String(jobs)] : []);
      const result = await measure({ ...spec, args: spec.args.map((a) => (a.startsWith(path.join(ctx.workDir, 'stash-')) ? stash : a)) });
      const { id } = JSON.parse(result.stdout) as { id: string };
      const files: string[] = [];
      for (const dir of await fsp.readdir(stash)) {
        const inner = await fsp.readdir(path.join(stash, dir)).catch(() => [] as string[]);
        files.push(...inner.filter((f) => f.startsWith(`${id}.dump`) || f.startsWith(`${id}.tar`)).map((f) => path.join(stash, dir, f)));
      }
      if (files.length !== 1) throw new Error(`the restore source ${id} has ${files.length} main artifacts in ${stash}`);
      return { stash, id, artifact: files[0] };
    })();
    restoreSources.set(key, source);
  }
  return source;
}

const directoryDumps = new Map<string, Promise<string>>();

/**
 * The --jobs source backup's dump as the plain tools keep it: pg_dump's directory, unpacked once
 * (untimed) from the stored artifact with zstd -dc | tar -x.
 */
function directoryDump(ctx: BenchContext, jobs: number): Promise<string> {
  const key = `${ctx.db.name}-jobs${jobs}`;
  let dir = directoryDumps.get(key);
  if (!dir) {
    dir = (async () => {
      const source = await restoreSource(ctx, jobs);
      const out = tempDir(`dbstash-bench-dir-${key}`);
      await measure(shell(ctx, `zstd -dc -q ${shellQuote(source.artifact)} | tar -x -C ${shellQuote(out)}`));
      await fsp.access(path.join(out, 'toc.dat'));
      return out;
    })();
    directoryDumps.set(key, dir);
  }
  return dir;
}

/** A fresh target name per scenario; it is dropped before each run (untimed), so every run creates it. */
async function freshTarget(ctx: BenchContext, suffix: string): Promise<string> {
  const name = `${ctx.db.name}_${suffix}`;
  await ctx.server.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  return name;
}

/** setup() of a scenario that reads the source backup: makes it (once per database). */
async function needsSource(ctx: BenchContext): Promise<undefined> {
  await restoreSource(ctx);
  return undefined;
}

/**
 * A restore of the source backup (with `jobs`, the --jobs one) into a fresh database (dropped,
 * untimed, before each run).
 */
function restoreScenario(id: string, label: string, spec: (ctx: BenchContext, source: RestoreSource, target: string) => CommandSpec, jobs?: number): Scenario {
  return {
    id,
    label,
    async setup(ctx) {
      await restoreSource(ctx, jobs);
      return undefined;
    },
    async prepare(ctx) {
      const source = await restoreSource(ctx, jobs);
      return { spec: spec(ctx, source, await freshTarget(ctx, id)), outputSize: async () => undefined };
    },
  };
}

/** `dbstash restore <source> --to <target> --yes --json`, with `extra` flags. */
function dbstashRestore(ctx: BenchContext, source: RestoreSource, target: string, extra: string[] = []): CommandSpec {
  return {
    cmd: process.execPath,
    // The password comes from PGPASSWORD, as pg_restore's does: none in argv.
    args: [ctx.cliPath, 'restore', source.id, '--output-dir', source.stash, ...extra, '--to', `postgres://${ctx.server.user}@${ctx.server.host}:${ctx.server.port}/${target}`, '--yes', '--json'],
    env: withoutStartupVars(pgEnv(ctx.server, ctx.db.name), ctx.ambientNodeEnv),
    cwd: ctx.workDir,
    captureStdout: true,
  };
}

/** createdb + zstd -dc artifact | pg_restore -d, then `after` (a shell command) if given. */
function plainRestore(id: string, label: string, after?: (ctx: BenchContext, target: string) => string): Scenario {
  return restoreScenario(id, label, (ctx, source, target) => {
    const bin = (t: string) => shellQuote(pgTool(ctx, t));
    const restore = `${bin('createdb')} ${target} && zstd -dc -q ${shellQuote(source.artifact)} | ${bin('pg_restore')} --exit-on-error -d ${target}`;
    return shell(ctx, after ? `${restore} && ${after(ctx, target)}` : restore);
  });
}

function restoreScenarios(): Scenario[] {
  return [
    restoreScenario('dbstash_restore', 'dbstash restore --to <new database> (one pass, row counts, rename)', dbstashRestore),
    plainRestore('pg_restore_zstd', '(r) createdb + zstd -dc artifact | pg_restore -d'),
    restoreScenario(
      'dbstash_restore_jobs',
      'dbstash restore --jobs 2 of a --jobs 2 backup (unpack, pg_restore -j 2, row counts, rename)',
      (ctx, source, target) => dbstashRestore(ctx, source, target, ['--jobs', '2']),
      2,
    ),
    {
      id: 'pg_restore_dir_jobs',
      label: '(j) createdb + pg_restore -j 2 -d of the same dump as a directory',
      setup: async (ctx) => {
        await directoryDump(ctx, 2);
        return undefined;
      },
      async prepare(ctx) {
        const dir = await directoryDump(ctx, 2);
        const target = await freshTarget(ctx, 'pg_restore_dir_jobs');
        const bin = (t: string) => shellQuote(pgTool(ctx, t));
        return { spec: shell(ctx, `${bin('createdb')} ${target} && ${bin('pg_restore')} --exit-on-error -j 2 -d ${target} ${shellQuote(dir)}`), outputSize: async () => undefined };
      },
    },
    restoreScenario(
      'pg_restore_unpack_jobs',
      '(u+j) the same from the stored artifact: zstd -dc | tar -x into a temp dir, createdb, pg_restore -j 2 -d, rm',
      (ctx, source, target) => {
        const bin = (t: string) => shellQuote(pgTool(ctx, t));
        const dir = shellQuote(path.join(ctx.workDir, 'unpacked'));
        return shell(ctx, `mkdir ${dir} && zstd -dc -q ${shellQuote(source.artifact)} | tar -x -C ${dir} && ${bin('createdb')} ${target} && ${bin('pg_restore')} --exit-on-error -j 2 -d ${target} ${dir} && rm -rf ${dir}`);
      },
      2,
    ),
    plainRestore('pg_restore_zstd_count', '(r+n) (r), then count(*) of every table', (ctx, target) => {
      const counts = ctx.db.tables.map((t) => `SELECT count(*) FROM public.${t.name};`).join(' ');
      return `${shellQuote(pgTool(ctx, 'psql'))} -X -q -At -d ${target} -c ${shellQuote(counts)} > /dev/null`;
    }),
  ];
}

/** An empty database to restore one table beside (created untimed before each run: --table needs a live target). */
async function emptyTarget(ctx: BenchContext, suffix: string): Promise<string> {
  const name = await freshTarget(ctx, suffix);
  await ctx.server.query(`CREATE DATABASE ${name}`);
  return name;
}

/** One table of the source backup: beside the live ones (dbstash), or pg_restore -t; and exports of a table. */
function tableScenarios(): Scenario[] {
  const exportSpec = (ctx: BenchContext, source: RestoreSource, file: string, extra: string[]): CommandSpec => ({
    cmd: process.execPath,
    args: [ctx.cliPath, 'export', source.id, '--output-dir', source.stash, '--table', 'public.bench_documents', '--format', 'jsonl', '--output', file, ...extra],
    env: withoutStartupVars(pgEnv(ctx.server, ctx.db.name), ctx.ambientNodeEnv),
    cwd: ctx.workDir,
    captureStdout: true,
  });
  return [
    {
      id: 'dbstash_restore_table',
      label: 'dbstash restore --table bench_one_pct (~1% of the database) --to <live database>',
      setup: needsSource,
      async prepare(ctx) {
        const source = await restoreSource(ctx);
        const target = await emptyTarget(ctx, 'one_table');
        return { spec: dbstashRestore(ctx, source, target, ['--table', 'public.bench_one_pct']), outputSize: async () => undefined };
      },
    },
    {
      id: 'pg_restore_table',
      label: '(t) zstd -dc artifact | pg_restore -t bench_one_pct -d <database>',
      setup: needsSource,
      async prepare(ctx) {
        const source = await restoreSource(ctx);
        const target = await emptyTarget(ctx, 'one_table_plain');
        return {
          // pg_restore -t stops reading once it has its table: zstd's broken pipe is no failure, pg_restore's status decides.
          spec: shell(ctx, `zstd -dc -q ${shellQuote(source.artifact)} 2>/dev/null | ${shellQuote(pgTool(ctx, 'pg_restore'))} --exit-on-error -t bench_one_pct -d ${target}; test "\${PIPESTATUS[1]}" = 0`),
          outputSize: async () => undefined,
        };
      },
    },
    {
      // The floor of a restore BESIDE the live tables with the plain tools: the table cannot be
      // restored into a live database under another name, so it goes through a scratch database.
      id: 'pg_restore_table_beside',
      label: '(t+b) by hand, beside the live tables: createdb scratch, (t) into it, SET SCHEMA, pg_dump -n | pg_restore, dropdb',
      setup: needsSource,
      async prepare(ctx) {
        const source = await restoreSource(ctx);
        const target = await emptyTarget(ctx, 'one_table_hand');
        const scratch = await freshTarget(ctx, 'one_table_hand_scratch');
        const bin = (t: string) => shellQuote(pgTool(ctx, t));
        const script = [
          `${bin('createdb')} ${scratch}`,
          `{ zstd -dc -q ${shellQuote(source.artifact)} 2>/dev/null | ${bin('pg_restore')} --exit-on-error -t bench_one_pct -d ${scratch}; test "\${PIPESTATUS[1]}" = 0; }`,
          `${bin('psql')} -X -q -d ${scratch} -c 'CREATE SCHEMA restored; ALTER TABLE public.bench_one_pct SET SCHEMA restored'`,
          `${bin('pg_dump')} -Fc -Z0 -n restored -d ${scratch} | ${bin('pg_restore')} --exit-on-error --single-transaction -d ${target}`,
          `${bin('dropdb')} ${scratch}`,
        ].join(' && ');
        return { spec: shell(ctx, script), outputSize: async () => undefined };
      },
    },
    {
      id: 'dbstash_export',
      label: 'dbstash export --table bench_documents --format jsonl --output file',
      setup: needsSource,
      async prepare(ctx, run) {
        const file = path.join(ctx.workDir, `export-${run}.jsonl`);
        return { spec: exportSpec(ctx, await restoreSource(ctx), file, []), outputSize: () => fileSize(file) };
      },
    },
    {
      id: 'dbstash_export_none',
      label: 'the same with --limit 0 (throwaway server, restore of the table, no rows out)',
      setup: needsSource,
      async prepare(ctx, run) {
        const file = path.join(ctx.workDir, `export-none-${run}.jsonl`);
        return { spec: exportSpec(ctx, await restoreSource(ctx), file, ['--limit', '0']), outputSize: () => fileSize(file) };
      },
    },
  ];
}

export async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) total += e.isDirectory() ? await dirSize(path.join(dir, e.name)) : (await fsp.stat(path.join(dir, e.name))).size;
  return total;
}

/**
 * A pgBackRest config for the bench: zstd 3, process-max 2, a fast checkpoint, quiet logs, one
 * stanza "bench" for `server`, and the scenario's own options.
 */
export function pgbackrestConf(o: { repo: string; logPath: string; lockPath: string; server: Pick<PgServer, 'dataDir' | 'port' | 'socketDir'>; options: string[] }): string {
  return [
    '[global]',
    `repo1-path=${o.repo}`,
    `log-path=${o.logPath}`,
    `lock-path=${o.lockPath}`,
    'log-level-console=warn',
    'log-level-file=off',
    'compress-type=zst',
    'compress-level=3',
    'process-max=2',
    'start-fast=y',
    ...o.options,
    '[bench]',
    `pg1-path=${o.server.dataDir}`,
    `pg1-port=${o.server.port}`,
    `pg1-socket-path=${o.server.socketDir}`,
    'pg1-user=postgres',
    '',
  ].join('\n');
}

/**
 * Debian's pgBackRest taking a full backup of the bench cluster: zstd 3, process-max 2, a fresh
 * repository per run (its stanza created before the timed command), run as the postgres OS user
 * as pgBackRest must be. The bench server does not archive, so archive-check is off, as the
 * self-contained dbstash and pg_basebackup runs carry their WAL differently; the repository's
 * growth is the backup's size.
 */
function pgbackrestScenario(): Scenario {
  let root = '';
  const conf = (ctx: BenchContext, repo: string) => pgbackrestConf({ repo, logPath: root, lockPath: root, server: ctx.server, options: ['archive-check=n'] });
  const asPostgres = (args: string[]) => ({ cmd: 'runuser', args: ['-u', 'postgres', '--', 'pgbackrest', ...args] });
  return {
    id: 'pgbackrest_full',
    label: '(g) pgbackrest backup --type=full (zstd 3, process-max 2)',
    async setup(ctx) {
      const { spawnSync } = await import('node:child_process');
      if (spawnSync('pgbackrest', ['version']).status !== 0) return 'pgbackrest is not installed (apt-get install pgbackrest)';
      root = tempDir('dbstash-bench-pgbackrest');
      spawnSync('chown', ['-R', 'postgres:', root]);
      spawnSync('chmod', ['755', path.dirname(root)]);
      return undefined;
    },
    async prepare(ctx, run) {
      const { spawnSync } = await import('node:child_process');
      for (const old of await fsp.readdir(root)) if (old.startsWith('repo-')) await fsp.rm(path.join(root, old), { recursive: true, force: true });
      const repo = path.join(root, `repo-${run}`);
      const file = path.join(root, `pgbackrest-${run}.conf`);
      await fsp.writeFile(file, conf(ctx, repo));
      spawnSync('chown', ['postgres:', file]);
      const c = asPostgres([`--config=${file}`, '--stanza=bench', 'stanza-create']);
      const created = spawnSync(c.cmd, c.args, { encoding: 'utf8' });
      if (created.status !== 0) throw new Error(`pgbackrest stanza-create failed: ${created.stderr || created.stdout}`);
      const b = asPostgres([`--config=${file}`, '--stanza=bench', 'backup', '--type=full']);
      return { spec: { ...b, cwd: root }, outputSize: () => dirSize(path.join(repo, 'backup')) };
    },
  };
}

export function scenarios(): Scenario[] {
  return [
    dbstashScenario('dbstash', 'dbstash backup (zstd -3, local stash)'),
    // Physical base backups of the bench cluster, with the WAL they need inside (the bench server
    // does not archive): the issue's baseline is pg_basebackup -Ft -X fetch with client-side zstd 3.
    dbstashScenario('dbstash_physical', 'dbstash backup --physical --self-contained (zstd -3)', { args: async () => ['--physical', '--self-contained'] }),
    pgbackrestScenario(),
    {
      id: 'pg_basebackup_zstd',
      label: '(p) pg_basebackup -Ft -X fetch --compress=client-zstd:3 -c fast',
      async prepare(ctx, run) {
        const dir = path.join(ctx.workDir, `p-${run}`);
        return {
          spec: shell(ctx, `${shellQuote(pgTool(ctx, 'pg_basebackup'))} -D ${shellQuote(dir)} -Ft -X fetch --compress=client-zstd:3 --checkpoint=fast`),
          outputSize: () => dirSize(dir),
        };
      },
    },
    {
      id: 'pg_dump_fc',
      label: '(a) pg_dump -Fc -f file',
      async prepare(ctx, run) {
        const file = path.join(ctx.workDir, `a-${run}.dump`);
        return { spec: shell(ctx, `${shellQuote(pgTool(ctx, 'pg_dump'))} -Fc -f ${shellQuote(file)}`), outputSize: () => fileSize(file) };
      },
    },
    {
      id: 'pg_dump_gzip',
      label: '(b) pg_dump | gzip > file',
      async prepare(ctx, run) {
        const file = path.join(ctx.workDir, `b-${run}.sql.gz`);
        return { spec: shell(ctx, `${shellQuote(pgTool(ctx, 'pg_dump'))} | gzip > ${shellQuote(file)}`), outputSize: () => fileSize(file) };
      },
    },
    {
      id: 'pg_dump_zstd',
      label: '(c) pg_dump -Fc -Z0 | zstd -3 > file',
      async prepare(ctx, run) {
        const file = path.join(ctx.workDir, `c-${run}.dump.zst`);
        return { spec: shell(ctx, `${shellQuote(pgTool(ctx, 'pg_dump'))} -Fc -Z0 | zstd -3 -q > ${shellQuote(file)}`), outputSize: () => fileSize(file) };
      },
    },
    {
      id: 'pg_dump_floor',
      label: '(d) pg_dump -Fc -Z0 > /dev/null',
      async prepare(ctx) {
        return { spec: shell(ctx, `${shellQuote(pgTool(ctx, 'pg_dump'))} -Fc -Z0 > /dev/null`), outputSize: async () => undefined };
      },
    },
    dbstashScenario('dbstash_encrypted', 'dbstash backup --recipient age1… (zstd -3 + age)', {
      args: async () => ['--recipient', await identityToRecipient(await generateX25519Identity())],
    }),
    dbstashScenario('dbstash_s3', 'dbstash backup --storage s3://bench/… (s3rver)', {
      args: async (ctx) => ['--storage', `s3://bench/${ctx.db.name}`],
      env: async (ctx) => {
        const s3 = await ctx.s3();
        return {
          AWS_ENDPOINT_URL: s3.endpoint,
          AWS_ACCESS_KEY_ID: s3.accessKeyId,
          AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
          AWS_REGION: s3.region,
        };
      },
    }),
    // The same backup with the cheapest zstd level: what the pipeline costs when compression is cheap.
    dbstashScenario('dbstash_level1', 'dbstash backup --level 1 (zstd -1)', {
      args: async () => ['--level', '1'],
      check: (r) => {
        const zstd = mainArtifact(r).stages.find((st) => st.id === 'zstd');
        return zstd?.params.level === 1 ? undefined : `--level 1 did not reach the zstd stage (${JSON.stringify(zstd?.params)})`;
      },
    }),
    dbstashScenario('dbstash_jobs', 'dbstash backup --jobs 2', {
      args: async () => ['--jobs', '2'],
      check: (r) =>
        r.manifest.dump.args.some((a) => a === '--format=directory' || a === '-Fd' || a.startsWith('--jobs') || a.startsWith('-j'))
          ? undefined
          : `--jobs is accepted but the dump is not parallel yet (pg_dump ran with ${r.manifest.dump.args.filter((a) => !a.startsWith('--snapshot')).join(' ')})`,
    }),
    ...restoreScenarios(),
    ...tableScenarios(),
  ];
}

export function comparisons(): Comparison[] {
  return [
    { of: 'dbstash', against: 'pg_dump_fc', metric: 'wallMs', max: 0.35, label: 'wall time vs (a) pg_dump -Fc' },
    { of: 'dbstash', against: 'pg_dump_gzip', metric: 'wallMs', max: 0.35, label: 'wall time vs (b) pg_dump | gzip' },
    { of: 'dbstash', against: 'pg_dump_zstd', metric: 'wallMs', max: 1.2, label: 'wall time vs (c) pg_dump -Z0 | zstd -3' },
    { of: 'dbstash', against: 'pg_dump_floor', metric: 'wallMs', max: 1.6, label: 'wall time vs (d) the floor, pg_dump -Z0 > /dev/null' },
    { of: 'dbstash', against: 'pg_dump_fc', metric: 'size', max: 1.0, label: 'artifact size vs (a) pg_dump -Fc' },
    { of: 'dbstash', against: 'pg_dump_fc', metric: 'cpuMs', label: 'CPU time vs (a)' },
    { of: 'dbstash', against: 'pg_dump_gzip', metric: 'cpuMs', label: 'CPU time vs (b)' },
    { of: 'dbstash', against: 'pg_dump_zstd', metric: 'cpuMs', label: 'CPU time vs (c)' },
    { of: 'dbstash', against: 'pg_dump_floor', metric: 'cpuMs', label: 'CPU time vs (d)' },
    { of: 'dbstash', against: 'pg_dump_zstd', metric: 'size', label: 'artifact size vs (c)' },
    // What no tool that reads the database through pg_dump can beat: the floor against (a) and (b).
    { of: 'pg_dump_floor', against: 'pg_dump_fc', metric: 'wallMs', label: 'lower bound for any pg_dump reader: (d) vs (a)' },
    { of: 'pg_dump_floor', against: 'pg_dump_gzip', metric: 'wallMs', label: 'lower bound for any pg_dump reader: (d) vs (b)' },
    // The plain zstd -3 pipeline against (a): how far the -3 compression alone leaves from 0.35×.
    { of: 'pg_dump_zstd', against: 'pg_dump_fc', metric: 'wallMs', label: 'the plain pipeline (c) vs (a)' },
    { of: 'dbstash_level1', against: 'pg_dump_fc', metric: 'wallMs', label: 'dbstash --level 1 vs (a), wall time' },
    { of: 'dbstash_level1', against: 'pg_dump_fc', metric: 'size', label: 'dbstash --level 1 vs (a), artifact size' },
    { of: 'dbstash_encrypted', against: 'dbstash', metric: 'wallMs', max: 1.1, label: 'encrypted vs unencrypted backup, wall time' },
    { of: 'dbstash_s3', against: 'dbstash', metric: 'wallMs', label: 'backup to S3 (s3rver) vs to local disk, wall time' },
    { of: 'dbstash_jobs', against: 'dbstash', metric: 'wallMs', label: '--jobs 2 vs single job, wall time' },
    { of: 'dbstash_physical', against: 'pg_basebackup_zstd', metric: 'wallMs', max: 1.1, label: 'base backup, wall time vs (p) pg_basebackup -Ft -X fetch --compress=client-zstd:3' },
    { of: 'dbstash_physical', against: 'pg_basebackup_zstd', metric: 'cpuMs', label: 'base backup, CPU time vs (p)' },
    { of: 'dbstash_physical', against: 'pg_basebackup_zstd', metric: 'size', label: 'base backup, artifact size vs (p)' },
    { of: 'dbstash_physical', against: 'pgbackrest_full', metric: 'wallMs', max: 0.5, label: 'base backup, wall time vs (g) pgbackrest backup --type=full' },
    { of: 'dbstash_physical', against: 'pgbackrest_full', metric: 'size', max: 1.0, label: 'base backup, artifact size vs (g) the pgBackRest repository\'s growth' },
    { of: 'dbstash_restore', against: 'pg_restore_zstd', metric: 'wallMs', max: 1.1, label: 'restore, wall time vs (r) createdb + zstd -dc | pg_restore' },
    { of: 'dbstash_restore', against: 'pg_restore_zstd', metric: 'cpuMs', label: 'restore, CPU time vs (r)' },
    { of: 'pg_restore_zstd_count', against: 'pg_restore_zstd', metric: 'wallMs', label: 'what counting every table adds to (r): (r+n) vs (r)' },
    { of: 'dbstash_restore', against: 'pg_restore_zstd_count', metric: 'wallMs', label: 'restore, wall time vs (r+n), the plain path with the same proof' },
    { of: 'dbstash_restore_jobs', against: 'pg_restore_dir_jobs', metric: 'wallMs', max: 1.1, label: 'restore --jobs 2, wall time vs (j) pg_restore -j 2 of the directory dump' },
    { of: 'dbstash_restore_jobs', against: 'pg_restore_unpack_jobs', metric: 'wallMs', label: 'restore --jobs 2, wall time vs (u+j) the plain tools from the same stored artifact' },
    { of: 'pg_restore_unpack_jobs', against: 'pg_restore_dir_jobs', metric: 'wallMs', label: 'what unpacking the stored artifact costs the plain tools: (u+j) vs (j)' },
    { of: 'dbstash_restore_table', against: 'pg_restore_table', metric: 'wallMs', max: 1.2, label: 'one ~1% table beside the live ones, wall time vs (t) pg_restore -t' },
    { of: 'dbstash_restore_table', against: 'pg_restore_table_beside', metric: 'wallMs', label: 'one ~1% table beside the live ones, wall time vs (t+b) the same by hand' },
    { of: 'pg_restore_table_beside', against: 'pg_restore_table', metric: 'wallMs', label: 'what "beside the live tables" costs the plain tools: (t+b) vs (t)' },
    { of: 'dbstash_restore_table', against: 'dbstash_restore', metric: 'wallMs', label: 'one ~1% table vs the whole restore, wall time' },
  ];
}
