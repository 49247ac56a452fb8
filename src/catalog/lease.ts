// Leases: while a verify or restore reads a backup, an object "<database>/<id>.lease-<host>-<pid>.json"
// sits beside it, so prune can leave that backup alone. A lease is written at the start and removed
// when the run ends (whatever the outcome). A lease left by a process that is gone is stale: on the
// same host a dead pid tells; from another host we cannot check the pid, so such a lease counts as
// stale once it is older than FOREIGN_LEASE_MAX_AGE_MS.

import os from 'node:os';
import { onForcedExit } from '../core/forced-exit.js';
import { databaseDir } from '../core/id.js';
import type { ObjectInfo, Storage } from '../storage/storage.js';
import { processAlive } from './lock.js';

export const FOREIGN_LEASE_MAX_AGE_MS = 2 * 24 * 3600 * 1000;

const LEASE_RE = /^(.+)\.lease-(.+)-(\d+)\.json$/;

export interface Lease {
  key: string;
  id: string;
  host: string;
  pid: number;
  modifiedAt: Date;
}

export interface HeldLease {
  key: string;
  release(): Promise<void>;
}

export function leaseKey(id: string, host = os.hostname(), pid = process.pid): string {
  return `${databaseDir(id)}/${id}.lease-${host.replace(/[^A-Za-z0-9.-]/g, '-')}-${pid}.json`;
}

export function parseLease(obj: ObjectInfo): Lease | undefined {
  const m = LEASE_RE.exec(obj.key.split('/').pop() ?? '');
  return m ? { key: obj.key, id: m[1], host: m[2], pid: Number(m[3]), modifiedAt: obj.modifiedAt } : undefined;
}

export function isStaleLease(lease: Lease, now = new Date()): boolean {
  if (lease.host === leaseKeyHost()) return !processAlive(lease.pid);
  return now.getTime() - lease.modifiedAt.getTime() > FOREIGN_LEASE_MAX_AGE_MS;
}

function leaseKeyHost(): string {
  return os.hostname().replace(/[^A-Za-z0-9.-]/g, '-');
}

/** Leases in a listing whose holder may still be running (prune skips their backups). */
export function activeLeases(objects: ObjectInfo[], now = new Date()): Lease[] {
  return objects.map(parseLease).filter((l): l is Lease => l !== undefined && !isStaleLease(l, now));
}

export async function acquireLease(storage: Storage, id: string, command: string): Promise<HeldLease> {
  const key = leaseKey(id);
  const body = { id, host: os.hostname(), pid: process.pid, startedAt: new Date().toISOString(), command };
  await storage.put(key, Buffer.from(JSON.stringify(body, null, 2) + '\n'));
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    unregister();
    await storage.delete(key);
  };
  const unregister = onForcedExit(release);
  return { key, release };
}
