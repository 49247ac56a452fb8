/**
 * The engine contract suite: one function, run against every engine from its own test file.
 *
 * Round trip: `dbstash backup` (the real CLI) of a database full of hostile content, then the
 * engine's restore() into a scratch database, then schema and per-table contents must be
 * identical, and the manifest's row counts must match the restored tables. Failure modes: each
 * one gives a typed error with its documented exit code and leaves nothing in the stash. A
 * failure mode that cannot exist for an engine (SQLite has no credentials) is declared by the
 * adapter as not applicable, with the reason, and the test says so; it is never skipped silently.
 * Two optional hooks deepen the round trip where an adapter gives them: metadata() (what the
 * engine must carry besides schema text and rows: object settings, database properties) is
 * compared after every restore, and restoreUrl() adds `dbstash restore` into a new database and
 * over it; without them the test reports itself skipped, with the reason.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Readable } from 'node:stream';
import { ExitCode } from '../../src/core/errors.js';
import { loadEngine } from '../../src/engines/index.js';
import type { Engine, EngineId, Target } from '../../src/engines/engine.js';
import { parseTarget } from '../../src/engines/target.js';
import { decoders } from '../../src/pipeline/stage.js';
import '../../src/pipeline/compress.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { manifestSchema } from '../../src/catalog/manifest-schema.js';
import { runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { folderOf } from '../harness/stash.js';

/** A canonical picture of a database: schema text and, per table, its rows in a stable order. */
export interface DbPicture {
  schema: string;
  tables: Record<string, string[]>;
}

export interface FailureCase {
  /** The database argument given to `dbstash backup` (called once the server runs). */
  url: () => string;
  /** Extra CLI arguments (e.g. --bin-dir for a missing tool). */
  args?: () => string[];
  /** Part of the one-line error message. */
  message: RegExp;
}

export type NotApplicable = { notApplicable: string };

export interface EngineAdapter {
  engine: EngineId;
  /** Starts the server (if any) and creates the source database with the hostile content. */
  setUp(): Promise<void>;
  tearDown(): Promise<void>;
  /** URL or path of the source database, as given to `dbstash backup`. */
  sourceUrl(): string;
  /**
   * A fresh, empty restore target (an empty database; for SQLite a file path that does not exist),
   * created with `properties` — the database properties the backup's manifest recorded — where the
   * engine has any.
   */
  scratchTarget(name: string, properties?: Record<string, unknown>): Promise<Target>;
  picture(target: Target): Promise<DbPicture>;
  /**
   * Optional: what the engine must carry besides schema text and rows, canonical and read straight
   * from the server's catalog — per object the session settings it was created with (character
   * set, collation, sql_mode, definer, security type), the database's own properties. When given,
   * every restore in the suite must reproduce the source's exactly.
   */
  metadata?(target: Target): Promise<Record<string, unknown>>;
  /**
   * Optional: the URL (password included) of database `name` on the source's server, as given to
   * `dbstash restore --to`. When given, the suite restores with the real CLI into a new database
   * and then over it (the swap that keeps the old one aside), and compares both with the source.
   */
  restoreUrl?(name: string): string;
  /** Extra `dbstash backup` arguments for this run (e.g. --jobs 2). */
  backupArgs?: string[];
  failures: {
    badCredentials: FailureCase | NotApplicable;
    missingDatabase: FailureCase;
    unreachableHost: FailureCase | NotApplicable;
    /** The URL of a server at 127.0.0.1:`port` that accepts connections and never answers. */
    silentServer: ((port: number) => string) | NotApplicable;
    missingDumpTool: FailureCase | NotApplicable;
    /** Name of the dump tool's process (as in /proc/<pid>/comm), to kill it mid-way. */
    dumpToolProcess: string | NotApplicable;
  };
}

/** Every byte 0–255, twice. */
export const ALL_BYTES = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i))]);
/** A value over 16 MB (the MySQL/MariaDB default max_allowed_packet and a common client limit). */
export const BIG_SIZE = 16 * 1024 * 1024 + 4099;
export function bigValue(): Buffer {
  const b = Buffer.alloc(BIG_SIZE);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + (i >> 12)) & 0xff;
  return b;
}
/** Text with 2-, 3- and 4-byte UTF-8 characters, quotes, backslashes and newlines. */
export const HOSTILE_TEXT = "Grüße – 日本語 – 𝄞 😀🏳️‍🌈 – quote ' \" backslash \\ tab\tnewline\nend";
export const JSON_TEXT = '{"a": [1, 2.5, {"b": null}], "ü": "😀", "s": "x\\"y"}';
/** Identifiers that need quoting in every engine. */
export const ODD_TABLE = 'Odd Table';
export const ODD_COLUMNS = ['Mixed Case', 'select', 'with space'];

