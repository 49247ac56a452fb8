// Restore orchestration, engine- and storage-agnostic. Safety comes first, in this order:
//   1. the backup is checked before the target is touched. A restore into a NEW database (the
//      target does not exist, or a swap is possible) checks in one pass: every artifact is present
//      with the manifest's size, the small ones (globals) are verified completely, and the main
//      dump's size, SHA-256, decoding and raw size are checked while it streams into the new
//      database; anything that fails drops the new database before the swap could happen. A
//      restore that must touch the target in place (step 4) and a dry run verify the whole backup
//      (level 1) first, as `dbstash verify` does; the plan says which path is taken;
//   2. the plan (backup, age, size, target, whether it exists and holds data, sessions), then the
//      caller's confirmation; --dry-run stops here;
//   3. restore into a NEW database "<name>_restoring_<stamp>", check its row counts against the
//      manifest, and only then swap names: the old database is kept as "<name>_before_<stamp>"
//      (dropped with --drop-old). A failed or interrupted restore drops the new database and
//      leaves the original untouched: even a checksum mismatch found only at the stream's end
//      never reaches the target, and a restore tool that stops on damaged bytes is reported as
//      the damage it is (the artifact is still read to its end), not as a failed restore.
//   4. where a swap is impossible (no CREATEDB, SQLite file in use), a safety backup of the
//      target is taken with dbstash's own backup, the backup is restored in place, and a failure
//      restores the safety backup (rollback); both outcomes are reported.
// Every run that got past the check of step 1 leaves a restore record beside the backup.

import { DbstashError, IntegrityError, InterruptedError, RestoreError, UsageError, withOutcome } from '../core/errors.js';
import { TOOL_VERSION } from '../core/version.js';
import { runBackup, type Destination } from '../backup/backup.js';
import { mainArtifact, totalRows, type Manifest } from '../catalog/manifest.js';
import { writeRecord, type RestoreRecord } from '../catalog/records.js';
import { acquireLease } from '../catalog/lease.js';
import { withDatabase, type CreateDatabaseOptions, type Engine, type RestoreOptions, type Target } from '../engines/engine.js';
import { compressionStage } from '../pipeline/compress.js';
import type { StageContext } from '../pipeline/stage.js';
import type { Storage } from '../storage/storage.js';
import { compareTables, summarizeProblems } from '../verify/compare.js';
import { openArtifact } from '../verify/read.js';
import { checkIntegrity } from '../verify/verify.js';
import { artifactDamage } from '../verify/locate.js';
import { keptName, restoringName, unfinishedRestores } from './kept.js';
import { RowCounter } from './counts.js';

export interface RestoreEvents {
  info(message: string): void;
  warn(message: string): void;
  /** Stored bytes read so far while restoring. */
  progress?(bytes: number): void;
}

export interface RestoreRequest {
  dest: Destination;
  manifest: Manifest;
  engine: Engine;
  target: Target;
  jobs?: number;
  noOwner?: boolean;
  roleMap?: Record<string, string>;
  withGlobals?: boolean;
  dropOld?: boolean;
  /** Terminate other sessions on the target (they are listed in the log). */
  force?: boolean;
  stageContext: StageContext;
  tempDir: string;
  signal: AbortSignal;
  events: RestoreEvents;
  /** Check and plan only: no record is written (the caller's confirm returns false). */
  dryRun?: boolean;
  now?: Date;
}

export type RestoreMode = 'new' | 'swap' | 'in-place';

/**
 * When the main dump is checked: "streaming" — while it is restored into the new database, before
 * the swap (one read); "before" — completely, before the target is touched (in place).
 */
export type RestoreCheck = 'streaming' | 'before';

export interface RestorePlan {
  backup: { id: string; takenAt: string; ageMs: number; size: number; rawSize: number; tables: number; rows: number; storage: string };
  /** What was checked before the plan: the engine's summary of the dump, or what the one-pass check covers. */
  structure: string;
  check: RestoreCheck;
  target: string;
  /** The target's database name (SQLite: its file name without the extension). */
  database: string;
  engine: string;
  targetExists: boolean;
  /** Tables and rows in the target now (when it exists); rows may be an estimate, undefined when unknown. */
  targetTables?: number;
  targetRows?: number;
  sessions: string[];
  mode: RestoreMode;
  /** Why the swap is impossible (in-place mode). */
  swapBlocker?: string;
  temporary?: string;
  keptAs?: string;
  dropOld: boolean;
  globals: boolean;
}

