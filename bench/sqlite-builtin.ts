// Could Node's built-in node:sqlite (its online `backup()`, Node ≥ 22.16) replace better-sqlite3 in
// the SQLite engine? Both libraries make the backup the way dump() in src/engines/sqlite/index.ts
// does — on the source connection BEGIN, a read (SELECT count(*) FROM sqlite_schema), the online
// backup API into a new file (1024 pages a step), COMMIT — of one ~200 MB WAL database built once
// in a private temp dir, alone and while a child process commits small transactions into it.
// Per library: wall time of BEGIN…backup (median of the rounds), whether the backup finished,
// PRAGMA integrity_check of the copy, whether the copy's row counts equal the counts read inside
// the source's read transaction (snapshot exactness), and whether the writer's invariants hold in
// the copy (each writer transaction adds one order, three order lines and 1 to one customer's
// balance: lines = 3 × orders and sum(balance) − orders stays constant). After each backup the
// writer's rows are removed again, so every backup copies the same database. Also: whether a
// progress callback that throws (dbstash's abort) stops each library's backup, whether
// node:sqlite's backup takes an AbortSignal, and what loading node:sqlite prints on stderr.
//
//   npx tsc -p tsconfig.json && node dist/bench/sqlite-builtin.js [--rounds 3] [--size-mb 200]
//     [--writer-lib better-sqlite3|node:sqlite] [--json]
//
// Progress goes to stderr, the table (or --json) to stdout. The temp dir is removed at the end,
// also on an error or Ctrl-C.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { atExit, removeTempDir, tempDir } from '../test/harness/tmp.js';
import { median } from './measure.js';

type NodeSqlite = typeof import('node:sqlite');
type LibraryId = 'better-sqlite3' | 'node:sqlite';
type Param = number | string | bigint;
type Row = Record<string, unknown>;

const USAGE = `usage: node dist/bench/sqlite-builtin.js [--rounds N] [--size-mb N] [--writer-lib better-sqlite3|node:sqlite] [--timeout-s N] [--json]

  --rounds N        backups per library and case, alternated between the libraries (default 3)
  --size-mb N       size of the source database (default 200)
  --writer-lib id   library of the writer process (default better-sqlite3, the same for both)
  --timeout-s N     a backup still running after this is aborted and counted as not finished (default 300)
  --json            print the full result as JSON on stdout`;

const SELF = fileURLToPath(import.meta.url);
const PAGES_PER_STEP = 1024; // what dbstash's progress callback returns
const CUSTOMERS = 100_000;
const LINES_PER_ORDER = 3;

const WORDS = `order customer invoice shipment payment refund account balance product catalog price
discount warehouse delivery address street city country postal code phone email message status
pending paid shipped returned cancelled review rating comment support ticket priority urgent
normal low high quick report monthly weekly daily summary total amount tax currency quantity item
line note internal external team manager supplier contract renewal subscription plan trial`
  .split(/\s+/)
  .filter(Boolean);

/** A small deterministic PRNG (mulberry32), so that every build is the same database. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function words(rand: () => number, n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(WORDS[Math.floor(rand() * WORDS.length)]);
  return out.join(' ');
}

// ---------------------------------------------------------------------------------------------
// The two libraries behind one small interface.

interface Conn {
  exec(sql: string): void;
  get(sql: string): Row | undefined;
  all(sql: string): Row[];
  statement(sql: string): (...params: Param[]) => void;
  /** The online backup API into dest; progress is called between steps and may throw to abort. */
  backup(dest: string, progress: (remainingPages: number, totalPages: number) => void): Promise<number>;
  close(): void;
}

interface Library {
  id: LibraryId;
  version: string;
  sqliteVersion: string;
  /** Opens an existing database read-write (dbstash's openForReading adds query_only itself). */
  open(file: string): Conn;
}

