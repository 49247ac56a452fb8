// Verification of one backup, engine- and storage-agnostic.
//   Level 1 (integrity): the manifest is valid and names this backup; every artifact is present,
//     its size and SHA-256 match, every stage decodes to its end, and the engine reads the dump's
//     own structure back (pg_restore, PRAGMA integrity_check, …).
//   Level 2 (drill): the dump is restored into a scratch database that is always dropped, and
//     every table's row count is compared with the manifest; "deep" also compares the content
//     checksums the backup took in its snapshot. The drill's server is first given what the dump
//     needs and does not create itself (roles, read by level 1 from the dump and the globals
//     artifact; extensions are checked), and ownership and grants are restored where its user can.
// Each run that judged the backup leaves a record beside it.
//
// The line between the two verdicts: IntegrityError ("the backup is damaged", exit 7) only for
// what the backup's own bytes show — a size or SHA-256 that differs from the manifest, a stage that
// does not decode, a structure that does not read back, a dump whose statements the server rejects
// for what they say, tables that differ from the manifest. VerifyUnavailableError ("could not
// verify", exit 8, no record) for everything the environment causes — missing tools, no scratch
// server, a role or extension the drill's server lacks and cannot get, a restore that fails for a
// reason of the server's (a RestoreEnvironmentError): it says nothing about the backup.

import { randomBytes } from 'node:crypto';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DbstashError,
  IntegrityError,
  InterruptedError,
  PreflightError,
  RestoreEnvironmentError,
  RestoreError,
  UsageError,
  VerifyUnavailableError,
} from '../core/errors.js';
import { TOOL_VERSION } from '../core/version.js';
import { mainArtifact, physicalOf, type Manifest } from '../catalog/manifest.js';
import { writeRecord, type VerifyRecord } from '../catalog/records.js';
import { acquireLease } from '../catalog/lease.js';
import { loadEngine } from '../engines/index.js';
import type { DrillEnvironment, DumpNeeds, Engine, ScratchServer, Target } from '../engines/engine.js';
import { parseTarget } from '../engines/target.js';
import type { StageContext } from '../pipeline/stage.js';
import type { Storage } from '../storage/storage.js';
import { compareTables, summarizeProblems, type TableComparison } from './compare.js';
import { openArtifact } from './read.js';
import type { WarmScratch } from './warm.js';

export type VerifyLevel = VerifyRecord['level'];

export interface VerifyEvents {
  info(message: string): void;
  warn(message: string): void;
}

export interface VerifyOptions {
  level: VerifyLevel;
  stageContext: StageContext;
  tempDir: string;
  /** A server for the drill's scratch database; default: a throwaway local server. */
  scratchUrl?: string;
  /** Verify without leaving a record or a lease (--dry-run). */
  dryRun?: boolean;
  /** Warm scratch servers to drill on, kept between drills (the daemon, verify --all); default: one throwaway server per drill. */
  warm?: WarmScratch;
  signal: AbortSignal;
  events: VerifyEvents;
}

export interface VerifyResult {
  record: VerifyRecord;
  recordKey?: string;
  structure: string;
}

const devNull = () =>
  new Writable({
    highWaterMark: 1 << 20,
    write(_chunk, _enc, done) {
      done();
    },
  });

/** Missing tools are "could not verify", not "the backup is broken". */
function unavailable(err: unknown): unknown {
  if (err instanceof PreflightError) return new VerifyUnavailableError(err.message, { hint: err.hint, cause: err });
  return err;
}

export interface IntegrityReport {
  /** The engine's summary of the main dump's structure. */
  structure: string;
  /** What the dump needs from a server it is restored into (main dump and globals artifact together). */
  needs?: DumpNeeds;
}

function mergeNeeds(a: DumpNeeds | undefined, b: DumpNeeds | undefined): DumpNeeds | undefined {
  if (!a || !b) return a ?? b;
  const union = (x: string[], y: string[]) => [...new Set([...x, ...y])].sort();
  return { roles: union(a.roles, b.roles), rolesWithoutOwnership: union(a.rolesWithoutOwnership, b.rolesWithoutOwnership), extensions: union(a.extensions, b.extensions) };
}