export interface RestoreOutcome {
  plan: RestorePlan;
  performed: boolean;
  record?: RestoreRecord;
  recordKey?: string;
}

/** What the caller decides after seeing the plan: go on, or stop (dry run / not confirmed). */
export type Confirm = (plan: RestorePlan) => Promise<boolean>;

/** A RestoreError unless the engine has these methods ("the postgres engine cannot <what> yet"). */
export function required<K extends keyof Engine>(engine: Engine, what: string, ...names: K[]): void {
  const missing = names.filter((n) => typeof engine[n] !== 'function');
  if (missing.length > 0) throw new RestoreError(`the ${engine.id} engine cannot ${what} yet (missing ${missing.join(', ')})`);
}

async function makePlan(req: RestoreRequest, now: Date): Promise<RestorePlan> {
  const { engine, target, manifest } = req;
  const main = mainArtifact(manifest);
  engine.prepareRestore?.(target);
  const exists = await engine.databaseExists!(target);
  const plan: RestorePlan = {
    backup: {
      id: manifest.id,
      takenAt: manifest.startedAt,
      ageMs: now.getTime() - new Date(manifest.startedAt).getTime(),
      size: manifest.artifacts.reduce((s, a) => s + a.size, 0),
      rawSize: main.rawSize,
      tables: manifest.tables.length,
      rows: totalRows(manifest),
      storage: req.dest.storage.url,
    },
    structure: '',
    check: 'streaming',
    target: target.displayUrl,
    database: target.database,
    engine: engine.id,
    targetExists: exists,
    sessions: [],
    mode: 'new',
    temporary: restoringName(target.database, now),
    dropOld: !!req.dropOld,
    globals: !!req.withGlobals && manifest.artifacts.some((a) => a.role === 'globals'),
  };
  if (!exists) return plan;
  // The row estimate connects to the target itself, so it is done before the sessions on the
  // target are listed; the swap question (asked of the server) goes beside them.
  const stats = await engine.tableStats!(target, { checksums: false, estimate: true, signal: req.signal });
  const [sessions, swapBlocker] = await Promise.all([
    engine.listSessions ? engine.listSessions(target) : [],
    engine.swapBlocker ? engine.swapBlocker(target) : undefined,
  ]);
  plan.targetTables = stats.length;
  plan.targetRows = stats.some((t) => t.rowsUnknown) ? undefined : stats.reduce((s, t) => s + t.rows, 0);
  plan.sessions = sessions;
  plan.swapBlocker = swapBlocker;
  if (plan.swapBlocker) {
    plan.mode = 'in-place';
    plan.check = 'before';
    plan.temporary = undefined;
  } else {
    plan.mode = 'swap';
    plan.keptAs = keptName(target.database, now);
  }
  return plan;
}

/** Sessions on the target: refused with their list, or terminated with --force. */
async function handleSessions(req: RestoreRequest, sessions: string[], record?: RestoreRecord): Promise<void> {
  if (sessions.length === 0 || !req.engine.terminateSessions) return;
  if (!req.force) {
    throw new RestoreError(`${sessions.length} other session(s) are connected to ${req.target.displayUrl}: ${sessions.join('; ')}`, {
      hint: 'stop those clients, or run again with --force to terminate the sessions',
    });
  }
  const n = await req.engine.terminateSessions(req.target);
  req.events.warn(`terminated ${n} session(s) on ${req.target.displayUrl} (--force): ${sessions.join('; ')}`);
  if (record) record.sessionsTerminated = [...((record.sessionsTerminated as string[] | undefined) ?? []), ...sessions];
}

