// `dbstash export <id> | latest --table T --format jsonl|csv [--output FILE|-] [--where SQL]
// [--limit N]`: one table of a backup out as JSON Lines or CSV, read through a throwaway server,
// no live database touched. `dbstash show <id> | latest [--table T]`: what a backup holds (its
// tables and row counts), or the first rows of one table as a terminal table.

import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { formatAge, formatBytes, renderTable } from '../core/format.js';
import { totalRows } from '../catalog/manifest.js';
import { seriesOfManifest } from '../catalog/series.js';
import { configEntryOf } from '../retention/config.js';
import { loadEngine } from '../engines/index.js';
import { exportTable, withTableRows } from '../tables/export.js';
import { cellText, type ExportFormat } from '../tables/render.js';
import type { Cell } from '../engines/engine.js';
import { commonOptions, runCommand, stashOptions, type CommonOptions, type Context } from './common.js';
import { decryptionOptions, stageContext, type SecretOptions } from './secrets.js';
import { locateRequested } from './restore.js';
import { configEntry } from './verify.js';

interface TableCliOptions extends CommonOptions, SecretOptions {
  table?: string;
  format?: string;
  output?: string;
  where?: string;
  limit?: string;
  database?: string;
  at?: string;
  tempDir?: string;
}

function parseLimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--limit must be a whole number, got "${text}"`);
  return n;
}

function request(opts: TableCliOptions, ctx: Context, located: Awaited<ReturnType<typeof locateRequested>>, engine: Awaited<ReturnType<typeof loadEngine>>, limit?: number) {
  const config = ctx.loaded.config;
  return {
    dest: located.dest,
    manifest: located.manifest,
    engine,
    table: opts.table!,
    where: opts.where,
    limit,
    stageContext: stageContext(opts, config, configEntryOf(config, seriesOfManifest(located.manifest).identity) ?? configEntry(config, opts.database)),
    tempDir: opts.tempDir ?? config.tempDir ?? os.tmpdir(),
    signal: ctx.signal,
    events: { info: (m: string) => ctx.out.info(m), warn: (m: string) => ctx.out.warn(m) },
  };
}

/** The flags export and show share: which backup, which rows, the secrets to read it, the stash, the common ones. */
function tableOptions(cmd: Command): Command {
  cmd
    .option('--database <name>', 'with "latest": the database whose newest backup to read')
    .option('--at <time>', 'with "latest": the newest backup at or before this time (ISO UTC, or an age like 36h)')
    .option('--where <sql>', 'only the rows matching this SQL condition (as in a WHERE clause)')
    .option('--temp-dir <dir>', 'directory for scratch files and the throwaway server (default: the system temp dir)');
  decryptionOptions(cmd);
  stashOptions(cmd);
  return commonOptions(cmd, { codes: [4, 7, 8, 9, 10, 11, 130] });
}

/** Writes to a temp name beside FILE and renames at the end: a failed export leaves no FILE behind. */
async function openOutput(output: string): Promise<{ sink: Writable; commit(): Promise<void>; abort(): Promise<void> }> {
  if (output === '-') {
    return { sink: process.stdout, commit: async () => {}, abort: async () => {} };
  }
  const temp = path.join(path.dirname(output), `.${path.basename(output)}.dbstash-${process.pid}.tmp`);
  const sink = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
  await once(sink, 'open');
  const closed = () => new Promise<void>((resolve, reject) => sink.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return {
    sink,
    commit: async () => {
      await closed();
      await rename(temp, output);
    },
    abort: async () => {
      sink.destroy();
      await rm(temp, { force: true });
    },
  };
}

async function write(sink: Writable, text: string | Buffer): Promise<void> {
  if (text.length > 0 && !sink.write(text)) await once(sink, 'drain');
}

export function registerExport(program: Command): void {
  const cmd = program
    .command('export')
    .description('one table of a backup out as JSON Lines or CSV, without touching any live database')
    .argument('<backup>', 'backup id, or "latest"')
    .option('--table <schema.table>', 'the table to export')
    .option('--format <format>', 'jsonl or csv', 'jsonl')
    .option('--output <file>', 'write to this file (created 0600, complete or not at all); "-" for stdout', '-')
    .option('--limit <n>', 'at most this many rows');
  tableOptions(cmd);
  cmd.addHelpText(
    'after',
    `