function isNA(x: unknown): x is NotApplicable {
  return typeof x === 'object' && x !== null && 'notApplicable' in x;
}

/** One row as text: column=value pairs in column order, values canonical. */
export function canonicalRow(row: Record<string, unknown>): string {
  return Object.entries(row)
    .map(([k, v]) => `${k}=${canonical(v)}`)
    .join(' | ');
}

/** Canonical text of one value: buffers as hex (hashed when long), the rest as JSON. */
export function canonical(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (Buffer.isBuffer(value)) {
    return value.length > 4096 ? `bytes:${value.length}:${createHashHex(value)}` : `bytes:${value.toString('hex')}`;
  }
  if (typeof value === 'bigint') return `int:${value}`;
  if (value instanceof Date) return `date:${value.toISOString()}`;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > 4096 ? `text:${text.length}:${createHashHex(Buffer.from(text))}` : JSON.stringify(value);
}

function createHashHex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function readRaw(stash: string, manifest: Manifest, role: 'main' | 'globals' = 'main'): Promise<Readable> {
  const artifact = manifest.artifacts.find((a) => a.role === role)!;
  let stream: Readable = createReadStream(path.join(stash, manifest.series!.key, artifact.file));
  for (const d of decoders(artifact.stages)) stream = stream.pipe(d);
  return stream;
}

/** What a failed run must leave behind in the stash: nothing that looks like a backup, no lock. */
function assertNothingLeft(stash: string): void {
  if (!existsSync(stash)) return;
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else files.push(path.relative(stash, path.join(dir, e.name)));
    }
  };
  walk(stash);
  assert.deepEqual(files, [], `a failed backup left files in the stash: ${files.join(', ')}`);
}

interface Proc {
  pid: number;
  comm: string;
  ppid: number;
}

function processes(): Proc[] {
  const list: Proc[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const m = /^(\d+) \((.*)\) \S (\d+)/.exec(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      if (m) list.push({ pid: Number(m[1]), comm: m[2], ppid: Number(m[3]) });
    } catch {
      /* gone meanwhile */
    }
  }
  return list;
}

/** Bytes written so far by `pid` and its descendants of the same name (pg_dump's workers). */
function bytesWritten(root: Proc, all: Proc[]): number {
  let total = 0;
  const queue = [root];
  while (queue.length) {
    const p = queue.shift()!;
    try {
      total += Number(/wchar: (\d+)/.exec(readFileSync(`/proc/${p.pid}/io`, 'utf8'))?.[1] ?? 0);
    } catch {
      /* gone meanwhile */
    }
    queue.push(...all.filter((c) => c.ppid === p.pid && c.comm === root.comm));
  }
  return total;
}

/**
 * Kills the child of `pid` named `comm` (SIGKILL) once it has written `minBytes`: a dump that dies
 * half-way. Once seen, the tool is stepped (SIGSTOP, then 1 ms of SIGCONT at a time), so a fast
 * dump cannot run to its end between two looks.
 */