function restoreOptions(req: RestoreRequest, extra: Partial<RestoreOptions> = {}): RestoreOptions {
  return {
    signal: req.signal,
    format: mainArtifact(req.manifest).format,
    jobs: req.jobs,
    noOwner: req.noOwner,
    roleMap: req.roleMap,
    tempDir: req.tempDir,
    warn: req.events.warn,
    ...extra,
  };
}

/**
 * Restores the main artifact into `into` and checks its row counts against the manifest. The
 * engines feed the artifact to their tool to its very end even when the tool stops early, so a
 * damaged artifact always ends the restore with the stream's IntegrityError (exit 7), whatever
 * the tool tripped on first.
 */
async function restoreAndCheck(req: RestoreRequest, into: Target, storage: Storage, manifest: Manifest, extra: Partial<RestoreOptions> = {}): Promise<{ tables: number; rows: number }> {
  const counter = new RowCounter(req.engine, into, manifest.tables, req.signal);
  const main = mainArtifact(manifest);
  const raw = await openArtifact(storage, manifest, main, req.stageContext, { signal: req.signal, onBytes: req.events.progress });
  const reread = () => openArtifact(storage, manifest, main, req.stageContext, { signal: req.signal });
  try {
    // In place the restore is one transaction (or a copy): nothing is committed before its end.
    const dataLoaded = extra.clean ? undefined : counter.loaded;
    await req.engine.restore!(into, raw, { ...restoreOptions(req, extra), format: main.format, dataLoaded, reread });
  } catch (err) {
    // The new database is dropped next: no count may still be connected to it.
    await counter.stop();
    throw err;
  } finally {
    raw.destroy();
  }
  const stats = await counter.finish();
  const { problems, extras } = compareTables(manifest.tables, stats, { checksums: false });
  // In place, tables the backup does not know were there before and are left alone; in a new
  // database they can only come from the dump, which then does not match its manifest.
  if (extra.clean) extras.forEach((e) => req.events.warn(`left in place: ${e.replace(/ rows restored, but the manifest does not list it$/, ' rows, not in the backup')}`));
  else problems.push(...extras);
  if (problems.length > 0) {
    throw new RestoreError(`the restored data does not match the manifest: ${summarizeProblems(problems)}`, {
      hint: 'the backup holds other data than its manifest says; try an older backup',
    });
  }
  return { tables: stats.length, rows: stats.reduce((s, t) => s + t.rows, 0) };
}

async function restoreGlobals(req: RestoreRequest): Promise<void> {
  const globals = req.manifest.artifacts.find((a) => a.role === 'globals');
  if (!globals || !req.engine.restoreGlobals) return;
  req.events.info(`applying the globals (roles) of ${req.manifest.id} to the target server`);
  const raw = await openArtifact(req.dest.storage, req.manifest, globals, req.stageContext, { signal: req.signal });
  try {
    await req.engine.restoreGlobals(req.target, raw, { ...restoreOptions(req), format: globals.format });
  } finally {
    raw.destroy();
  }
}

/**
 * The database-level properties the new database must get: the backup's own (recorded at backup
 * time), else — for backups made before they were recorded — those of the database it replaces.
 */
async function propertiesToCarry(req: RestoreRequest, plan: RestorePlan): Promise<CreateDatabaseOptions['properties']> {
  const recorded = req.manifest.database.properties;
  if (recorded) return recorded;
  if (!plan.targetExists || !req.engine.databaseProperties) return undefined;
  req.events.info(`${req.manifest.id} does not record the database's properties; carrying over those of ${req.target.displayUrl}`);
  return req.engine.databaseProperties(req.target);
}

/** Two renames, for engines that cannot swap in one step; the first is undone if the second fails. */
async function renamePair(req: RestoreRequest, temp: Target, keptAs: string): Promise<Target> {
  const { engine, target } = req;
  const kept = await engine.renameDatabase!(target, keptAs);
  try {
    await engine.renameDatabase!(temp, target.database);
  } catch (err) {
    await engine.renameDatabase!(kept, target.database).catch((e: Error) =>
      req.events.warn(`could not rename ${kept.displayUrl} back to ${target.database}: ${e.message}`),
    );
    throw err;
  }
  return kept;
}

