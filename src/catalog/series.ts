// Series: the backups of one database on one server. Two databases are never one series, however
// alike their names: a series is identified by engine + host + port + database name (loopback
// addresses and local sockets count as one host, "localhost"), by the file's real absolute path
// for SQLite, or — when the config gives the database a `name:` — by that name and the engine, so
// a database that moves to another host can stay one series.
//
// Each series has its own folder in a stash, which is also the database part of its backup ids:
//   <readable name>.<first 8 hex digits of the SHA-256 of the identity>       e.g. shop.1f0c2a9e
// The name part is for people; the hash makes the folder unique, and `series.json` in the folder
// (written once, by the series' first backup) holds the identity it stands for, so the folder
// reads back to exactly one series and a folder that holds another series is refused. Every
// manifest records its series too: latest, retention, anomaly checks and `list` group backups by
// the recorded identity, never by a name. Backups made before series existed live in folders named
// after the database alone; their series is worked out from their manifests' connection facts.
//
// People never type a folder name: commands accept the name `list` prints, the database's real
// name, the config key and the folder, and a name that matches several series is refused with the
// list of them (see resolveSeries).

import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { PreflightError, UsageError } from '../core/errors.js';
import { parseBackupId, safeName } from '../core/id.js';
import type { EngineId, Target } from '../engines/engine.js';
import { getBytes, type Storage } from '../storage/storage.js';
import type { Manifest } from './manifest.js';

export interface Series {
  /** The folder in every stash, and the database part of every backup id of the series. */
  key: string;
  /** The name people know it by: the config's `name:`, else the database's own name. */
  name: string;
  /** What makes it one series (no secrets): "postgres://host:5432/db", "sqlite:/abs/app.db", "name:postgres:shop". */
  identity: string;
}

export const SERIES_FILE = 'series.json';
const DEFAULT_PORT: Partial<Record<EngineId, number>> = { postgres: 5432, mysql: 3306 };
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\]|0\.0\.0\.0)$/i;
const NEW_KEY = /\.[0-9a-f]{8}$/;

function hostOf(host: string | undefined): string {
  if (!host || host.startsWith('/') || LOOPBACK.test(host)) return 'localhost';
  return host.toLowerCase();
}

function realPath(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

/** The identity of a database on its server (or of a SQLite file). */
export function databaseIdentity(engine: EngineId, facts: { host?: string; port?: number; database: string; path?: string }): string {
  if (engine === 'sqlite') return `sqlite:${realPath(facts.path ?? facts.database)}`;
  return `${engine}://${hostOf(facts.host)}:${facts.port ?? DEFAULT_PORT[engine] ?? ''}/${facts.database}`;
}

/** The readable part of a folder name: letters, digits, ".", "_" and "-" only. */
function readable(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[.-]+/, '').slice(0, 60);
  return cleaned.length > 0 ? cleaned : 'db';
}

export function seriesKey(name: string, identity: string): string {
  return `${readable(name)}.${createHash('sha256').update(identity).digest('hex').slice(0, 8)}`;
}

/** The series of a database being backed up; `label` is the config's `name:` for it, if any. */
export function seriesOf(target: Target, label?: string): Series {
  const name = label ?? target.database;
  const identity = label ? `name:${target.engine}:${label}` : databaseIdentity(target.engine, target);
  return { key: seriesKey(name, identity), name, identity };
}

/**
 * The series of a PostgreSQL cluster's physical backups and WAL archive. A base backup and the WAL
 * hold every database of the cluster, so the identity is the server (or the config's `name:`),
 * never one database, and it is another series than the logical dumps of the same database: the
 * two never share a folder, a `latest` or a retention policy.
 */
export function physicalSeriesOf(target: Target, label?: string): Series {
  const server = `${hostOf(target.host)}:${target.port ?? DEFAULT_PORT.postgres}`;
  const name = label ?? `${hostOf(target.host)}-${target.port ?? DEFAULT_PORT.postgres}`;
  const identity = label ? `physical:name:${target.engine}:${label}` : `physical:${target.engine}://${server}`;
  return { key: seriesKey(name, identity), name, identity };
}

/** The series of a configured database: its physical series when the entry says `physical: true`. */
export function seriesOfConfigured(target: Target, entry: { name?: string; physical?: boolean } | undefined): Series {
  return entry?.physical ? physicalSeriesOf(target, entry.name) : seriesOf(target, entry?.name);
}

/** The series a backup belongs to: as recorded, or, for backups older than series, from its connection facts. */
export function seriesOfManifest(m: Manifest): Series {
  if (m.series) return m.series;
  const parsed = parseBackupId(m.id);
  const identity = databaseIdentity(m.engine, { host: m.database.host, port: m.database.port, database: m.database.name, path: m.database.url });
  return { key: parsed?.database ?? m.database.name, name: m.database.name, identity };
}

