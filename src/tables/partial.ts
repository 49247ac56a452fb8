// A partial restore: some tables of a backup put back BESIDE the live ones, nothing live touched.
//   1. the tables are found in the backup (its table of contents, else the manifest), partitioned
//      ones with their partitions; a name it does not hold is refused with the closest ones;
//   2. the plan, then the caller's confirmation (--dry-run stops here);
//   3. with the target's restore lock held, a new database "<target>_restoring_<stamp>" on the
//      target's server (SQLite: a file beside it) receives those tables' data only, while the
//      artifact's size, SHA-256 and decoding are checked as it streams; their row counts are
//      checked against the manifest;
//   4. the engine moves them into the target under new names (PostgreSQL: a schema
//      "dbstash_restored_<stamp>"; MySQL and SQLite: "<table>__restored_<stamp>"), all or nothing,
//      and they are counted again there;
//   5. the new database is dropped, whatever happened; a record is left beside the backup.

import { DbstashError, RestoreError, UsageError } from '../core/errors.js';
import { mainArtifact } from '../catalog/manifest.js';
import { writeRecord, type RestoreRecord } from '../catalog/records.js';
import { acquireLease } from '../catalog/lease.js';
import { replacedName, type PlacedTable, type TableRef, type Target } from '../engines/engine.js';
import { checkStoredBytes, openArtifact } from '../verify/read.js';
import { checkIntegrity } from '../verify/verify.js';
import { checkPresence, dropLeftovers, newRecord, required, type RestoreEvents, type RestoreRequest } from '../restore/restore.js';
import { restoringName, stamp as stampOf } from '../restore/kept.js';
import { backupTables, checkRows, expectedRows, type TablesContext } from './common.js';
import { qualified, selectTables } from './select.js';

export interface PartialRequest extends TablesContext {
  target: Target;
  /** --table specs and --schema names. */
  tables: string[];
  schemas: string[];
  noOwner?: boolean;
  /** Swap the restored table in for the live one (kept as <table>__before_<stamp>). */
  replace?: boolean;
  /** With replace: also re-point other tables' foreign keys to the restored table. */
  cascade?: boolean;
  events: RestoreEvents;
  dryRun?: boolean;
  now?: Date;
}

export interface PartialPlan {
  backup: { id: string; takenAt: string; storage: string };
  target: string;
  engine: string;
  /** Every table that comes back (partitions included), with the manifest's rows. */
  tables: { table: string; rows?: number; partitionOf?: string }[];
  /** The new database the tables are restored into first. */
  temporary: string;
  /** Where the tables land in the target. */
  into: string;
  check: string;
  /** --replace: the live table, its kept name, and what follows it and what does not. */
  replace?: { table: string; keptAs: string; follow: string[]; stay: string[]; referencedBy: string[]; cascade: boolean };
}

export interface PartialOutcome {
  plan: PartialPlan;
  performed: boolean;
  placed?: (PlacedTable & { rows?: number })[];
  /** --replace: the live tables as they were kept. */
  kept?: TableRef[];
  record?: RestoreRecord;
  recordKey?: string;
}