/** New database, restore, check, then swap names (or just rename when the target is new). */
async function restoreBySwap(req: RestoreRequest, plan: RestorePlan, record: RestoreRecord): Promise<void> {
  const { engine, target } = req;
  const createOpts: CreateDatabaseOptions = { properties: await propertiesToCarry(req, plan), noOwner: req.noOwner, roleMap: req.roleMap };
  const temp = await engine.createDatabase!(target, plan.temporary!, createOpts);
  req.events.info(`restoring into the new database ${temp.displayUrl}`);
  let swapped = false;
  try {
    try {
      record.rowCheck = await restoreAndCheck(req, temp, req.dest.storage, req.manifest);
    } catch (err) {
      // A damaged artifact stays a verification failure (7); anything else that stops the restore
      // into the new database is a failed restore (9) that left the target as it was.
      if (err instanceof RestoreError && !req.signal.aborted) {
        throw new RestoreError(`restore failed: ${err.message}; ${target.displayUrl} was not touched`, { hint: err.hint, cause: err });
      }
      if (err instanceof IntegrityError && !req.signal.aborted) throw withOutcome(err, `${target.displayUrl} was not touched`);
      throw err;
    }
    if (createOpts.properties && engine.compareProperties) {
      const differences = await engine.compareProperties(temp, createOpts.properties, createOpts);
      if (differences.length > 0) {
        throw new RestoreError(`the restored database's own properties differ from the backup's: ${differences.join('; ')}`, {
          hint: `${target.displayUrl} was not touched; the new database was dropped`,
        });
      }
    }
    if (plan.targetExists) {
      await handleSessions(req, await engine.listSessions!(target), record);
      const kept = engine.swapDatabases ? await engine.swapDatabases(target, temp, plan.keptAs!) : await renamePair(req, temp, plan.keptAs!);
      swapped = true;
      record.keptAs = plan.keptAs;
      req.events.info(`swapped: ${target.database} is the restored database; the old one is kept as ${plan.keptAs}`);
      if (plan.dropOld) {
        // The restore itself succeeded; a kept database that will not drop is only reported.
        await engine.dropDatabase!(kept).then(
          () => {
            record.droppedOld = true;
            req.events.info(`dropped ${plan.keptAs} (--drop-old)`);
          },
          (e: Error) => req.events.warn(`could not drop ${plan.keptAs} (--drop-old): ${e.message}; drop it by hand`),
        );
      }
    } else {
      await engine.renameDatabase!(temp, target.database);
      swapped = true;
    }
  } catch (err) {
    if (swapped) throw err;
    const dropped = await engine.dropDatabase!(temp).then(
      () => true,
      (e: Error) => (req.events.warn(`could not drop the temporary database ${temp.displayUrl}: ${e.message}`), false),
    );
    throw dropped && err instanceof Error && !(err instanceof InterruptedError) ? withOutcome(err, `the new database ${temp.database} was dropped`) : err;
  }
}