/** Whether a backup is a safety backup taken by a restore (never latest, never in retention or anomaly checks). */
export function isSafetyBackup(m: Manifest): boolean {
  return m.kind === 'safety';
}

interface SeriesFile {
  format: 'dbstash.series';
  key: string;
  name: string;
  identity: string;
  engine: EngineId;
  createdAt: string;
}

export function seriesFileKey(series: Series): string {
  return `${series.key}/${SERIES_FILE}`;
}

function refuse(storage: Storage, series: Series, found: Partial<SeriesFile> | undefined): PreflightError {
  return new PreflightError(
    `the folder ${series.key} in ${storage.url} belongs to ${found?.identity ? `another series (${found.identity})` : 'something else (its series.json does not read)'}, not to ${series.identity}`,
    { hint: 'give this database its own name with `name:` in the config, or use another stash' },
  );
}

async function readSeriesFile(storage: Storage, key: string): Promise<Partial<SeriesFile> | undefined | 'absent'> {
  let bytes: Buffer;
  try {
    bytes = await getBytes(storage, key);
  } catch (err) {
    if ((err as { reason?: string }).reason === 'not-found') return 'absent';
    throw err;
  }
  try {
    return JSON.parse(bytes.toString()) as Partial<SeriesFile>;
  } catch {
    return undefined;
  }
}

/**
 * Checks, before a backup starts, that `series.key`'s folder in a stash does not belong to
 * another identity (a hash collision, or a hand-made folder). Returns whether series.json is
 * already there.
 */
export async function checkSeriesFolder(storage: Storage, series: Series): Promise<boolean> {
  const found = await readSeriesFile(storage, seriesFileKey(series));
  if (found === 'absent') return false;
  if (found?.identity !== series.identity) throw refuse(storage, series, found);
  return true;
}

/**
 * Writes series.json for the series' first backup in a stash (exclusively: never overwritten), as
 * part of publishing it. Returns true when this call created it; a folder that meanwhile became
 * another series' is refused.
 */
export async function writeSeriesFile(storage: Storage, series: Series, engine: EngineId, signal?: AbortSignal): Promise<boolean> {
  const key = seriesFileKey(series);
  const body: SeriesFile = { format: 'dbstash.series', key: series.key, name: series.name, identity: series.identity, engine, createdAt: new Date().toISOString() };
  try {
    await storage.put(key, Buffer.from(JSON.stringify(body, null, 2) + '\n'), { exclusive: true, signal });
    return true;
  } catch (err) {
    if ((err as { reason?: string }).reason !== 'exists') throw err;
  }
  const found = await readSeriesFile(storage, key);
  if (found === 'absent' || found?.identity !== series.identity) throw refuse(storage, series, found === 'absent' ? undefined : found);
  return false;
}

/** One series as the catalog sees it: its backups over every listed storage. */
export interface SeriesMatch {
  series: Series;
  engine: EngineId;
  /** The database's real name (as the manifests give it). */
  database: string;
  /** Where the database lives (URL without password, or the file path). */
  url: string;
}

/** Whether `query` names this series: its folder, its name, the database's real name, or a config key that maps to it. */
export function seriesMatches(match: SeriesMatch, query: string, configKeys: Map<string, string> = new Map()): string | undefined {
  if (match.series.key === query) return 'folder';
  if (match.series.name === query) return 'name';
  if (match.database === query) return 'database name';
  if (configKeys.get(query) === match.series.identity) return 'config key';
  if (!NEW_KEY.test(match.series.key) && safeName(query) === match.series.key) return 'folder';
  return undefined;
}

/**
 * The one series `query` names among `known`; undefined when none does. A name that several
 * series answer to is refused with the list of them, so nobody restores the wrong database.
 */
export function resolveSeries(known: SeriesMatch[], query: string, configKeys: Map<string, string> = new Map()): { match: SeriesMatch; by: string } | undefined {
  const byIdentity = new Map<string, { match: SeriesMatch; by: string }>();
  for (const m of known) {
    const by = seriesMatches(m, query, configKeys);
    if (by && !byIdentity.has(m.series.identity)) byIdentity.set(m.series.identity, { match: m, by });
  }
  const found = [...byIdentity.values()].sort((a, b) => (a.match.series.key < b.match.series.key ? -1 : 1));
  if (found.length <= 1) return found[0];
  // An exact folder or config-key match is unambiguous by itself.
  const exact = found.filter((f) => f.by === 'folder' || f.by === 'config key');
  if (exact.length === 1) return exact[0];
  throw new UsageError(
    `"${query}" matches ${found.length} series: ${found.map((f) => `${f.match.series.key} (${f.match.engine} ${f.match.url})`).join(', ')}`,
    { hint: `name one of them as \`dbstash list\` prints it, e.g. ${found[0].match.series.key}` },
  );
}

export function describeSeries(m: SeriesMatch): string {
  return `${m.series.name} (${m.engine} ${m.url})`;
}
