// What a cluster needs for WAL archiving, checked against the running server, and named restore
// points. Setup never restarts anything: it says when a restart is needed (wal_level and
// archive_mode change only then), and with --apply runs ALTER SYSTEM and a reload.

import { DbstashError } from '../core/errors.js';
import type { Target } from '../engines/engine.js';
import { classifyPgError, onDatabase, quoteLiteral } from '../engines/postgres/connection.js';
import { putOwnBytes } from '../storage/storage.js';
import type { WalSeries } from './archive.js';
import { walPrefix } from './names.js';

export interface SetupCheck {
  setting: string;
  value: string;
  wanted: string;
  ok: boolean;
  /** Changing it takes a restart. */
  restart: boolean;
  /** The statement that fixes it; undefined for what ALTER SYSTEM cannot fix (a role, pg_hba.conf). */
  fix?: string;
}

export interface SetupReport {
  checks: SetupCheck[];
  changes: string[];
  restart: boolean;
}

export async function checkSetup(target: Target, archiveCommand: string, signal?: AbortSignal): Promise<SetupReport> {
  const settings = await onDatabase(
    target,
    async (c) => {
      const r = await c.query<{ name: string; setting: string }>(
        `SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'archive_mode', 'archive_command', 'archive_timeout', 'max_wal_senders')`,
      );
      const role = await c.query<{ ok: boolean }>(`SELECT rolsuper OR rolreplication AS ok FROM pg_roles WHERE rolname = current_user`);
      return { ...Object.fromEntries(r.rows.map((row) => [row.name, row.setting])), replication: role.rows[0]?.ok ? 'yes' : 'no' } as Record<string, string>;
    },
    signal,
  );
  const alter = (name: string, value: string) => `ALTER SYSTEM SET ${name} = ${quoteLiteral(value)}`;
  const checks: SetupCheck[] = [
    { setting: 'wal_level', value: settings.wal_level, wanted: 'replica or logical', ok: settings.wal_level !== 'minimal', restart: true, fix: alter('wal_level', 'replica') },
    { setting: 'archive_mode', value: settings.archive_mode, wanted: 'on', ok: settings.archive_mode !== 'off', restart: true, fix: alter('archive_mode', 'on') },
    { setting: 'archive_command', value: settings.archive_command || "''", wanted: archiveCommand, ok: settings.archive_command === archiveCommand, restart: false, fix: alter('archive_command', archiveCommand) },
    // A quiet server fills a segment rarely: archive_timeout bounds how old the newest archived WAL can get.
    { setting: 'archive_timeout', value: `${settings.archive_timeout}s`, wanted: '60s (at most 300s)', ok: Number(settings.archive_timeout) > 0 && Number(settings.archive_timeout) <= 300, restart: false, fix: alter('archive_timeout', '60s') },
    { setting: 'max_wal_senders', value: settings.max_wal_senders, wanted: 'at least 2 (pg_basebackup)', ok: Number(settings.max_wal_senders) >= 2, restart: true, fix: alter('max_wal_senders', '10') },
    { setting: 'REPLICATION role', value: settings.replication, wanted: `yes (ALTER ROLE ${target.user ?? 'the_role'} REPLICATION, and a replication line in pg_hba.conf)`, ok: settings.replication === 'yes', restart: false },
  ];
  const wrong = checks.filter((c) => !c.ok);
  return { checks, changes: wrong.map((c) => c.fix ?? `-- ${c.setting}: ${c.wanted}`), restart: wrong.some((c) => c.restart) };
}

export async function applySetup(target: Target, report: SetupReport, signal?: AbortSignal): Promise<{ restart: boolean }> {
  await onDatabase(
    target,
    async (c) => {
      for (const check of report.checks.filter((x) => !x.ok && x.fix)) await c.query(check.fix!);
      await c.query('SELECT pg_reload_conf()');
    },
    signal,
  );
  return { restart: report.restart };
}

export interface RestorePoint {
  name: string;
  lsn: string;
  time: string;
  timeline: number;
}

/**
 * Creates a restore point, switches to a new WAL segment so the point reaches the archive now,
 * and records it in the stash (<series>/wal/marks/), so a restore to it knows which base backup
 * comes before it.
 */
export async function markRestorePoint(where: WalSeries, name: string, signal?: AbortSignal): Promise<RestorePoint> {
  let point: RestorePoint;
  try {
    point = await onDatabase(
      where.target,
      async (c) => {
        const r = await c.query<{ lsn: string; time: Date; timeline: number }>(
          `SELECT pg_create_restore_point($1)::text AS lsn, now() AS time, (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline`,
          [name],
        );
        await c.query('SELECT pg_switch_wal()');
        return { name, lsn: r.rows[0].lsn, time: r.rows[0].time.toISOString(), timeline: r.rows[0].timeline };
      },
      signal,
    );
  } catch (err) {
    throw err instanceof DbstashError ? err : classifyPgError(err, where.target);
  }
  const key = `${walPrefix(where.series.key)}marks/${name.replace(/[^A-Za-z0-9._-]+/g, '-')}-${point.time.replace(/[:.]/g, '-')}.json`;
  const body = Buffer.from(JSON.stringify({ format: 'dbstash.restore-point', ...point }, null, 2) + '\n');
  for (const d of where.destinations) await putOwnBytes(d.storage, key, body, { signal });
  return point;
}
