// Records kept beside a backup: one file per verification run ("<id>.verify-<stamp>.json"), per
// restore, whole or of single tables ("<id>.restore-<stamp>.json"), and per export of a table
// ("<id>.export-<stamp>.json"). Backups stay immutable; records accumulate, and the
// newest verification record is what `list` and `status` show.

import { formatStamp, databaseDir } from '../core/id.js';
import { getBytes, type Storage } from '../storage/storage.js';
import { maskDeep, maskUrlCredentials } from '../core/secrets.js';

export interface VerifyRecord {
  kind: 'verify';
  id: string;
  /** integrity (level 1), drill (level 2), deep (drill + content checksums). */
  level: 'integrity' | 'drill' | 'deep';
  result: 'passed' | 'failed';
  /** The first broken thing, when failed. */
  error?: string;
  at: string;
  durationMs: number;
  toolVersion: string;
  storage?: string;
  tables?: { schema: string; name: string; expected: number; actual?: number; checksumMatch?: boolean; ok: boolean }[];
  [key: string]: unknown;
}

export interface RestoreRecord {
  kind: 'restore';
  id: string;
  target: string;
  result: 'succeeded' | 'failed' | 'rolled-back';
  error?: string;
  at: string;
  durationMs: number;
  toolVersion: string;
  [key: string]: unknown;
}

export interface ExportRecord {
  kind: 'export';
  id: string;
  table: string;
  format: string;
  /** The file written, or "-" for standard output. */
  output: string;
  rows?: number;
  result: 'succeeded' | 'failed';
  error?: string;
  at: string;
  durationMs: number;
  toolVersion: string;
  [key: string]: unknown;
}

export type BackupRecord = VerifyRecord | RestoreRecord | ExportRecord;

export function recordKey(id: string, kind: BackupRecord['kind'], at: Date): string {
  // Milliseconds keep two records of the same second apart.
  const stamp = formatStamp(at).replace(/Z$/, `.${String(at.getUTCMilliseconds()).padStart(3, '0')}Z`);
  return `${databaseDir(id)}/${id}.${kind}-${stamp}.json`;
}

export async function writeRecord(storage: Storage, record: BackupRecord): Promise<string> {
  const key = recordKey(record.id, record.kind, new Date(record.at));
  await storage.put(key, Buffer.from(JSON.stringify(maskDeep(record, maskUrlCredentials), null, 2) + '\n'));
  return key;
}

export async function readRecord<T extends BackupRecord>(storage: Storage, key: string): Promise<T | undefined> {
  try {
    return JSON.parse((await getBytes(storage, key)).toString()) as T;
  } catch {
    return undefined;
  }
}

/** The newest record of a kind among a catalog entry's record keys. */
export async function latestRecord<T extends BackupRecord>(storage: Storage, keys: string[], kind: T['kind']): Promise<T | undefined> {
  const ofKind = keys.filter((k) => k.includes(`.${kind}-`)).sort();
  const last = ofKind[ofKind.length - 1];
  return last ? readRecord<T>(storage, last) : undefined;
}