function betterSqlite3(): Library {
  const open = (file: string): Conn => {
    const db = new Database(file, { fileMustExist: true });
    return {
      exec: (sql) => void db.exec(sql),
      get: (sql) => db.prepare(sql).get() as Row | undefined,
      all: (sql) => db.prepare(sql).all() as Row[],
      statement: (sql) => {
        const st = db.prepare(sql);
        return (...params) => void st.run(...params);
      },
      backup: async (dest, progress) => {
        const done = await db.backup(dest, {
          progress: ({ totalPages, remainingPages }) => {
            progress(remainingPages, totalPages);
            return PAGES_PER_STEP;
          },
        });
        return done.totalPages;
      },
      close: () => void db.close(),
    };
  };
  const require = createRequire(import.meta.url);
  const version = (require('better-sqlite3/package.json') as { version: string }).version;
  const mem = new Database(':memory:');
  const sqliteVersion = (mem.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
  mem.close();
  return { id: 'better-sqlite3', version, sqliteVersion, open };
}

async function nodeSqlite(): Promise<{ library: Library; module: NodeSqlite }> {
  const sqlite: NodeSqlite = await import('node:sqlite'); // prints the ExperimentalWarning (Node 22)
  const open = (file: string): Conn => {
    // DatabaseSync creates a missing file; dbstash only opens existing ones.
    if (!existsSync(file)) throw new Error(`${file} does not exist`);
    const db = new sqlite.DatabaseSync(file);
    return {
      exec: (sql) => db.exec(sql),
      get: (sql) => db.prepare(sql).get() as Row | undefined,
      all: (sql) => db.prepare(sql).all() as Row[],
      statement: (sql) => {
        const st = db.prepare(sql);
        return (...params) => void st.run(...params);
      },
      backup: (dest, progress) =>
        sqlite.backup(db, dest, {
          rate: PAGES_PER_STEP,
          progress: ({ totalPages, remainingPages }) => progress(remainingPages, totalPages),
        }),
      close: () => db.close(),
    };
  };
  const mem = new sqlite.DatabaseSync(':memory:');
  const sqliteVersion = String((mem.prepare('SELECT sqlite_version() AS v').get() as Row).v);
  mem.close();
  return { library: { id: 'node:sqlite', version: process.version, sqliteVersion, open }, module: sqlite };
}

async function library(id: LibraryId): Promise<Library> {
  return id === 'better-sqlite3' ? betterSqlite3() : (await nodeSqlite()).library;
}

// ---------------------------------------------------------------------------------------------
// The source database and the writer.

interface Counts {
  customers: number;
  orders: number;
  lines: number;
  balance: number;
}

interface Source {
  file: string;
  sizeBytes: number;
  pageSize: number;
  pages: number;
  counts: Counts;
  /** sum(balance) − count(orders): every writer transaction keeps it. */
  balanceMinusOrders: number;
  buildSeconds: number;
  /** The writers' pages stay as free pages (see resetSource): the size after the warm-up and at the end. */
  sizeBytesAfterWarmUp?: number;
  sizeBytesAtEnd?: number;
}

const SCHEMA = `
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, balance INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL, note TEXT NOT NULL);
CREATE TABLE order_lines (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL, description TEXT NOT NULL);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX order_lines_order ON order_lines (order_id);
`;

function counts(conn: Conn): Counts {
  const n = (sql: string) => Number(Object.values(conn.get(sql) ?? {})[0] ?? NaN);
  return {
    customers: n('SELECT count(*) FROM customers'),
    orders: n('SELECT count(*) FROM orders'),
    lines: n('SELECT count(*) FROM order_lines'),
    balance: n('SELECT total(balance) FROM customers'),
  };
}

function buildSource(file: string, sizeMb: number, log: (m: string) => void): Source {
  const started = performance.now();
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = OFF');
    db.exec(SCHEMA);
    const rand = prng(42);
    const customer = db.prepare('INSERT INTO customers (id, name, email, balance) VALUES (?, ?, ?, ?)');
    db.transaction(() => {
      for (let id = 1; id <= CUSTOMERS; id++) customer.run(id, words(rand, 2), `user${id}@example.com`, Math.floor(rand() * 100));
    })();
    const order = db.prepare('INSERT INTO orders (id, customer_id, status, created_at, note) VALUES (?, ?, ?, ?, ?)');
    const line = db.prepare('INSERT INTO order_lines (order_id, sku, qty, description) VALUES (?, ?, ?, ?)');
    const statuses = ['new', 'paid', 'shipped', 'returned'];
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const target = sizeMb * 1024 * 1024;
    let orderId = 0;
    const batch = db.transaction((n: number) => {
      for (let i = 0; i < n; i++) {
        orderId++;
        order.run(orderId, 1 + Math.floor(rand() * CUSTOMERS), statuses[orderId % 4], 1_700_000_000 + orderId, words(rand, 30));
        for (let k = 0; k < LINES_PER_ORDER; k++) line.run(orderId, `SKU-${Math.floor(rand() * 1e6)}`, 1 + k, words(rand, 12));
      }
    });
    while ((db.pragma('page_count', { simple: true }) as number) * pageSize < target) {
      batch(5000);
      if (orderId % 50_000 === 0) log(`building: ${orderId} orders, ${(((db.pragma('page_count', { simple: true }) as number) * pageSize) / 2 ** 20).toFixed(0)} MB`);
    }
    db.pragma('wal_checkpoint(TRUNCATE)');
    const c = counts(betterConnOf(db));
    return {
      file,
      sizeBytes: 0,
      pageSize,
      pages: db.pragma('page_count', { simple: true }) as number,
      counts: c,
      balanceMinusOrders: c.balance - c.orders,
      buildSeconds: (performance.now() - started) / 1000,
    };
  } finally {
    db.close();
  }
}

