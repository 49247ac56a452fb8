// What partial restores and exports share: which tables a stored backup holds (read from the dump's
// head where the engine can, else from the manifest), and checking restored tables' row counts
// against the manifest.

import type { Destination } from '../backup/backup.js';
import { RestoreError } from '../core/errors.js';
import { mainArtifact, type Manifest } from '../catalog/manifest.js';
import type { DumpTable, Engine, TableRef, Target } from '../engines/engine.js';
import type { StageContext } from '../pipeline/stage.js';
import { compareTables, summarizeProblems } from '../verify/compare.js';
import { openArtifact } from '../verify/read.js';
import { manifestTables, qualified } from './select.js';

export interface TablesContext {
  dest: Destination;
  manifest: Manifest;
  engine: Engine;
  stageContext: StageContext;
  tempDir: string;
  signal: AbortSignal;
}

/** The tables the backup holds, with their partitions, and what the engine read to tell (RestoreOptions.toc). */
export async function backupTables(ctx: TablesContext): Promise<{ tables: DumpTable[]; toc?: unknown }> {
  const main = mainArtifact(ctx.manifest);
  if (ctx.engine.dumpTables) {
    const raw = await openArtifact(ctx.dest.storage, ctx.manifest, main, ctx.stageContext, { signal: ctx.signal });
    try {
      const read = await ctx.engine.dumpTables(raw, { signal: ctx.signal, format: main.format, tempDir: ctx.tempDir, warn: () => {} });
      if (read) return read;
    } finally {
      raw.destroy();
    }
  }
  return { tables: manifestTables(ctx.manifest.tables) };
}

/** The manifest's row count of each table that holds rows of its own (partitioned parents hold none). */
export function expectedRows(manifest: Manifest, tables: TableRef[]): { schema: string; name: string; rows: number }[] {
  const listed = new Map(manifest.tables.map((t) => [qualified(t), t]));
  return tables.flatMap((t) => {
    const entry = listed.get(qualified(t));
    return entry ? [{ schema: t.schema, name: t.name, rows: entry.rows }] : [];
  });
}

/**
 * Counts `tables` in `db` (under the names `rename` gives them there) and compares with the
 * manifest; a RestoreError names the first mismatch.
 */
export async function checkRows(
  engine: Engine,
  db: Target,
  expected: { schema: string; name: string; rows: number }[],
  signal: AbortSignal,
  rename: (t: TableRef) => TableRef = (t) => t,
): Promise<number> {
  if (expected.length === 0) return 0;
  const wanted = expected.map(rename);
  const names = new Set(wanted.map(qualified));
  const counted = engine.countRows
    ? await engine.countRows(db, wanted, signal)
    : (await engine.tableStats!(db, { checksums: false, signal })).filter((s) => names.has(qualified(s)));
  const back = new Map(expected.map((t) => [qualified(rename(t)), t]));
  const stats = counted.map((s) => ({ ...s, ...(back.get(qualified(s)) ? { schema: back.get(qualified(s))!.schema, name: back.get(qualified(s))!.name } : {}) }));
  const { problems } = compareTables(expected.map((t) => ({ ...t })), stats, { checksums: false });
  if (problems.length > 0) {
    throw new RestoreError(`the restored tables do not match the manifest: ${summarizeProblems(problems)}`, { hint: 'the backup holds other data than its manifest says; try an older backup' });
  }
  return stats.reduce((s, t) => s + t.rows, 0);
}