/**
 * Level 1 for every artifact of a backup. Returns the engine's summary of the main dump's
 * structure and the dump's needs. Throws IntegrityError naming the first broken thing.
 */
export async function checkIntegrity(
  storage: Storage,
  manifest: Manifest,
  engine: Engine,
  opts: { stageContext: StageContext; tempDir: string; signal: AbortSignal; warn: (m: string) => void },
): Promise<IntegrityReport> {
  if (!engine.checkStructure) throw new VerifyUnavailableError(`the ${engine.id} engine cannot check a dump's structure yet`);
  const report: IntegrityReport = { structure: '' };
  for (const artifact of manifest.artifacts) {
    const raw: Readable = await openArtifact(storage, manifest, artifact, opts.stageContext, { signal: opts.signal });
    const restoreOpts = { signal: opts.signal, format: artifact.format, tempDir: opts.tempDir, warn: opts.warn };
    try {
      if (artifact.role === 'main') {
        const main = await engine.checkStructure(raw, restoreOpts);
        report.structure = main.summary;
        report.needs = mergeNeeds(report.needs, main.needs);
      } else if (artifact.role === 'globals' && engine.checkGlobals) {
        report.needs = mergeNeeds(report.needs, (await engine.checkGlobals(raw, restoreOpts)).needs);
      } else {
        await pipeline(raw, devNull(), { signal: opts.signal });
      }
    } catch (err) {
      raw.destroy();
      throw unavailable(err);
    }
  }
  return report;
}

async function scratchServer(engine: Engine, manifest: Manifest, opts: VerifyOptions): Promise<{ server: Target; scratch?: ScratchServer }> {
  if (opts.scratchUrl) {
    const server = parseTarget(opts.scratchUrl);
    if (server.engine !== manifest.engine) {
      throw new UsageError(`the scratch server ${server.displayUrl} is ${server.engine}, but ${manifest.id} is a ${manifest.engine} backup`);
    }
    return { server };
  }
  if (!engine.startScratchServer) {
    throw new VerifyUnavailableError(`no scratch server for a ${engine.id} drill`, { hint: 'give one with --scratch-url (or scratchUrl in the config)' });
  }
  const scratch = await engine.startScratchServer({ tempDir: opts.tempDir, signal: opts.signal });
  try {
    checkScratchVersion(engine, manifest, scratch);
  } catch (err) {
    await scratch.stop();
    throw err;
  }
  return { server: scratch.target, scratch };
}

function checkScratchVersion(engine: Engine, manifest: Manifest, scratch: ScratchServer): void {
  const major = (v: string | undefined) => Number(/^(\d+)/.exec(v ?? '')?.[1] ?? NaN);
  if (major(scratch.serverVersion) < major(manifest.database.serverVersion)) {
    throw new VerifyUnavailableError(
      `the installed ${engine.id} server (${scratch.serverVersion}) is older than the backup's server (${manifest.database.serverVersion}), so the drill cannot restore into it`,
      { hint: 'install a server of at least that version, or give a scratch server with --scratch-url' },
    );
  }
}

/** Gives the drill's server what the dump needs; anything that fails here is the environment's. */
async function prepare(engine: Engine, server: Target, needs: DumpNeeds | undefined, opts: VerifyOptions): Promise<DrillEnvironment | undefined> {
  if (!engine.prepareDrill || !needs) return undefined;
  let env: DrillEnvironment;
  try {
    env = await engine.prepareDrill(server, needs, opts.signal);
  } catch (err) {
    if (err instanceof DbstashError && !(err instanceof VerifyUnavailableError) && !(err instanceof InterruptedError)) {
      throw new VerifyUnavailableError(`cannot prepare the drill's server ${server.displayUrl}: ${err.message}`, { hint: err.hint, cause: err });
    }
    throw err;
  }
  if (env.created.length > 0) opts.events.info(`drill: created the roles the dump refers to (NOLOGIN, removed afterwards): ${env.created.join(', ')}`);
  if (!env.ownership) opts.events.info('drill: the scratch server\'s user is not a superuser there, so ownership and grants are not restored');
  return env;
}