/** A Conn over an already open better-sqlite3 handle (counting only). */
function betterConnOf(db: Database.Database): Conn {
  return {
    exec: (sql) => void db.exec(sql),
    get: (sql) => db.prepare(sql).get() as Row | undefined,
    all: (sql) => db.prepare(sql).all() as Row[],
    statement: () => {
      throw new Error('not used');
    },
    backup: () => Promise.reject(new Error('not used')),
    close: () => void db.close(),
  };
}

/**
 * Takes the source back to its built contents after a writer ran (its orders, their lines and its
 * balance increments removed), then checkpoints it and empties its WAL. The pages the writer
 * added stay as free pages, reused by the next writer, so the copies stay about the same size.
 */
function resetSource(source: Source): void {
  const db = new Database(source.file, { fileMustExist: true });
  try {
    const built = { n: source.counts.orders };
    db.transaction(() => {
      db.prepare(
        `UPDATE customers SET balance = balance - (SELECT count(*) FROM orders o WHERE o.customer_id = customers.id AND o.id > :n)
         WHERE id IN (SELECT customer_id FROM orders WHERE id > :n)`,
      ).run(built);
      db.prepare('DELETE FROM order_lines WHERE order_id > :n').run(built);
      db.prepare('DELETE FROM orders WHERE id > :n').run(built);
    }).immediate();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

interface WriterStats {
  commits: number;
  seconds: number;
  exitCode: number | null;
  stderr: string;
}

interface Writer {
  stop(): Promise<WriterStats>;
}

/** Starts this script as a writer process on file; resolves once it has committed. */
async function startWriter(file: string, lib: LibraryId): Promise<Writer> {
  const child: ChildProcess = spawn(process.execPath, [SELF, '--writer', file, '--writer-lib', lib], { stdio: ['ignore', 'pipe', 'pipe'] });
  const unregister = atExit(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (stdout.includes('ready\n')) {
        clearInterval(timer);
        resolve();
      }
    }, 5);
    void exited.then((code) => {
      clearInterval(timer);
      reject(new Error(`the writer exited (${code}) before committing: ${stderr.trim()}`));
    });
  });
  return {
    async stop() {
      child.kill('SIGTERM');
      const exitCode = await exited;
      unregister();
      const m = /commits (\d+) seconds ([\d.]+)/.exec(stdout);
      return { commits: m ? Number(m[1]) : 0, seconds: m ? Number(m[2]) : 0, exitCode, stderr: stderr.trim() };
    },
  };
}