/** Safety backup, restore in place, and on failure restore the safety backup (rollback). */
async function restoreInPlace(req: RestoreRequest, plan: RestorePlan, record: RestoreRecord): Promise<void> {
  const { target } = req;
  req.events.warn(`a swap is impossible (${plan.swapBlocker}): restoring in place after a safety backup`);
  await handleSessions(req, await req.engine.listSessions!(target), record);
  const compress = compressionStage('zstd');
  const safety = await runBackup(
    {
      target,
      env: req.manifest.environment,
      destinations: [{ ...req.dest, optional: false }],
      stages: compress ? [compress] : [],
      globals: false,
      checksums: false,
      kind: 'safety',
      labels: { 'dbstash.safety-backup-before-restoring': req.manifest.id },
      tempDir: req.tempDir,
      space: { ratio: 1, margin: 1.1 },
      forceUnlock: false,
    },
    { info: req.events.info, warn: req.events.warn },
    req.signal,
  );
  record.safetyBackup = safety.manifest.id;
  req.events.info(`safety backup of ${target.displayUrl}: ${safety.manifest.id}`);
  try {
    record.rowCheck = await restoreAndCheck(req, target, req.dest.storage, req.manifest, { clean: true });
  } catch (err) {
    // Interrupted or failed, the target may be half-restored (MySQL DDL is not transactional):
    // it gets the safety backup back either way. The rollback is not tied to the interrupted
    // signal; a second interrupt from the user ends the process.
    const interrupted = req.signal.aborted;
    const reason = interrupted ? 'interrupted' : (err as Error).message;
    req.events.warn(`restore in place ${interrupted ? 'interrupted' : `failed (${reason})`}; restoring the safety backup ${safety.manifest.id}`);
    const rollback: RestoreRequest = { ...req, signal: new AbortController().signal };
    try {
      await restoreAndCheck(rollback, target, req.dest.storage, safety.manifest, { clean: true, roleMap: undefined });
      if (interrupted) {
        record.rollback = 'succeeded';
        const why = req.signal.reason;
        throw why instanceof InterruptedError ? why.withOutcome(`rolled back: ${target.displayUrl} holds the safety backup ${safety.manifest.id} again`) : err;
      }
      record.rollback = 'succeeded';
      record.result = 'rolled-back';
    } catch (rollbackErr) {
      if (rollbackErr instanceof InterruptedError) throw rollbackErr;
      record.rollback = `failed: ${(rollbackErr as Error).message}`;
      throw new RestoreError(`restore failed: ${reason}; the rollback failed too: ${(rollbackErr as Error).message}`, {
        hint: `the safety backup ${safety.manifest.id} holds the database as it was; restore it by hand (see docs/restoring.md)`,
        cause: err,
      });
    }
    throw new RestoreError(`restore failed: ${reason}; rolled back: ${target.displayUrl} holds the safety backup ${safety.manifest.id} again`, {
      hint: 'the database is as it was before; fix the cause above and run the restore again',
      cause: err,
    });
  }
}

/** A restore record, failed until said otherwise. */
export function newRecord(req: Pick<RestoreRequest, 'manifest' | 'target'>, now: Date): RestoreRecord {
  return {
    kind: 'restore',
    id: req.manifest.id,
    target: req.target.displayUrl,
    result: 'failed',
    at: now.toISOString(),
    durationMs: 0,
    toolVersion: TOOL_VERSION,
  };
}

export async function runRestore(req: RestoreRequest, confirm: Confirm): Promise<RestoreOutcome> {
  const { engine, manifest, target } = req;
  const now = req.now ?? new Date();
  if (target.engine !== manifest.engine) {
    throw new UsageError(`${manifest.id} is a ${manifest.engine} backup; ${target.displayUrl} is ${target.engine}`);
  }
  required(engine, 'restore', 'restore', 'tableStats', 'databaseExists', 'createDatabase', 'dropDatabase', 'renameDatabase');
  const storage = req.dest.storage;
  const plan = await makePlan(req, now);
  try {
    plan.structure = await checkBackup(req, plan);
  } catch (err) {
    // A refused restore is recorded too: the record says which backup was found damaged, and when.
    if (err instanceof IntegrityError && !req.dryRun && !req.signal.aborted) {
      await writeRecord(storage, { ...newRecord(req, now), error: `refused before touching the target: ${err.message}` }).catch(() => undefined);
    }
    throw err;
  }
  if (req.withGlobals && !plan.globals) req.events.warn(`${manifest.id} holds no globals (it was taken without --globals); roles are not restored`);
  if (!req.force) await handleSessions(req, plan.sessions);
  if (!(await confirm(plan))) return { plan, performed: false };

  const targetLock = await engine.lockRestoreTarget?.(target, req.signal);
  try {
    await dropLeftovers(req);
    return await performRestore(req, plan, now);
  } finally {
    await targetLock?.release().catch(() => {});
  }
}

/**
 * Step 1: what is checked before the plan is shown. Verifying everything first costs a whole read
 * of the backup; a restore into a new database does not need it (the swap waits for the stream's
 * checks), so it checks here only what is cheap: every artifact is there with its size, and the
 * small artifacts (globals, applied to the server before the main dump) are verified whole. A dry
 * run verifies everything, so that it answers "would this restore work" in full.
 */
