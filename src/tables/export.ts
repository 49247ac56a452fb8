// One table out of a backup, without touching any live database: the table's data is restored
// into a throwaway server of the engine (the restore drill's: initdb'd PostgreSQL, a private
// MariaDB; for SQLite a private temp file), its row count checked against the manifest, and its
// rows read back through a cursor with every value rendered faithfully (render.ts). The throwaway
// server is always removed.

import { randomBytes } from 'node:crypto';
import { DbstashError, InterruptedError, RestoreEnvironmentError, RestoreError, VerifyUnavailableError } from '../core/errors.js';
import { mainArtifact } from '../catalog/manifest.js';
import type { RowSource, ScratchServer, TableRef, Target } from '../engines/engine.js';
import { checkStoredBytes, openArtifact } from '../verify/read.js';
import { checkPresence, required, type RestoreEvents } from '../restore/restore.js';
import { backupTables, checkRows, expectedRows, type TablesContext } from './common.js';
import { qualified, selectTables } from './select.js';
import { rowWriter, type ExportFormat } from './render.js';
import { writeRecord, type ExportRecord } from '../catalog/records.js';
import { TOOL_VERSION } from '../core/version.js';

export interface TableReadRequest extends TablesContext {
  table: string;
  where?: string;
  limit?: number;
  events: RestoreEvents;
}

/**
 * Restores one table of the backup into a throwaway server and hands it to `use` (the scratch
 * database and the table); the server is gone when this returns. The rows are those of the
 * backup: their count is checked against the manifest before `use` is called.
 */
async function withRestoredTable<T>(req: TableReadRequest, use: (db: Target, table: TableRef) => Promise<T>): Promise<T> {
  const { engine, manifest } = req;
  required(engine, 'export tables', 'restore', 'createDatabase', 'readRows', 'startScratchServer');
  await checkPresence(req.dest.storage, manifest, req.signal);
  const { tables: available, toc } = await backupTables(req);
  const selection = selectTables(available, [req.table], [], manifest.id);
  const table = selection.asked[0];
  const expected = expectedRows(manifest, selection.all);
  let server: ScratchServer;
  try {
    server = await engine.startScratchServer!({ tempDir: req.tempDir, signal: req.signal });
  } catch (err) {
    if (err instanceof InterruptedError || req.signal.aborted) throw err;
    throw new VerifyUnavailableError(`no throwaway ${engine.id} server to read the backup with: ${(err as Error).message}`, {
      hint: engine.id === 'postgres' ? 'install the PostgreSQL server package (initdb) of at least the backup\'s version' : 'install the MariaDB server package',
      cause: err,
    });
  }
  try {
    const db: Target = await engine.createDatabase!(server.target, `dbstash_export_${randomBytes(4).toString('hex')}`);
    const main = mainArtifact(manifest);
    req.events.info(`reading ${qualified(table)} of ${manifest.id} through a throwaway ${engine.id} server`);
    const raw = await openArtifact(req.dest.storage, manifest, main, req.stageContext, { signal: req.signal });
    try {
      await engine.restore!(db, raw, {
        signal: req.signal,
        format: main.format,
        noOwner: true,
        noPrivileges: true,
        noTablespaces: true,
        tempDir: req.tempDir,
        warn: req.events.warn,
        only: selection.all,
        toc,
        reread: () => openArtifact(req.dest.storage, manifest, main, req.stageContext, { signal: req.signal }),
      });
      // The tool had its table before the artifact's end: the stored bytes are proven whole on their own.
      if (!raw.readableEnded) await checkStoredBytes(req.dest.storage, manifest, main, req.signal);
    } catch (err) {
      if (err instanceof RestoreEnvironmentError) {
        throw new VerifyUnavailableError(`the throwaway server could not restore the dump, which says nothing about the backup: ${err.message}`, { cause: err });
      }
      throw err;
    } finally {
      raw.destroy();
    }
    await checkRows(engine, db, expected, req.signal);
    return await use(db, table);
  } catch (err) {
    throw err instanceof DbstashError ? err : new RestoreError(`reading ${req.table} from ${manifest.id} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    await server.stop().catch((err: Error) => req.events.warn(`could not remove the throwaway server: ${err.message}`));
  }
}

/** withRestoredTable, with the table's rows as cells (render.ts). */
export async function withTableRows<T>(req: TableReadRequest, use: (source: RowSource, table: string) => Promise<T>): Promise<T> {
  return withRestoredTable(req, async (db, table) => {
    const source = await req.engine.readRows!(db, table, { where: req.where, limit: req.limit, signal: req.signal });
    try {
      return await use(source, qualified(table));
    } finally {
      await source.close();
    }
  });
}

/** Characters of rendered rows per write to the sink. */
const WRITE_CHARS = 64 * 1024;

export interface ExportRequest extends TableReadRequest {
  format: ExportFormat;
  /** Where the rows go (for the record): a file, or "-". */
  output: string;
  /** Writes rendered text, waiting while the sink is full. */
  write(text: string | Buffer): Promise<void>;
  now?: Date;
}

/** Exports one table of the backup and leaves an export record beside it, also when it fails. */
export async function exportTable(req: ExportRequest): Promise<{ table: string; rows: number; record: ExportRecord }> {
  const started = Date.now();
  const record: ExportRecord = {
    kind: 'export',
    id: req.manifest.id,
    table: req.table,
    format: req.format,
    output: req.output,
    result: 'failed',
    at: (req.now ?? new Date()).toISOString(),
    durationMs: 0,
    toolVersion: TOOL_VERSION,
  };
  let rows = 0;
  try {
    await withRestoredTable(req, async (db, table) => {
      record.table = qualified(table);
      const opts = { where: req.where, limit: req.limit, signal: req.signal };
      if (req.engine.readRendered) {
        // The server renders the lines; their bytes are written as they come.
        const source = await req.engine.readRendered(db, table, { ...opts, format: req.format });
        try {
          await req.write(rowWriter(req.format, source.columns).head());
          for await (const piece of source.pieces) {
            await req.write(piece.bytes);
            rows += piece.rows;
          }
        } finally {
          await source.close();
        }
        return;
      }
      const source = await req.engine.readRows!(db, table, opts);
      try {
        const writer = rowWriter(req.format, source.columns);
        // Rows leave in pieces of about WRITE_CHARS, not one write (and one wait) per row.
        let pending = writer.head();
        let rendered = 0;
        for await (const cells of source.rows) {
          pending += writer.row(cells);
          rendered++;
          if (pending.length >= WRITE_CHARS) {
            await req.write(pending);
            pending = '';
            rows = rendered;
          }
        }
        await req.write(pending);
        rows = rendered;
      } finally {
        await source.close();
      }
    });
    record.result = 'succeeded';
    return { table: record.table, rows, record };
  } catch (err) {
    record.error = (err as Error).message;
    throw err;
  } finally {
    record.rows = rows;
    record.durationMs = Date.now() - started;
    await writeRecord(req.dest.storage, record).catch((e: Error) => req.events.warn(`could not write the export record: ${e.message}`));
  }
}
