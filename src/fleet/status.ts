// What fleet agents report to the control database: each database's WAL archiving, seen from its
// own host (WAL archiving must stay there). A table of dbstash's own, beside pg-boss's schema.

import os from 'node:os';
import type { PgBoss } from 'pg-boss';

export const FLEET_SCHEMA = 'dbstash_fleet';

export interface WalStatus {
  database: string;
  host: string;
  reportedAt: string;
  healthy: boolean;
  problems: string[];
  /** The recovery point: the newest archived segment's time, as the server says. */
  lastArchivedAt?: string;
  /** Where the recoverable window starts (the oldest base backup's end). */
  windowFrom?: string;
}

export async function ensureFleetTables(boss: PgBoss): Promise<void> {
  await boss.getDb().executeSql(
    `CREATE SCHEMA IF NOT EXISTS ${FLEET_SCHEMA};
     CREATE TABLE IF NOT EXISTS ${FLEET_SCHEMA}.wal_status (
       database text PRIMARY KEY, host text NOT NULL, reported_at timestamptz NOT NULL, healthy boolean NOT NULL,
       problems jsonb NOT NULL, last_archived_at timestamptz, window_from timestamptz)`,
  );
}

export async function reportWal(boss: PgBoss, s: { database: string; healthy: boolean; problems: string[]; lastArchivedAt?: string; windowFrom?: string }): Promise<void> {
  await boss.getDb().executeSql(
    `INSERT INTO ${FLEET_SCHEMA}.wal_status (database, host, reported_at, healthy, problems, last_archived_at, window_from) VALUES ($1, $2, now(), $3, $4, $5, $6)
     ON CONFLICT (database) DO UPDATE SET host = EXCLUDED.host, reported_at = EXCLUDED.reported_at, healthy = EXCLUDED.healthy, problems = EXCLUDED.problems,
       last_archived_at = EXCLUDED.last_archived_at, window_from = EXCLUDED.window_from`,
    [s.database, os.hostname(), s.healthy, JSON.stringify(s.problems), s.lastArchivedAt ?? null, s.windowFrom ?? null],
  );
}

/** Every database's last report; none when no agent ever reported (the table does not exist). */
export async function walStatuses(boss: PgBoss): Promise<WalStatus[]> {
  const exists = (await boss.getDb().executeSql(`SELECT to_regclass('${FLEET_SCHEMA}.wal_status') AS t`)) as { rows: { t: string | null }[] };
  if (!exists.rows[0]?.t) return [];
  const { rows } = (await boss.getDb().executeSql(`SELECT * FROM ${FLEET_SCHEMA}.wal_status ORDER BY database`)) as {
    rows: { database: string; host: string; reported_at: Date; healthy: boolean; problems: string[]; last_archived_at: Date | null; window_from: Date | null }[];
  };
  return rows.map((r) => ({
    database: r.database,
    host: r.host,
    reportedAt: new Date(r.reported_at).toISOString(),
    healthy: r.healthy,
    problems: r.problems,
    ...(r.last_archived_at ? { lastArchivedAt: new Date(r.last_archived_at).toISOString() } : {}),
    ...(r.window_from ? { windowFrom: new Date(r.window_from).toISOString() } : {}),
  }));
}
