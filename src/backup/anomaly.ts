// Anomaly detection: a dump that shrank a lot since the previous backup of the same database and
// environment is a classic symptom of silent data loss (a truncated table, a wrong database, a
// migration gone wrong). The backup still succeeds; the manifest carries extra.anomaly, which
// `list`, `status` and notifications show.
//
// The comparison needs two numbers of the previous backup (raw size and total rows), so its
// manifest is read for those alone, without the schema validation of list and verify: the backup
// path stays free of the validator (~40 ms of CPU to load, taken from the dump on a small machine).
// A manifest that does not yield both numbers counts as unreadable and the one before it is used.

import { MANIFEST_FORMAT } from '../catalog/manifest.js';
import { MANIFEST_SUFFIX, manifestKey, parseBackupId } from '../core/id.js';
import { getBytes, type Storage } from '../storage/storage.js';

export const DEFAULT_MAX_DROP = 0.5;

/** What the comparison looks at in a backup. */
export interface BackupSize {
  id: string;
  /** Bytes of the main artifact before any stage. */
  rawSize: number;
  /** Rows over all tables. */
  rows: number;
}

export interface Anomaly {
  /** The previous backup compared against. */
  previousId: string;
  /** What dropped: "raw size", "rows" or both. */
  dropped: ('raw size' | 'rows')[];
  previous: { rawSize: number; rows: number };
  current: { rawSize: number; rows: number };
  maxDrop: number;
  message: string;
}

function share(previous: number, current: number): number {
  return previous > 0 ? (previous - current) / previous : 0;
}

/** Compares two backups' raw size and total rows; undefined when nothing dropped by more than maxDrop. */
export function compareBackups(previous: BackupSize, current: BackupSize, maxDrop = DEFAULT_MAX_DROP): Anomaly | undefined {
  const prev = { rawSize: previous.rawSize, rows: previous.rows };
  const cur = { rawSize: current.rawSize, rows: current.rows };
  const dropped: Anomaly['dropped'] = [];
  const parts: string[] = [];
  const sizeDrop = share(prev.rawSize, cur.rawSize);
  if (sizeDrop > maxDrop) {
    dropped.push('raw size');
    parts.push(`raw size ${prev.rawSize} → ${cur.rawSize} bytes (-${Math.round(sizeDrop * 100)}%)`);
  }
  const rowDrop = share(prev.rows, cur.rows);
  if (rowDrop > maxDrop) {
    dropped.push('rows');
    parts.push(`rows ${prev.rows} → ${cur.rows} (-${Math.round(rowDrop * 100)}%)`);
  }
  if (dropped.length === 0) return undefined;
  return {
    previousId: previous.id,
    dropped,
    previous: prev,
    current: cur,
    maxDrop,
    message: `shrank by more than ${Math.round(maxDrop * 100)}% since ${previous.id}: ${parts.join(', ')}`,
  };
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Raw size and rows from manifest bytes; undefined unless they are the manifest of `id` and hold both. */
export function readBackupSize(bytes: Buffer, id: string): BackupSize | undefined {
  let m: { format?: unknown; id?: unknown; artifacts?: unknown; tables?: unknown; kind?: unknown };
  try {
    m = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!m || m.format !== MANIFEST_FORMAT || m.id !== id || !Array.isArray(m.artifacts) || !Array.isArray(m.tables)) return undefined;
  // A restore's safety backup is of the database as it was then, not a step of the series.
  if (m.kind === 'safety') return undefined;
  const main = (m.artifacts as { role?: unknown; rawSize?: unknown }[]).find((a) => a?.role === 'main');
  if (!main || !isCount(main.rawSize)) return undefined;
  let rows = 0;
  for (const t of m.tables as { rows?: unknown }[]) {
    if (!isCount(t?.rows)) return undefined;
    rows += t.rows;
  }
  return { id, rawSize: main.rawSize, rows };
}

/** The newest readable backup of the same database and environment taken before `currentId`. */
export async function previousBackup(storage: Storage, currentId: string): Promise<BackupSize | undefined> {
  const me = parseBackupId(currentId);
  if (!me) return undefined;
  const candidates = (await storage.list(`${me.database}/`))
    .map((o) => o.key.split('/').pop()!)
    .filter((name) => name.endsWith(MANIFEST_SUFFIX))
    .map((name) => name.slice(0, -MANIFEST_SUFFIX.length))
    .filter((id) => {
      const p = parseBackupId(id);
      return p && id !== currentId && p.env === me.env && p.takenAt.getTime() <= me.takenAt.getTime();
    })
    .sort()
    .reverse();
  for (const id of candidates) {
    // A damaged manifest is reported by list and verify; compare with the one before it.
    const size = await getBytes(storage, manifestKey(id)).then(
      (bytes) => readBackupSize(bytes, id),
      () => undefined,
    );
    if (size) return size;
  }
  return undefined;
}

/**
 * Starts looking up the previous backup of `currentId` (while the dump runs); `check` then compares
 * the finished backup with it. Never fails the backup: a failed lookup is a warning and no anomaly.
 */
export function anomalyCheck(
  storage: Storage,
  currentId: string,
  maxDrop = DEFAULT_MAX_DROP,
  warn?: (m: string) => void,
): { check(current: Omit<BackupSize, 'id'>): Promise<Anomaly | undefined> } {
  const previous = previousBackup(storage, currentId).catch((err: unknown) => {
    warn?.(`could not compare with the previous backup: ${(err as Error).message}`);
    return undefined;
  });
  return {
    async check(current) {
      const prev = await previous;
      return prev ? compareBackups(prev, { id: currentId, ...current }, maxDrop) : undefined;
    },
  };
}