The table's data is restored into a throwaway server (PostgreSQL, MariaDB) or a private temp file
(SQLite), its row count checked against the manifest, and read back with a cursor. Values keep
their exact form: JSON numbers with every digit, JSON columns as JSON, binary as base64, times in
ISO 8601 (with Z where the type has a zone). CSV: a header line, NULL as an empty field, "" for an
empty string.

Examples:
  dbstash export latest --database shop --table public.orders --format jsonl > orders.jsonl
  dbstash export shop_prod_2026-11-23T08-07-00Z --table orders --format csv --where "total > 100" --output big.csv`,
  );
  cmd.action((what: string, opts: TableCliOptions) =>
    runCommand(opts, async (ctx) => {
      if (!opts.table) throw new UsageError('say which table: --table <schema.table>');
      if (opts.format !== 'jsonl' && opts.format !== 'csv') throw new UsageError(`--format must be jsonl or csv, got "${opts.format}"`);
      const output = opts.output ?? '-';
      if (ctx.out.json && output === '-') throw new UsageError('--json prints the summary on stdout: give the rows a file with --output FILE');
      const limit = parseLimit(opts.limit);
      const located = await locateRequested(what, opts, ctx);
      const engine = await loadEngine(located.manifest.engine);
      const format = opts.format as ExportFormat;
      const out = await openOutput(output);
      let done;
      try {
        done = await exportTable({ ...request(opts, ctx, located, engine, limit), format, output, write: (text) => write(out.sink, text) });
        await out.commit();
      } catch (err) {
        await out.abort();
        throw err;
      }
      const { rows, table } = done;
      ctx.out.info(`exported ${rows} row(s) of ${table} from ${located.manifest.id}${output === '-' ? '' : ` to ${output}`}`);
      if (ctx.out.json) ctx.out.result({ ok: true, id: located.manifest.id, table, format, rows, output }, () => '');
      return ExitCode.ok;
    }),
  );
}

export function registerShow(program: Command): void {
  const cmd = program
    .command('show')
    .description('what a backup holds (tables and row counts), or the first rows of one of its tables')
    .argument('<backup>', 'backup id, or "latest"')
    .option('--table <schema.table>', 'print the first rows of this table (read through a throwaway server)')
    .option('--limit <n>', 'with --table: how many rows', '20');
  tableOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Examples:
  dbstash show latest --database shop                         # tables and row counts
  dbstash show latest --database shop --table public.orders   # the first 20 rows
  dbstash show shop_prod_2026-11-23T08-07-00Z --table orders --where "total > 100" --limit 5`,
  );
  cmd.action((what: string, opts: TableCliOptions) =>
    runCommand(opts, async (ctx) => {
      const located = await locateRequested(what, opts, ctx);
      const m = located.manifest;
      if (!opts.table) {
        ctx.out.result({ id: m.id, engine: m.engine, takenAt: m.startedAt, database: m.database, tables: m.tables, artifacts: m.artifacts }, () =>
          [
            `${m.id}: ${m.engine} ${m.database.name ?? ''}, taken ${m.startedAt.slice(0, 19).replace('T', ' ')} UTC (${formatAge(new Date(m.startedAt))}), ${formatBytes(m.artifacts.reduce((s, a) => s + a.size, 0))} stored`,
            `${m.tables.length} tables, ${totalRows(m)} rows:`,
            renderTable(['TABLE', 'ROWS'], m.tables.map((t) => [`${t.schema}.${t.name}`, String(t.rows)])),
          ].join('\n'),
        );
        return ExitCode.ok;
      }
      const limit = parseLimit(opts.limit) ?? 20;
      const engine = await loadEngine(m.engine);
      const width = Math.max(8, Math.floor(((process.stdout.columns ?? 120) - 2) / 4));
      await withTableRows(request(opts, ctx, located, engine, limit), async (source, table) => {
        const rows: Cell[][] = [];
        for await (const cells of source.rows) rows.push(cells);
        ctx.out.result({ id: m.id, table, columns: source.columns, rows: rows.map((r) => r.map((c) => cellText(c, 1 << 20))) }, () =>
          [`${table} in ${m.id} (first ${rows.length} row${rows.length === 1 ? '' : 's'}${opts.where ? ` where ${opts.where}` : ''}):`, renderTable(source.columns.map((c) => c.name), rows.map((r) => r.map((c) => cellText(c, width))))].join('\n'),
        );
      });
      return ExitCode.ok;
    }),
  );
}