/** The writer process: one order, three lines and a balance update per transaction, until SIGTERM. */
async function writerMain(file: string, libId: LibraryId): Promise<void> {
  const lib = await library(libId);
  const conn = lib.open(file);
  // Set, not left to the library: on a WAL database better-sqlite3 defaults to NORMAL, node:sqlite to FULL.
  conn.exec('PRAGMA synchronous = NORMAL');
  conn.exec('PRAGMA busy_timeout = 10000');
  const customers = Number(conn.get('SELECT max(id) AS n FROM customers')?.n);
  const order = conn.statement('INSERT INTO orders (customer_id, status, created_at, note) VALUES (?, ?, ?, ?)');
  const line = conn.statement('INSERT INTO order_lines (order_id, sku, qty, description) VALUES ((SELECT max(id) FROM orders), ?, ?, ?)');
  const credit = conn.statement('UPDATE customers SET balance = balance + 1 WHERE id = ?');
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  const rand = prng(process.pid);
  const started = performance.now();
  let commits = 0;
  while (!stop) {
    for (let i = 0; i < 20; i++) {
      conn.exec('BEGIN IMMEDIATE');
      const customer = 1 + Math.floor(rand() * customers);
      order(customer, 'new', Date.now(), words(rand, 30));
      for (let k = 0; k < LINES_PER_ORDER; k++) line(`SKU-${Math.floor(rand() * 1e6)}`, 1 + k, words(rand, 12));
      credit(customer);
      conn.exec('COMMIT');
      if (++commits === 1) process.stdout.write('ready\n');
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  conn.close();
  process.stdout.write(`commits ${commits} seconds ${((performance.now() - started) / 1000).toFixed(3)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Measurements.

interface BackupRun {
  library: LibraryId;
  round: number;
  writer: boolean;
  finished: boolean;
  error?: string;
  wallMs: number;
  pages: number;
  progressCalls: number;
  /** Longest event-loop stall of the backing-up process while the backup ran. */
  maxLoopDelayMs: number;
  snapshot: Counts;
  copy?: Counts;
  integrity?: string;
  snapshotExact?: boolean;
  invariants?: boolean;
  /** Orders committed between the snapshot and the end of the read transaction. */
  commitsWhileHeld?: number;
  writerStats?: WriterStats;
}

async function removeDatabaseFiles(file: string): Promise<void> {
  for (const suffix of ['', '-wal', '-shm', '-journal']) await fsp.rm(file + suffix, { force: true });
}

function sameCounts(a: Counts, b: Counts): boolean {
  return a.customers === b.customers && a.orders === b.orders && a.lines === b.lines && a.balance === b.balance;
}

function invariantsHold(c: Counts, source: Source): boolean {
  return c.lines === LINES_PER_ORDER * c.orders && c.balance - c.orders === source.balanceMinusOrders;
}

async function backupOnce(lib: Library, source: Source, dir: string, round: number, withWriter: boolean, writerLib: LibraryId, timeoutMs: number): Promise<BackupRun> {
  const copy = path.join(dir, 'copy.db');
  await removeDatabaseFiles(copy);
  await (await fsp.open(copy, 'wx', 0o600)).close(); // as dbstash: a private empty file
  const writer = withWriter ? await startWriter(source.file, writerLib) : undefined;
  const run: BackupRun = { library: lib.id, round, writer: withWriter, finished: false, wallMs: 0, pages: 0, progressCalls: 0, maxLoopDelayMs: 0, snapshot: { customers: 0, orders: 0, lines: 0, balance: 0 } };
  let writerStats: WriterStats | undefined;
  try {
    const conn = lib.open(source.file);
    try {
      conn.exec('PRAGMA query_only = ON');
      const loop = monitorEventLoopDelay({ resolution: 5 });
      const deadline = Date.now() + timeoutMs;
      loop.enable();
      const started = performance.now();
      conn.exec('BEGIN');
      conn.get('SELECT count(*) FROM sqlite_schema');
      try {
        run.pages = await conn.backup(copy, () => {
          run.progressCalls++;
          if (Date.now() > deadline) throw new Error(`not finished after ${timeoutMs / 1000} s`);
        });
        run.finished = true;
      } catch (err) {
        run.error = (err as Error).message;
      }
      run.wallMs = performance.now() - started;
      loop.disable();
      run.maxLoopDelayMs = loop.max / 1e6;
      run.snapshot = counts(conn); // still inside the read transaction
      conn.exec('COMMIT');
      if (withWriter) run.commitsWhileHeld = counts(conn).orders - run.snapshot.orders;
    } finally {
      conn.close();
    }
  } finally {
    writerStats = await writer?.stop();
  }
  run.writerStats = writerStats;
  if (writerStats && writerStats.exitCode !== 0) run.error = `${run.error ? run.error + '; ' : ''}writer exited ${writerStats.exitCode}: ${writerStats.stderr.split('\n').slice(-1)[0]}`;
  if (run.finished) {
    const c = lib.open(copy);
    try {
      const rows = c.all('PRAGMA integrity_check');
      run.integrity = rows.length === 1 && rows[0].integrity_check === 'ok' ? 'ok' : rows.slice(0, 3).map((r) => String(r.integrity_check)).join('; ');
      run.copy = counts(c);
    } finally {
      c.close();
    }
    run.snapshotExact = sameCounts(run.copy, run.snapshot);
    run.invariants = invariantsHold(run.copy, source);
  }
  await removeDatabaseFiles(copy);
  resetSource(source);
  return run;
}

interface AbortProbe {
  library: LibraryId;
  outcome: 'rejected' | 'completed';
  error?: string;
  totalPages: number;
  remainingAtAbort?: number;
  progressCallsAfterAbort: number;
  /** From the throw in the progress callback to the promise settling. */
  settleMs?: number;
  /** The source's read transaction after the abort: still usable, COMMIT works. */
  sourceUsable: boolean;
  copyBytesLeft: number;
}

/** dbstash's abort: the progress callback calls signal.throwIfAborted(); abort once half is copied. */
async function abortProbe(lib: Library, source: Source, dir: string): Promise<AbortProbe> {
  const copy = path.join(dir, 'abort.db');
  await removeDatabaseFiles(copy);
  await (await fsp.open(copy, 'wx', 0o600)).close();
  const controller = new AbortController();
  const probe: AbortProbe = { library: lib.id, outcome: 'completed', totalPages: 0, progressCallsAfterAbort: 0, sourceUsable: false, copyBytesLeft: 0 };
  let abortedAt = 0;
  const conn = lib.open(source.file);
  try {
    conn.exec('PRAGMA query_only = ON');
    conn.exec('BEGIN');
    conn.get('SELECT count(*) FROM sqlite_schema');
    try {
      await conn.backup(copy, (remaining, total) => {
        probe.totalPages = total;
        if (controller.signal.aborted) probe.progressCallsAfterAbort++;
        else if (remaining <= total / 2) {
          probe.remainingAtAbort = remaining;
          abortedAt = performance.now();
          controller.abort();
        }
        controller.signal.throwIfAborted();
      });
    } catch (err) {
      probe.outcome = 'rejected';
      probe.error = `${(err as Error).name}: ${(err as Error).message}`;
      probe.settleMs = performance.now() - abortedAt;
    }
    try {
      conn.get('SELECT count(*) FROM orders');
      conn.exec('COMMIT');
      probe.sourceUsable = true;
    } catch {
      probe.sourceUsable = false;
    }
  } finally {
    conn.close();
  }
  probe.copyBytesLeft = (await fsp.stat(copy).catch(() => undefined))?.size ?? 0;
  await removeDatabaseFiles(copy);
  return probe;
}

/** node:sqlite's backup() documents no signal option: does it honour an already aborted one? */
async function signalProbe(sqlite: NodeSqlite, source: Source, dir: string): Promise<string> {
  const copy = path.join(dir, 'signal.db');
  await removeDatabaseFiles(copy);
  const db = new sqlite.DatabaseSync(source.file);
  try {
    const options = { rate: PAGES_PER_STEP, signal: AbortSignal.abort() } as Parameters<NodeSqlite['backup']>[2];
    const pages = await sqlite.backup(db, copy, options);
    return `ignored: the backup completed (${pages} pages)`;
  } catch (err) {
    return `honoured: rejected with ${(err as Error).name}: ${(err as Error).message}`;
  } finally {
    db.close();
    await removeDatabaseFiles(copy);
  }
}

interface Defaults {
  library: LibraryId;
  synchronous: number;
  busyTimeoutMs: number;
}

/** What a connection gets without being told: PRAGMA synchronous and busy_timeout on an existing WAL database. */
function defaultsProbe(lib: Library, file: string): Defaults {
  const conn = lib.open(file);
  try {
    const value = (sql: string) => Number(Object.values(conn.get(sql) ?? {})[0]);
    return { library: lib.id, synchronous: value('PRAGMA synchronous'), busyTimeoutMs: value('PRAGMA busy_timeout') };
  } finally {
    conn.close();
  }
}

interface WarningProbe {
  command: string;
  stderr: string;
}

/** What a fresh node process prints on stderr when it loads each library. */
function warningProbes(): WarningProbe[] {
  const require = createRequire(import.meta.url);
  const better = pathToFileURL(require.resolve('better-sqlite3')).href;
  const cases: [string, string[]][] = [
    [`node --input-type=module -e "import 'node:sqlite'"`, ['--input-type=module', '-e', `import 'node:sqlite'`]],
    [`node --disable-warning=ExperimentalWarning --input-type=module -e "import 'node:sqlite'"`, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', `import 'node:sqlite'`]],
    [`node --input-type=module -e "import 'better-sqlite3'"`, ['--input-type=module', '-e', `import ${JSON.stringify(better)}`]],
  ];
  return cases.map(([command, args]) => ({ command, stderr: spawnSync(process.execPath, args, { encoding: 'utf8' }).stderr.trim() }));
}

// ---------------------------------------------------------------------------------------------
// Report.

interface Summary {
  library: LibraryId;
  version: string;
  sqliteVersion: string;
  alone: Stat;
  underWriter: Stat;
}

interface Stat {
  runs: number;
  finished: number;
  medianMs?: number;
  minMs?: number;
  maxMs?: number;
  integrityOk: number;
  snapshotExact: number;
  invariants: number;
  medianCommitsWhileHeld?: number;
  maxLoopDelayMs: number;
  medianPages?: number;
}

function stat(runs: BackupRun[]): Stat {
  const done = runs.filter((r) => r.finished);
  const walls = done.map((r) => r.wallMs);
  const held = runs.map((r) => r.commitsWhileHeld).filter((n): n is number => n !== undefined);
  return {
    runs: runs.length,
    finished: done.length,
    medianMs: walls.length ? median(walls) : undefined,
    minMs: walls.length ? Math.min(...walls) : undefined,
    maxMs: walls.length ? Math.max(...walls) : undefined,
    integrityOk: done.filter((r) => r.integrity === 'ok').length,
    snapshotExact: done.filter((r) => r.snapshotExact).length,
    invariants: done.filter((r) => r.invariants).length,
    medianCommitsWhileHeld: held.length ? median(held) : undefined,
    maxLoopDelayMs: Math.max(0, ...runs.map((r) => r.maxLoopDelayMs)),
    medianPages: done.length ? median(done.map((r) => r.pages)) : undefined,
  };
}

function mb(bytes?: number): string {
  return bytes === undefined ? '-' : `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

function seconds(ms?: number): string {
  return ms === undefined ? '-' : `${(ms / 1000).toFixed(2)} s`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')).join('\n');
}

function render(result: Result): string {
  const rows: string[][] = [['library (SQLite)', 'case', 'pages', 'wall, median', 'min–max', 'finished', 'integrity ok', 'snapshot exact', 'invariants', 'writer commits while snapshot held', 'max event-loop stall']];
  for (const s of result.summaries) {
    for (const [label, st] of [['alone', s.alone], ['under a writer', s.underWriter]] as const) {
      rows.push([
        `${s.library} ${s.version} (${s.sqliteVersion})`,
        label,
        st.medianPages === undefined ? '-' : String(st.medianPages),
        seconds(st.medianMs),
        st.minMs === undefined ? '-' : `${(st.minMs / 1000).toFixed(2)}–${(st.maxMs! / 1000).toFixed(2)} s`,
        `${st.finished}/${st.runs}`,
        `${st.integrityOk}/${st.finished}`,
        `${st.snapshotExact}/${st.finished}`,
        `${st.invariants}/${st.finished}`,
        st.medianCommitsWhileHeld === undefined ? '-' : String(st.medianCommitsWhileHeld),
        `${st.maxLoopDelayMs.toFixed(0)} ms`,
      ]);
    }
  }
  const src = result.source;
  const writerRate = result.runs.filter((r) => r.writerStats && r.writerStats.seconds > 0).map((r) => r.writerStats!.commits / r.writerStats!.seconds);
  const lines = [
    `SQLite online backup, better-sqlite3 vs node:sqlite: ${result.command}`,
    `machine: ${result.machine.cpus} CPUs (${result.machine.cpuModel}), node ${result.machine.node}; load average ${result.machine.loadAverageAtStart.toFixed(2)} at start, ${result.machine.loadAverageAtEnd.toFixed(2)} at end`,
    `source: ${(src.sizeBytes / 2 ** 20).toFixed(1)} MB WAL database (${src.pages} pages of ${src.pageSize} B; ${src.counts.customers} customers, ${src.counts.orders} orders, ${src.counts.lines} order lines), built in ${src.buildSeconds.toFixed(0)} s;` +
      ` ${mb(src.sizeBytesAfterWarmUp)} after the warm-up, ${mb(src.sizeBytesAtEnd)} at the end (writers' rows removed after each backup, their pages kept free)`,
    `backup: BEGIN; SELECT count(*) FROM sqlite_schema; backup API, ${PAGES_PER_STEP} pages a step; COMMIT (wall: BEGIN to the backup's end); ${result.rounds} round(s), libraries alternated`,
    `writer: a ${result.writerLib} process committing 1 order + ${LINES_PER_ORDER} lines + 1 balance update per transaction (synchronous=NORMAL)` +
      (writerRate.length ? `, median ${median(writerRate).toFixed(0)} commits/s over its runs` : ''),
    '',
    table(rows),
    '',
    ...result.runs.filter((r) => r.error).map((r) => `round ${r.round} ${r.library} ${r.writer ? 'under a writer' : 'alone'}: ${r.error}`),
    'abort (progress callback calls signal.throwIfAborted() once half the pages are copied):',
    ...result.aborts.map(
      (a) =>
        `  ${a.library}: ${a.outcome === 'rejected' ? `rejected with ${a.error}, ${a.settleMs!.toFixed(0)} ms after the throw` : 'NOT stopped: the backup completed'}` +
        ` at ${a.remainingAtAbort ?? '?'} of ${a.totalPages} pages remaining; progress calls after the abort ${a.progressCallsAfterAbort}; source transaction usable afterwards: ${a.sourceUsable ? 'yes' : 'no'}; ${a.copyBytesLeft} bytes left in the target file`,
    ),
    `node:sqlite backup() with an already aborted options.signal: ${result.signalProbe}`,
    `defaults of a new connection to the WAL source: ${result.defaults.map((d) => `${d.library} synchronous=${['OFF', 'NORMAL', 'FULL', 'EXTRA'][d.synchronous] ?? d.synchronous}, busy_timeout=${d.busyTimeoutMs} ms`).join('; ')}`,
    'stderr of a node process loading the library:',
    ...result.warnings.map((w) => `  ${w.command}: ${w.stderr ? w.stderr.split('\n').join(' | ') : '(nothing)'}`),
  ];
  return lines.join('\n') + '\n';
}

interface Result {
  command: string;
  startedAt: Date;
  finishedAt: Date;
  machine: { cpus: number; cpuModel: string; node: string; loadAverageAtStart: number; loadAverageAtEnd: number };
  rounds: number;
  writerLib: LibraryId;
  source: Source;
  summaries: Summary[];
  runs: BackupRun[];
  aborts: AbortProbe[];
  signalProbe: string;
  defaults: Defaults[];
  warnings: WarningProbe[];
}

function libraryId(value: string): LibraryId {
  if (value !== 'better-sqlite3' && value !== 'node:sqlite') throw new Error(`--writer-lib takes better-sqlite3 or node:sqlite, got "${value}"`);
  return value;
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} takes a positive whole number, got "${value}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      'size-mb': { type: 'string', default: '200' },
      'writer-lib': { type: 'string', default: 'better-sqlite3' },
      'timeout-s': { type: 'string', default: '300' },
      writer: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const writerLib = libraryId(values['writer-lib']!);
  if (values.writer) return writerMain(values.writer, writerLib);
  const rounds = positiveInt(values.rounds!, '--rounds');
  const sizeMb = positiveInt(values['size-mb']!, '--size-mb');
  const timeoutMs = positiveInt(values['timeout-s']!, '--timeout-s') * 1000;
  const log = (m: string) => process.stderr.write(`[sqlite-builtin] ${m}\n`);

  const startedAt = new Date();
  const loadAverageAtStart = os.loadavg()[0];
  const better = betterSqlite3();
  const builtin = await nodeSqlite();
  const libraries = [better, builtin.library];
  for (const l of libraries) log(`${l.id} ${l.version}: SQLite ${l.sqliteVersion}`);

  const dir = tempDir('dbstash-sqlite-builtin');
  const runs: BackupRun[] = [];
  const aborts: AbortProbe[] = [];
  let source: Source;
  let signal: string;
  let defaults: Defaults[];
  try {
    log(`building a ${sizeMb} MB WAL database in ${dir}`);
    source = buildSource(path.join(dir, 'source.db'), sizeMb, log);
    source.sizeBytes = (await fsp.stat(source.file)).size;
    log(`built ${(source.sizeBytes / 2 ** 20).toFixed(1)} MB in ${source.buildSeconds.toFixed(0)} s; ${source.counts.orders} orders`);
    // Untimed warm-up, one backup per library under a writer: the first timed backup then finds the
    // same page cache, and the file already has the free pages the next writers fill.
    for (const l of libraries) await backupOnce(l, source, dir, 0, true, writerLib, timeoutMs);
    source.sizeBytesAfterWarmUp = (await fsp.stat(source.file)).size;
    for (let round = 1; round <= rounds; round++) {
      for (const l of round % 2 ? libraries : [...libraries].reverse()) {
        for (const withWriter of [false, true]) {
          const r = await backupOnce(l, source, dir, round, withWriter, writerLib, timeoutMs);
          runs.push(r);
          log(
            `round ${round}/${rounds} ${l.id} ${withWriter ? 'under a writer' : 'alone'}: ${r.finished ? `${(r.wallMs / 1000).toFixed(2)} s` : `NOT finished (${r.error})`}` +
              (r.finished ? `, integrity ${r.integrity}, snapshot exact ${r.snapshotExact}, invariants ${r.invariants}` : '') +
              (withWriter ? `, writer commits while held ${r.commitsWhileHeld}` : '') +
              `, max loop stall ${r.maxLoopDelayMs.toFixed(0)} ms`,
          );
        }
      }
    }
    for (const l of libraries) {
      const a = await abortProbe(l, source, dir);
      aborts.push(a);
      log(`abort ${l.id}: ${a.outcome}${a.error ? ` (${a.error})` : ''}`);
    }
    signal = await signalProbe(builtin.module, source, dir);
    defaults = libraries.map((l) => defaultsProbe(l, source.file));
    source.sizeBytesAtEnd = (await fsp.stat(source.file)).size;
  } finally {
    await removeTempDir(dir);
  }
  const warnings = warningProbes();

  const summaries: Summary[] = libraries.map((l) => ({
    library: l.id,
    version: l.version,
    sqliteVersion: l.sqliteVersion,
    alone: stat(runs.filter((r) => r.library === l.id && !r.writer)),
    underWriter: stat(runs.filter((r) => r.library === l.id && r.writer)),
  }));
  const result: Result = {
    command: `node dist/bench/sqlite-builtin.js ${process.argv.slice(2).join(' ')}`.trim(),
    startedAt,
    finishedAt: new Date(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version, loadAverageAtStart, loadAverageAtEnd: os.loadavg()[0] },
    rounds,
    writerLib,
    source,
    summaries,
    runs,
    aborts,
    signalProbe: signal,
    defaults,
    warnings,
  };
  process.stdout.write(values.json ? JSON.stringify(result, null, 2) + '\n' : render(result));
}

main().catch((err: unknown) => {
  process.stderr.write(`[sqlite-builtin] failed: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
