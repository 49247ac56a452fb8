// Backup ids and the stash layout.
//
// A backup's id is its base name: {database}_{env}_{YYYY-MM-DDTHH-MM-SSZ}. The database part
// is made file-name safe; the environment never contains "_", so an id parses from the right.
// Layout inside any storage:
//   <database>/<id>.<format>[.zst|.gz][.age]     the artifact(s)
//   <database>/<id>.manifest.json                 written last: the commit point
//   <database>/<id>.verify-<timestamp>.json       one record per verification run
//   <database>/<id>.restore-<timestamp>.json      one record per restore (whole, or --table)
//   <database>/<id>.export-<timestamp>.json       one record per export of a table

const ID_RE = /^(.+)_([a-z0-9-]+)_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)$/;
const STAMP_RE = /^(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})Z$/;

export const MANIFEST_SUFFIX = '.manifest.json';

/** `<id>.<anything>`: the file name of one of a backup's objects (artifact, manifest, record). */
const BACKUP_FILE_RE = /^(.+_[a-z0-9-]+_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)\./;

/** The id of the backup a file (a name, not a key) belongs to, when its name starts with a valid id. */
export function backupIdOfFile(name: string): string | undefined {
  const id = BACKUP_FILE_RE.exec(name)?.[1];
  return id && parseBackupId(id) ? id : undefined;
}
export const TEMP_PREFIX = '.tmp-';

/** A record kept beside a backup: `<id>.<kind>-<stamp>.json` (the file name, not the key). */
export const RECORD_RE = /^(.*)\.(verify|restore|export)-[^/]+\.json$/;

/** File-name safe form of a database or environment name. */
export function safeName(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^[.-]+/, '');
  return cleaned.length > 0 ? cleaned.slice(0, 100) : 'db';
}

export function formatStamp(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '-');
}

export function parseStamp(stamp: string): Date | undefined {
  const m = STAMP_RE.exec(stamp);
  if (!m) return undefined;
  const d = new Date(`${m[1]}T${m[2]}:${m[3]}:${m[4]}Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export function makeBackupId(database: string, env: string, takenAt: Date): string {
  return `${safeName(database)}_${safeName(env).replace(/_/g, '-').toLowerCase()}_${formatStamp(takenAt)}`;
}

export interface ParsedId {
  database: string;
  env: string;
  takenAt: Date;
}

export function parseBackupId(id: string): ParsedId | undefined {
  const m = ID_RE.exec(id);
  if (!m) return undefined;
  const takenAt = parseStamp(m[3]);
  if (!takenAt) return undefined;
  return { database: m[1], env: m[2], takenAt };
}

export function isBackupId(id: string): boolean {
  return parseBackupId(id) !== undefined;
}

/** The folder (key prefix) of one database inside a storage. */
export function databaseDir(id: string): string {
  const parsed = parseBackupId(id);
  if (!parsed) throw new Error(`not a backup id: ${id}`);
  return parsed.database;
}

export function manifestKey(id: string): string {
  return `${databaseDir(id)}/${id}${MANIFEST_SUFFIX}`;
}

export function artifactKey(id: string, fileName: string): string {
  return `${databaseDir(id)}/${fileName}`;
}
