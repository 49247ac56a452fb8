// Anomaly detection: a dump that shrank a lot since the previous backup of the same database and
// environment is a classic symptom of silent data loss (a truncated table, a wrong database, a
// migration gone wrong). The backup still succeeds; the manifest carries extra.anomaly, which
// `list`, `status` and notifications show.

import { MANIFEST_SUFFIX, parseBackupId } from '../core/id.js';
import { readManifest } from '../catalog/catalog.js';
import { mainArtifact, totalRows, type Manifest } from '../catalog/manifest.js';
import type { Storage } from '../storage/storage.js';

export const DEFAULT_MAX_DROP = 0.5;

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
export function compareBackups(previous: Manifest, current: Manifest, maxDrop = DEFAULT_MAX_DROP): Anomaly | undefined {
  const prev = { rawSize: mainArtifact(previous).rawSize, rows: totalRows(previous) };
  const cur = { rawSize: mainArtifact(current).rawSize, rows: totalRows(current) };
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

/** The newest readable backup of the same database and environment taken before `current`. */
export async function previousBackup(storage: Storage, current: Manifest): Promise<Manifest | undefined> {
  const me = parseBackupId(current.id);
  if (!me) return undefined;
  const candidates = (await storage.list(`${me.database}/`))
    .map((o) => o.key.split('/').pop()!)
    .filter((name) => name.endsWith(MANIFEST_SUFFIX))
    .map((name) => name.slice(0, -MANIFEST_SUFFIX.length))
    .filter((id) => {
      const p = parseBackupId(id);
      return p && id !== current.id && p.env === me.env && p.takenAt.getTime() <= me.takenAt.getTime();
    })
    .sort()
    .reverse();
  for (const id of candidates) {
    try {
      return await readManifest(storage, id);
    } catch {
      // A damaged manifest is reported by list and verify; compare with the one before it.
    }
  }
  return undefined;
}

/** Looks for an anomaly against the previous backup; never fails the backup (undefined on error). */
export async function detectAnomaly(storage: Storage, current: Manifest, maxDrop = DEFAULT_MAX_DROP, warn?: (m: string) => void): Promise<Anomaly | undefined> {
  try {
    const previous = await previousBackup(storage, current);
    return previous ? compareBackups(previous, current, maxDrop) : undefined;
  } catch (err) {
    warn?.(`could not compare with the previous backup: ${(err as Error).message}`);
    return undefined;
  }
}