/** Level 2: restore into a scratch database that is always dropped, and compare its tables. */
async function drill(
  storage: Storage,
  manifest: Manifest,
  engine: Engine,
  needs: DumpNeeds | undefined,
  opts: VerifyOptions,
): Promise<{ tables: TableComparison[]; scratch: string }> {
  const deep = opts.level === 'deep';
  if (deep && manifest.tables.some((t) => t.checksum === undefined)) {
    throw new VerifyUnavailableError(`${manifest.id} was taken without --checksums, so --deep has nothing to compare`, {
      hint: 'verify it with --drill, and take future backups with --checksums (or checksums: true in the config)',
    });
  }
  const { restore, createDatabase, dropDatabase, tableStats } = engine;
  if (!restore || !createDatabase || !dropDatabase || !tableStats) throw new VerifyUnavailableError(`the ${engine.id} engine cannot run restore drills yet`);
  if (opts.warm && !opts.scratchUrl && engine.startScratchServer) {
    const warm = opts.warm;
    const started = warm.started;
    return warm
      .use(engine, async (scratch) => {
        checkScratchVersion(engine, manifest, scratch);
        const where = warm.started > started ? 'a scratch instance started now and kept warm for the next drills' : 'the warm scratch instance';
        return drillOn(storage, manifest, engine, needs, opts, scratch.target, where, 'warm local server');
      })
      .catch((err: unknown) => {
        // The warm server could not be started: as with a throwaway one, the environment's fault.
        throw err instanceof DbstashError || opts.signal.aborted ? err : new VerifyUnavailableError(`no scratch server for the drill: ${(err as Error).message}`, { cause: err });
      });
  }
  const { server, scratch } = await scratchServer(engine, manifest, opts);
  try {
    return await drillOn(storage, manifest, engine, needs, opts, server, scratch ? 'a throwaway scratch instance' : server.displayUrl, scratch ? 'throwaway local server' : server.displayUrl);
  } finally {
    await scratch?.stop();
  }
}

/** The drill itself, on a server that is there: a scratch database created, restored, compared and dropped. */
async function drillOn(
  storage: Storage,
  manifest: Manifest,
  engine: Engine,
  needs: DumpNeeds | undefined,
  opts: VerifyOptions,
  server: Target,
  where: string,
  recorded: string,
): Promise<{ tables: TableComparison[]; scratch: string }> {
  const deep = opts.level === 'deep';
  const { restore, createDatabase, dropDatabase, tableStats } = engine as Required<Pick<Engine, 'restore' | 'createDatabase' | 'dropDatabase' | 'tableStats'>>;
  const name = `dbstash_drill_${randomBytes(4).toString('hex')}`;
  opts.events.info(`drill: restoring ${manifest.id} into ${where} as ${name}`);
  let db: Target;
  try {
    db = await createDatabase.call(engine, server, name);
  } catch (err) {
    if (err instanceof DbstashError && !(err instanceof InterruptedError)) {
      throw new VerifyUnavailableError(`cannot create the scratch database on ${server.displayUrl}: ${err.message}`, { hint: err.hint, cause: err });
    }
    throw err;
  }
  let env: DrillEnvironment | undefined;
  try {
    env = await prepare(engine, server, needs, opts);
    const raw = await openArtifact(storage, manifest, mainArtifact(manifest), opts.stageContext, { signal: opts.signal });
    try {
      await restore.call(engine, db, raw, {
        signal: opts.signal,
        format: mainArtifact(manifest).format,
        noOwner: !env?.ownership,
        noPrivileges: !env?.ownership,
        noTablespaces: true,
        tempDir: opts.tempDir,
        warn: opts.events.warn,
        reread: () => openArtifact(storage, manifest, mainArtifact(manifest), opts.stageContext, { signal: opts.signal }),
      });
    } catch (err) {
      raw.destroy();
      if (err instanceof RestoreEnvironmentError) {
        throw new VerifyUnavailableError(`the drill's server could not restore the dump, which says nothing about the backup: ${err.message}`, {
          hint: 'give a scratch server that has what the dump needs with --scratch-url (a superuser; the extensions, libraries and collations of the source server)',
          cause: err,
        });
      }
      if (err instanceof RestoreError) throw new IntegrityError(`the dump does not restore: ${err.message}`, { cause: err });
      throw unavailable(err);
    }
    const comparison = compareTables(manifest.tables, await tableStats.call(engine, db, { checksums: deep, signal: opts.signal }), { checksums: deep });
    const problems = [...comparison.problems, ...comparison.extras];
    if (problems.length > 0) {
      throw Object.assign(new IntegrityError(summarizeProblems(problems), { hint: 'the dump holds other data than its manifest says; do not rely on this backup' }), {
        tables: comparison.tables,
      });
    }
    return { tables: comparison.tables, scratch: recorded };
  } finally {
    await dropDatabase.call(engine, db).catch((err: Error) => opts.events.warn(`could not drop the scratch database ${name}: ${err.message}`));
    await env?.cleanup().catch((err: Error) => opts.events.warn(`could not remove the roles the drill created (${env?.created.join(', ')}): ${err.message}`));
  }
}