async function checkBackup(req: RestoreRequest, plan: RestorePlan): Promise<string> {
  const { manifest, engine } = req;
  const storage = req.dest.storage;
  const opts = { stageContext: req.stageContext, tempDir: req.tempDir, signal: req.signal, warn: req.events.warn };
  if (plan.check === 'before' || req.dryRun) {
    req.events.info(`verifying ${manifest.id} before touching anything`);
    const { structure } = await checkIntegrity(storage, manifest, engine, opts);
    return plan.check === 'before' ? structure : `${structure} (the restore itself checks while streaming into ${plan.temporary}, before the swap)`;
  }
  await checkPresence(storage, manifest, req.signal);
  const small = manifest.artifacts.filter((a) => a.role !== 'main');
  if (small.length > 0) await checkIntegrity(storage, { ...manifest, artifacts: small }, engine, opts);
  return `${manifest.artifacts.length === 1 ? 'the artifact is' : `all ${manifest.artifacts.length} artifacts are`} present with the manifest's sizes; size, SHA-256 and decoding are checked while streaming into ${plan.temporary}, before the swap`;
}

/** Every artifact is stored, with the size the manifest gives. */
export async function checkPresence(storage: Storage, manifest: Manifest, signal: AbortSignal): Promise<void> {
  const damage = await artifactDamage(storage, manifest, signal);
  if (damage) {
    throw new IntegrityError(`${damage} in ${storage.url}`, {
      hint: 'the stored backup is not whole; use another copy of this backup, or an older backup',
    });
  }
}

/**
 * Temporary databases of restores into this target that were killed before they could drop them
 * (kill -9, a power cut). With the target's restore lock held, no other restore into it runs, so
 * every "<target>_restoring_<stamp>" on the server is such a leftover.
 */
export async function dropLeftovers(req: RestoreRequest): Promise<void> {
  const { engine, target } = req;
  if (!engine.lockRestoreTarget || !engine.dropDatabase) return;
  for (const name of await unfinishedRestores(engine, target)) {
    try {
      await engine.dropDatabase(withDatabase(target, name));
      req.events.warn(`dropped ${name}, left by an earlier restore into ${target.database} that did not finish`);
    } catch (err) {
      req.events.warn(`${name} was left by an earlier restore into ${target.database} that did not finish, and could not be dropped: ${(err as Error).message}; drop it by hand`);
    }
  }
}

async function performRestore(req: RestoreRequest, plan: RestorePlan, now: Date): Promise<RestoreOutcome> {
  const { manifest, target } = req;
  const storage = req.dest.storage;
  const started = Date.now();
  const record: RestoreRecord = { ...newRecord(req, now), mode: plan.mode };
  const lease = await acquireLease(storage, manifest.id, `dbstash restore → ${target.displayUrl}`).catch((err: Error) => {
    req.events.warn(`could not write a lease beside ${manifest.id} (prune may not see this run): ${err.message}`);
    return undefined;
  });
  let recordKey: string | undefined;
  try {
    if (plan.globals) await restoreGlobals(req);
    if (plan.mode === 'in-place') await restoreInPlace(req, plan, record);
    else await restoreBySwap(req, plan, record);
    record.result = 'succeeded';
  } catch (err) {
    let e = req.signal.aborted && !(err instanceof InterruptedError) ? (req.signal.reason ?? err) : err;
    if (e instanceof InterruptedError && !e.outcome) {
      e = e.withOutcome(
        record.keptAs
          ? `the swap had already happened: ${target.displayUrl} is the restored database, the old one is kept as ${record.keptAs}`
          : `${target.displayUrl} was not touched`,
      );
    }
    record.error = (e as Error).message;
    throw e instanceof DbstashError ? e : new RestoreError(`restore failed: ${(e as Error).message}`, { cause: e });
  } finally {
    record.durationMs = Date.now() - started;
    recordKey = await writeRecord(storage, record).catch((err: Error) => {
      req.events.warn(`could not write the restore record: ${err.message}`);
      return undefined;
    });
    await lease?.release().catch(() => {});
  }
  return { plan, performed: true, record, recordKey };
}
