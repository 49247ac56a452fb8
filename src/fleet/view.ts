// What the dashboard shows of the fleet, read from the control database: the workers (from the
// queue's registry of instances: host, pid, tags, last heartbeat, jobs in hand), each queue's
// counts, jobs that wait because no live worker has the tags their database asks for, and the
// recent runs (the queue keeps finished jobs a week).

import type { PgBoss } from 'pg-boss';
import type { ConfigFile } from '../config/schema.js';
import { walStatuses, type WalStatus } from './status.js';
import { kindOfQueue, QUEUE_SCHEMA, queuesOf, type FleetJobData, type FleetJobEvent, type JobOutcome } from './queue.js';
import { parseTags, tagsOfQueue, tagsText } from './tags.js';

export interface FleetWorker {
  role: string;
  host: string;
  pid: number;
  tags: string;
  live: boolean;
  heartbeatAt: string;
  startedAt: string;
  /** Jobs in hand at its last heartbeat. */
  active: number;
}

export interface FleetQueue {
  name: string;
  kind: string;
  tags: string;
  queued: number;
  active: number;
  failed: number;
  /** Live workers that take its jobs. */
  workers: number;
  /** Set when jobs wait and no live worker takes them. */
  stuck?: string;
}

export interface FleetRun {
  id: string;
  kind: string;
  database: string;
  by: string;
  state: string;
  attempts: number;
  createdAt: string;
  startedAt?: string;
  completedAt?: string;
  worker?: string;
  exitCode?: number;
  error?: string;
  durationMs?: number;
}

export interface FleetView {
  workers: FleetWorker[];
  queues: FleetQueue[];
  runs: FleetRun[];
  /** Each physical database's WAL archiving, as the agent on its host last reported it. */
  wal: WalStatus[];
}

/** `worker region=eu` (the instance name a worker registers with) → its role and tags. */
function tagsOfRole(name: string | null): { role: string; tags: Record<string, string> } {
  const [role, tags] = (name ?? '').split(' ');
  return { role: role || 'unknown', tags: parseTags(tags, 'instance name') };
}

export async function fleetView(boss: PgBoss, config: ConfigFile, opts: { runs?: number } = {}): Promise<FleetView> {
  const instances = await boss.getInstances();
  const workers: (FleetWorker & { tagMap: Record<string, string> })[] = instances
    .filter((i) => i.stoppedOn === null || Date.now() - i.heartbeatOn.getTime() < 3600_000)
    .map((i) => {
      const { role, tags } = tagsOfRole(i.name);
      return {
        role,
        host: i.host,
        pid: i.pid,
        tags: tagsText(tags),
        tagMap: tags,
        live: i.live,
        heartbeatAt: i.heartbeatOn.toISOString(),
        startedAt: i.startedOn.toISOString(),
        active: i.workers.reduce((n, w) => n + w.active, 0),
      };
    })
    .sort((a, b) => Number(b.live) - Number(a.live) || a.host.localeCompare(b.host) || a.pid - b.pid);
  const names = queuesOf(config);
  // Counted now (the queue's own counts are a cache refreshed by its monitor).
  const counted = (await boss.getDb().executeSql(
    `SELECT name, state, count(*)::int AS n FROM ${QUEUE_SCHEMA}.job WHERE name = ANY($1) AND state IN ('created', 'retry', 'active', 'failed') GROUP BY name, state`,
    [names],
  )) as { rows: { name: string; state: string; n: number }[] };
  const count = (name: string, ...states: string[]) => counted.rows.filter((r) => r.name === name && states.includes(r.state)).reduce((n, r) => n + r.n, 0);
  const queues: FleetQueue[] = names.map((name) => {
    const want = tagsOfQueue(name);
    const serving = workers.filter((w) => w.live && w.role === 'worker' && Object.entries(want).every(([k, v]) => w.tagMap[k] === v)).length;
    const queued = count(name, 'created', 'retry');
    return {
      name,
      kind: kindOfQueue(name),
      tags: tagsText(want),
      queued,
      active: count(name, 'active'),
      failed: count(name, 'failed'),
      workers: serving,
      ...(queued > 0 && serving === 0 ? { stuck: `${queued} job${queued === 1 ? '' : 's'} wait: no live worker${Object.keys(want).length ? ` with ${tagsText(want)}` : ''} takes them` } : {}),
    };
  });
  // The newest runs of every queue at once (findJobs() pages from the oldest); their events stay in the database.
  const { rows } = (await boss.getDb().executeSql(
    `SELECT id, name, data, state, retry_count, created_on, started_on, completed_on, output - 'events' AS output FROM ${QUEUE_SCHEMA}.job WHERE name = ANY($1) ORDER BY created_on DESC LIMIT $2`,
    [names, opts.runs ?? 100],
  )) as { rows: RunRow[] };
  const runs = rows.map(runOf);
  runs.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  return { workers: workers.map(({ tagMap: _t, ...w }) => w), queues, runs, wal: await walStatuses(boss) };
}

type RunRow = { id: string; name: string; data: FleetJobData; state: string; retry_count: number; created_on: Date; started_on: Date | null; completed_on: Date | null; output: JobOutcome | null };

/** One run of the fleet with the lines its (last) attempt recorded, or undefined when the queue has no such job. */
export type FleetRunDetail = FleetRun & { events: FleetJobEvent[] };

export async function fleetRun(boss: PgBoss, config: ConfigFile, id: string): Promise<FleetRunDetail | undefined> {
  if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
  const { rows } = (await boss.getDb().executeSql(
    `SELECT id, name, data, state, retry_count, created_on, started_on, completed_on, output FROM ${QUEUE_SCHEMA}.job WHERE name = ANY($1) AND id = $2`,
    [queuesOf(config), id],
  )) as { rows: RunRow[] };
  return rows[0] ? { ...runOf(rows[0]), events: rows[0].output?.events ?? [] } : undefined;
}

function runOf(j: RunRow): FleetRun {
  const out = j.output ?? {};
  return {
    id: j.id,
    kind: kindOfQueue(j.name),
    database: j.data.database,
    by: j.data.by,
    state: j.state,
    attempts: j.retry_count + 1,
    createdAt: new Date(j.created_on).toISOString(),
    ...(j.started_on && j.state !== 'created' ? { startedAt: new Date(j.started_on).toISOString() } : {}),
    ...(j.completed_on ? { completedAt: new Date(j.completed_on).toISOString() } : {}),
    ...(out.worker ? { worker: out.worker } : {}),
    ...(out.exitCode !== undefined ? { exitCode: out.exitCode } : {}),
    ...(j.state === 'failed' || j.state === 'retry' ? { error: out.message ?? 'no reason recorded' } : {}),
    ...(out.durationMs !== undefined ? { durationMs: out.durationMs } : {}),
  };
}