/** Verifies one backup whose manifest has been read; writes the record (unless dryRun). */
export async function verifyBackup(storage: Storage, manifest: Manifest, opts: VerifyOptions): Promise<VerifyResult> {
  const started = new Date();
  const engine = await loadEngine(manifest.engine);
  const lease = opts.dryRun
    ? undefined
    : await acquireLease(storage, manifest.id, `dbstash verify (${opts.level})`).catch((err: Error) => {
        opts.events.warn(`could not write a lease beside ${manifest.id} (prune may not see this run): ${err.message}`);
        return undefined;
      });
  const record: VerifyRecord = {
    kind: 'verify',
    id: manifest.id,
    level: opts.level,
    result: 'failed',
    at: started.toISOString(),
    durationMs: 0,
    toolVersion: TOOL_VERSION,
    storage: storage.url,
  };
  const finish = async (): Promise<string | undefined> => {
    record.durationMs = Date.now() - started.getTime();
    if (opts.dryRun) return undefined;
    return writeRecord(storage, record).catch((err: Error) => {
      opts.events.warn(`could not write the verification record: ${err.message}`);
      return undefined;
    });
  };
  try {
    const integrity = await checkIntegrity(storage, manifest, engine, { ...opts, warn: opts.events.warn });
    const { needs } = integrity;
    let structure = integrity.structure;
    record.structure = structure;
    if (physicalOf(manifest)) {
      // A base backup is only as good as the archive that brings it forward.
      const { checkArchive, describeArchive, physicalDrill } = await import('../wal/drill.js');
      try {
        const { report } = await checkArchive(storage, manifest, opts.signal);
        record.archive = report;
        structure = record.structure = `${structure}; ${describeArchive(report)}`;
      } catch (err) {
        if ((err as { archive?: unknown }).archive) record.archive = (err as { archive?: unknown }).archive;
        throw err;
      }
      if (opts.level === 'deep') {
        throw new VerifyUnavailableError(`${manifest.id} is a physical base backup: it has no per-table checksums for --deep to compare`, { hint: 'verify it with --drill, which recovers it and reads every table' });
      }
      if (opts.level === 'drill') {
        const result = await physicalDrill(storage, manifest, opts);
        record.databases = result.databases;
        record.point = result.point;
        record.scratch = 'throwaway cluster recovered to the end of the archive';
        structure = record.structure = `${structure}; drill: recovered ${result.point.redoDoneAt ? `to ${result.point.redoDoneAt}` : 'to the end of the archive'}${result.verifybackup ? ', pg_verifybackup passed' : ''}, ${result.databases.length} databases answered, ${result.databases.reduce((a, d) => a + d.tables, 0)} tables counted (${result.databases.reduce((a, d) => a + d.rows, 0)} rows)`;
      }
      record.result = 'passed';
      return { record, recordKey: await finish(), structure };
    }
    if (opts.level !== 'integrity') {
      const result = await drill(storage, manifest, engine, needs, opts);
      record.tables = result.tables;
      record.scratch = result.scratch;
    }
    record.result = 'passed';
    return { record, recordKey: await finish(), structure };
  } catch (err) {
    if (err instanceof IntegrityError && !opts.signal.aborted) {
      record.error = err.message;
      const tables = (err as { tables?: TableComparison[] }).tables;
      if (tables) record.tables = tables;
      await finish();
    }
    throw opts.signal.aborted ? (opts.signal.reason ?? err) : err;
  } finally {
    await lease?.release().catch(() => {});
  }
}