export async function runPartialRestore(req: PartialRequest, confirm: (plan: PartialPlan) => Promise<boolean>): Promise<PartialOutcome> {
  const { engine, manifest, target } = req;
  const now = req.now ?? new Date();
  if (target.engine !== manifest.engine) throw new UsageError(`${manifest.id} is a ${manifest.engine} backup; ${target.displayUrl} is ${target.engine}`);
  required(engine, 'restore single tables', 'restore', 'createDatabase', 'dropDatabase', 'databaseExists', 'placeBeside');
  if (!(await engine.databaseExists!(target))) {
    throw new UsageError(`${target.displayUrl} does not exist: single tables are restored beside the tables of a live database`, {
      hint: 'restore the whole backup there instead (without --table)',
    });
  }
  await checkPresence(req.dest.storage, manifest, req.signal);
  const { tables: available, toc } = await backupTables(req);
  const selection = selectTables(available, req.tables, req.schemas, manifest.id);
  const parentOf = new Map<string, string>();
  for (const t of selection.all) for (const c of t.children) parentOf.set(qualified(c), qualified(t));
  const expected = expectedRows(manifest, selection.all);
  const rowsOf = new Map(expected.map((t) => [qualified(t), t.rows]));
  const stamp = stampOf(now);
  const plan: PartialPlan = {
    backup: { id: manifest.id, takenAt: manifest.startedAt, storage: req.dest.storage.url },
    target: target.displayUrl,
    engine: engine.id,
    tables: selection.all.map((t) => ({ table: qualified(t), rows: rowsOf.get(qualified(t)), partitionOf: parentOf.get(qualified(t)) })),
    temporary: restoringName(target.database, now),
    into: engine.id === 'postgres' ? `schema dbstash_restored_${stamp} of ${target.database}` : `<table>__restored_${stamp} in ${target.database}`,
    check: `size, SHA-256 and decoding while streaming into ${restoringName(target.database, now)}; row counts there and again after the move`,
  };
  if (req.replace) {
    if (selection.asked.length !== 1) throw new UsageError('--replace takes one table at a time (its partitions come with it)');
    if (!engine.replaceImpact || !engine.replaceTables) {
      throw new UsageError(`--replace is not available for ${engine.id} yet`, { hint: 'restore the table beside the live one (without --replace) and swap the names by hand' });
    }
    const table = selection.asked[0];
    const impact = await engine.replaceImpact(target, table, selection.all, stamp);
    const keptAs = replacedName(table.name, stamp);
    plan.replace = { table: engine.id === 'postgres' ? qualified(table) : table.name, keptAs: engine.id === 'postgres' ? `${table.schema}.${keptAs}` : keptAs, ...impact, cascade: !!req.cascade };
    if (impact.referencedBy.length > 0 && !req.cascade && !req.dryRun) {
      throw new UsageError(`${qualified(table)} is referenced by other tables (${impact.referencedBy.join('; ')}): --replace refuses it`, {
        hint: 'see the steps with --dry-run --cascade-plan, and run with --cascade-plan to re-point those foreign keys to the restored table',
      });
    }
  }
  if (req.dryRun) {
    // A dry run answers "would this work" in full, as restore --dry-run does: the whole backup verified.
    const { structure } = await checkIntegrity(req.dest.storage, manifest, engine, { stageContext: req.stageContext, tempDir: req.tempDir, signal: req.signal, warn: req.events.warn });
    plan.check = `verified whole now (${structure}); a real run checks while streaming into ${plan.temporary}`;
  }
  if (!(await confirm(plan))) return { plan, performed: false };

  const lock = await engine.lockRestoreTarget?.(target, req.signal);
  const started = Date.now();
  const record: RestoreRecord = { ...newRecord(req, now), mode: 'tables', tables: plan.tables.map((t) => t.table) };
  const lease = await acquireLease(req.dest.storage, manifest.id, `dbstash restore --table → ${target.displayUrl}`).catch(() => undefined);
  const outcome: PartialOutcome = { plan, performed: true, record };
  try {
    await dropLeftovers({ engine, target, events: req.events } as RestoreRequest);
    const placed = await restoreBeside(req, plan, selection.all, expected, stamp, toc);
    // Foreign keys to tables that were not restored never made it into the new database.
    const chosen = new Set(selection.all.map(qualified));
    for (const p of placed) {
      const t = selection.all.find((s) => qualified(s) === qualified(p.from));
      for (const ref of t?.references ?? []) {
        const note = `foreign key ${ref.constraint} → ${ref.table.name} (not restored)`;
        if (!chosen.has(qualified(ref.table)) && !p.left.some((l) => l.startsWith(`foreign key ${ref.constraint} `))) p.left.unshift(note);
      }
    }
    record.placed = placed.map((p) => ({ from: qualified(p.from), to: qualified(p.to), rows: p.rows, left: p.left }));
    let kept: TableRef[] | undefined;
    if (plan.replace) {
      kept = await engine.replaceTables!(target, placed, stamp, { cascade: !!req.cascade, signal: req.signal });
      record.replaced = kept.map(qualified);
      const rows = await checkRows(engine, target, expected, req.signal);
      req.events.info(`replaced ${plan.replace.table} by the restored table (${rows} rows, counts match the manifest); the old one is kept as ${plan.replace.keptAs}`);
    }
    record.result = 'succeeded';
    Object.assign(outcome, { placed, kept });
    return outcome;
  } catch (err) {
    record.error = (err as Error).message;
    throw err instanceof DbstashError ? err : new RestoreError(`restore of ${plan.tables.map((t) => t.table).join(', ')} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    record.durationMs = Date.now() - started;
    // The caller reads the key from the outcome once this has run.
    outcome.recordKey = await writeRecord(req.dest.storage, record).catch((e: Error) => {
      req.events.warn(`could not write the restore record: ${e.message}`);
      return undefined;
    });
    await lease?.release().catch(() => {});
    await lock?.release().catch(() => {});
  }
}

async function restoreBeside(
  req: PartialRequest,
  plan: PartialPlan,
  tables: TableRef[],
  expected: { schema: string; name: string; rows: number }[],
  stamp: string,
  toc: unknown,
): Promise<(PlacedTable & { rows?: number })[]> {
  const { engine, manifest, target } = req;
  const main = mainArtifact(manifest);
  const scratch = await engine.createDatabase!(target, plan.temporary, { properties: manifest.database.properties, noOwner: req.noOwner });
  req.events.info(`restoring ${tables.length} table(s) of ${manifest.id} into the new database ${scratch.displayUrl}`);
  try {
    const raw = await openArtifact(req.dest.storage, manifest, main, req.stageContext, { signal: req.signal });
    try {
      await engine.restore!(scratch, raw, {
        signal: req.signal,
        format: main.format,
        noOwner: req.noOwner,
        tempDir: req.tempDir,
        warn: req.events.warn,
        only: tables,
        toc,
        reread: () => openArtifact(req.dest.storage, manifest, main, req.stageContext, { signal: req.signal }),
      });
      // The tool had its tables before the artifact's end: the stored bytes are proven whole on their own.
      if (!raw.readableEnded) await checkStoredBytes(req.dest.storage, manifest, main, req.signal);
    } finally {
      raw.destroy();
    }
    await checkRows(engine, scratch, expected, req.signal);
    const placed = await engine.placeBeside!(scratch, target, tables, stamp, { signal: req.signal, tempDir: req.tempDir, noOwner: req.noOwner });
    const to = new Map(placed.map((p) => [qualified(p.from), p.to]));
    const rows = await checkRows(engine, target, expected, req.signal, (t) => to.get(qualified(t)) ?? t);
    req.events.info(`${placed.length} table(s) beside the live ones in ${target.displayUrl}, ${rows} rows, counts match the manifest`);
    const rowsOf = new Map(expected.map((t) => [qualified(t), t.rows]));
    return placed.map((p) => ({ ...p, rows: rowsOf.get(qualified(p.from)) }));
  } finally {
    await engine.dropDatabase!(scratch).catch((err: Error) => req.events.warn(`could not drop the temporary database ${scratch.displayUrl}: ${err.message}; drop it by hand`));
  }
}