async function killChildMidway(pid: number, comm: string, minBytes: number, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let most = 0;
  while (Date.now() < deadline) {
    const all = processes();
    // The tool also runs briefly as `<tool> --version` while dbstash looks for it: skip those.
    const tool = all.find((p) => p.comm === comm && p.ppid === pid && !cmdline(p.pid).includes('--version'));
    if (!tool) {
      await new Promise((r) => setTimeout(r, 2));
      continue;
    }
    try {
      process.kill(tool.pid, 'SIGSTOP');
      while (Date.now() < deadline) {
        const written = bytesWritten(tool, processes());
        most = Math.max(most, written);
        if (written >= minBytes) {
          process.kill(tool.pid, 'SIGKILL');
          return tool.pid;
        }
        process.kill(tool.pid, 'SIGCONT');
        await new Promise((r) => setTimeout(r, 1));
        process.kill(tool.pid, 'SIGSTOP');
      }
    } catch {
      // That one ended (a version probe, or a dump too small to reach minBytes): look again.
    }
  }
  throw new Error(`no ${comm} child of ${pid} wrote ${minBytes} bytes within ${timeoutMs} ms (most seen: ${most})`);
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

export function runEngineContract(label: string, adapter: EngineAdapter, opts: { preflightFailures?: boolean } = {}): void {
  describe(`engine contract: ${label}`, { timeout: 240_000 }, () => {
    let engine: Engine;
    let stash: string;
    let manifest: Manifest;
    let restored: Target;

    before(async () => {
      engine = await loadEngine(adapter.engine);
      await adapter.setUp();
      stash = tempDir(`dbstash-contract-${adapter.engine}`);
    });
    after(async () => {
      await adapter.tearDown();
    });

    test('dbstash backup writes an artifact and a manifest', async () => {
      const r = await runCli(['backup', adapter.sourceUrl(), '--output-dir', stash, '--json', ...(adapter.backupArgs ?? [])], { timeoutMs: 120_000 });
      assert.equal(r.code, ExitCode.ok, r.stderr);
      const out = JSON.parse(r.stdout) as { id: string };
      const file = path.join(stash, folderOf(out.id), `${out.id}.manifest.json`);
      manifest = manifestSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
      assert.equal(manifest.engine, adapter.engine);
      assert.ok(manifest.tables.some((t) => t.name === ODD_TABLE), `the manifest lists ${ODD_TABLE}`);
      assert.ok(!readFileSync(file, 'utf8').includes(parseTarget(adapter.sourceUrl()).password ?? '\u0000never'), 'no password in the manifest');
    });

    test('checkStructure accepts the raw dump', async () => {
      assert.ok(manifest, 'backup ran');
      const { summary } = await engine.checkStructure!(await readRaw(stash, manifest), { signal: new AbortController().signal, format: manifest.artifacts[0].format, tempDir: stash, warn: () => {} });
      assert.match(summary, /\d/);
    });

    test('restore into a scratch database gives the same schema and contents', async () => {
      assert.ok(manifest, 'backup ran');
      assert.ok(engine.restore, `${adapter.engine} implements restore()`);
      restored = await adapter.scratchTarget(`contract_restored_${process.pid}`, manifest.database.properties);
      const raw = await readRaw(stash, manifest);
      await engine.restore(restored, raw, {
        signal: new AbortController().signal,
        format: manifest.artifacts[0].format,
        jobs: 2,
        tempDir: tempDir('dbstash-contract-restore'),
        warn: () => {},
      });
      const source = await adapter.picture(parseTarget(adapter.sourceUrl()));
      const copy = await adapter.picture(restored);
      assert.equal(copy.schema, source.schema, 'schema');
      assert.deepEqual(Object.keys(copy.tables).sort(), Object.keys(source.tables).sort(), 'tables');
      for (const table of Object.keys(source.tables)) assert.deepEqual(copy.tables[table], source.tables[table], `contents of ${table}`);
      // The hostile rows are really there (a picture of two empty databases would also be equal).
      const odd = source.tables[ODD_TABLE].join('\n');
      for (const needle of [JSON.stringify(HOSTILE_TEXT), `bytes:${ALL_BYTES.toString('hex')}`, `bytes:${BIG_SIZE}:`, '""', 'NULL']) {
        assert.ok(odd.includes(needle), `the source holds ${needle.slice(0, 40)}`);
      }
      if (adapter.metadata) assert.deepEqual(await adapter.metadata(restored), await adapter.metadata(parseTarget(adapter.sourceUrl())), 'object settings and database properties');
    });

    const restoreUrl = adapter.restoreUrl?.bind(adapter);
    test(
      'dbstash restore into a new database, then over it: both times the source again, and the replaced one kept as it was',
      { skip: restoreUrl ? false : 'the adapter gives no restoreUrl' },
      async () => {
        assert.ok(manifest, 'backup ran');
        const name = `contract_cli_${process.pid}`;
        const url = restoreUrl!(name);
        const source = parseTarget(adapter.sourceUrl());
        const expectSource = async (target: Target, what: string) => {
          const want = await adapter.picture(source);
          const got = await adapter.picture(target);
          assert.equal(got.schema, want.schema, `${what}: schema`);
          assert.deepEqual(got.tables, want.tables, `${what}: contents`);
          if (adapter.metadata) assert.deepEqual(await adapter.metadata(target), await adapter.metadata(source), `${what}: object settings and database properties`);
        };
        const restore = async () => {
          const r = await runCli(['restore', manifest.id, '--output-dir', stash, '--to', url, '--yes'], { timeoutMs: 120_000 });
          assert.equal(r.code, ExitCode.ok, `${r.stdout}\n${r.stderr}`);
          return r.stdout + r.stderr;
        };
        await restore();
        await expectSource(parseTarget(url), 'restored into a new database');
        const out = await restore();
        const kept = /kept as ([^\s;]+)/.exec(out)?.[1];
        assert.ok(kept, `the replaced database is kept: ${out}`);
        await expectSource(parseTarget(url), 'restored over it');
        await expectSource(parseTarget(restoreUrl!(kept)), `the kept ${kept}`);
      },
    );

    test('manifest row counts equal the restored tables (tableStats)', async () => {
      assert.ok(restored, 'restore ran');
      const stats = await engine.tableStats!(restored, { checksums: false });
      const byName = (list: { schema: string; name: string; rows: number }[]) => list.map((t) => `${t.schema}.${t.name}=${t.rows}`).sort();
      assert.deepEqual(byName(stats), byName(manifest.tables));
    });

    test('dbstash backup --checksums, then dbstash verify --deep (drill into a server dbstash starts) passes', async () => {
      const stash = tempDir(`dbstash-contract-deep-${adapter.engine}`);
      const b = await runCli(['backup', adapter.sourceUrl(), '--output-dir', stash, '--json', '--checksums', ...(adapter.backupArgs ?? [])], { timeoutMs: 120_000 });
      assert.equal(b.code, ExitCode.ok, b.stderr);
      const { id, manifest: m } = JSON.parse(b.stdout) as { id: string; manifest: Manifest };
      assert.ok(m.tables.every((t) => typeof t.checksum === 'string' && t.checksum.length > 0), 'every table has a checksum');
      const v = await runCli(['verify', id, '--output-dir', stash, '--deep', '--json'], { timeoutMs: 180_000 });
      assert.equal(v.code, ExitCode.ok, `${v.stdout}\n${v.stderr}`);
      const result = (JSON.parse(v.stdout) as { results: { result: string; level: string; tables: { name: string; ok: boolean; checksumMatch?: boolean }[] }[] }).results[0];
      assert.equal(result.result, 'passed');
      assert.equal(result.level, 'deep');
      assert.equal(result.tables.length, m.tables.length);
      assert.ok(result.tables.every((t) => t.ok && t.checksumMatch === true), 'every table compared by row count and checksum');
    });

    const failing = (name: string, c: FailureCase | NotApplicable, code: number) => {
      if (isNA(c)) {
        test(`${name}: not applicable — ${c.notApplicable}`, () => {
          assert.ok(c.notApplicable.length > 10, 'the adapter says why');
        });
        return;
      }
      test(`${name} → exit ${code}, one-line error, nothing in the stash`, async () => {
        const out = tempDir(`dbstash-contract-fail`);
        const r = await runCli(['backup', c.url(), '--output-dir', out, ...(c.args?.() ?? [])], { timeoutMs: 60_000 });
        assert.equal(r.code, code, r.stderr);
        assert.match(r.stderr, /^error: /m);
        assert.match(r.stderr, c.message);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
        assertNothingLeft(out);
      });
    };
    // A second run against the same engine (another backup mode) need not repeat the preflight cases.
    if (opts.preflightFailures !== false) {
      failing('bad credentials', adapter.failures.badCredentials, ExitCode.connection);
      failing('missing database', adapter.failures.missingDatabase, ExitCode.preflight);
      failing('unreachable host', adapter.failures.unreachableHost, ExitCode.connection);
      failing('missing dump tool', adapter.failures.missingDumpTool, ExitCode.preflight);

      const silent = adapter.failures.silentServer;
      if (isNA(silent)) {
        test(`SIGINT while the server does not answer: not applicable — ${silent.notApplicable}`, () => assert.ok(silent.notApplicable.length > 10));
      } else {
        test('SIGINT while the server does not answer → exit 130 at once (not after the 15 s connect timeout), nothing in the stash', async () => {
          // Accepts the TCP connection, then says nothing: the client waits for the server's first bytes.
          const held: net.Socket[] = [];
          const fake = net.createServer((socket) => held.push(socket.on('error', () => {})));
          await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
          try {
            const out = tempDir('dbstash-contract-silent');
            const child = spawnCli(['backup', silent((fake.address() as net.AddressInfo).port), '--output-dir', out]);
            let stderr = '';
            child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
            child.stdout.resume();
            const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
            const deadline = Date.now() + 20_000;
            while (held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
            assert.equal(held.length, 1, 'the probe connected to the silent server');
            await new Promise((r) => setTimeout(r, 200));
            const signalledAt = Date.now();
            child.kill('SIGINT');
            const code = await exited;
            const took = Date.now() - signalledAt;
            assert.equal(code, ExitCode.interrupted, stderr);
            assert.ok(took < 5_000, `exited ${took} ms after SIGINT`);
            assert.match(stderr, /^error: interrupted by SIGINT/m);
            assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
            assertNothingLeft(out);
          } finally {
            for (const socket of held) socket.destroy();
            fake.close();
          }
        });
      }
    }

    const tool = adapter.failures.dumpToolProcess;
    if (isNA(tool)) {
      test(`dump tool killed mid-way: not applicable — ${tool.notApplicable}`, () => assert.ok(tool.notApplicable.length > 10));
    } else {
      test(`dump tool (${tool}) killed mid-way → exit ${ExitCode.backupFailed}, nothing in the stash`, async () => {
        const out = tempDir('dbstash-contract-kill');
        const child = spawnCli(['backup', adapter.sourceUrl(), '--output-dir', out, ...(adapter.backupArgs ?? [])]);
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.stdout.resume();
        const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
        await killChildMidway(child.pid!, tool, 256 * 1024);
        const code = await exited;
        assert.equal(code, ExitCode.backupFailed, stderr);
        assert.match(stderr, /killed by SIGKILL|truncated/);
        assertNothingLeft(out);
      });
    }
  });
}
