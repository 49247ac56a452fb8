// The dashboard's pages, rendered on the server. hono's html`` escapes every interpolated value,
// so a table, label or error text from a database or a manifest always renders as text; raw() is
// used only for markup built here from escaped parts. No inline script or style: the
// Content-Security-Policy allows only dbstash's own /static files.

import { html, raw } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { Manifest } from '../catalog/manifest.js';
import { formatBytes, formatDuration } from '../core/format.js';
import { can, type Principal } from './auth.js';
import type { BackupSummary, CalendarDay, DatabaseSummary } from './data.js';
import type { AuditEntry, JobRecord } from './jobs.js';
import type { FleetRunDetail, FleetView } from '../fleet/view.js';

type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

const age = (iso: string) => `${formatDuration(Date.now() - Date.parse(iso))} ago`;
const when = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

export function layout(title: string, who: Principal | undefined, csrf: string | undefined, body: Html, opts: { charts?: boolean } = {}): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${csrf ? html`<meta name="csrf-token" content="${csrf}">` : ''}
<title>${title} · dbstash</title>
<link rel="stylesheet" href="/static/app.css">
${opts.charts ? html`<link rel="stylesheet" href="/static/uplot.css"><script src="/static/uplot.js" defer></script>` : ''}
<script src="/static/app.js" defer></script>
</head>
<body>
<header>
  <a class="brand" href="/">dbstash</a>
  ${who
    ? html`<nav><a href="/">Overview</a><a href="/activity">Activity</a>${can(who.role, 'settings') ? html`<a href="/settings">Settings</a>` : ''}</nav>
      <form method="post" action="/logout" class="logout"><input type="hidden" name="_csrf" value="${csrf ?? ''}"><span>${who.name} (${who.role})</span><button type="submit">Log out</button></form>`
    : ''}
</header>
<main>
${body}
</main>
</body>
</html>`;
}

export function loginPage(error?: string, user = ''): Html {
  return layout(
    'Log in',
    undefined,
    undefined,
    html`<h1>Log in</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="/login" class="login">
  <label>User <input name="user" autocomplete="username" value="${user}" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Log in</button>
</form>`,
  );
}

function healthBadge(h: DatabaseSummary['health']): Html {
  return html`<span class="badge ${h}">${h}</span>`;
}

function labels(l: Record<string, string>): Html {
  const entries = Object.entries(l);
  return entries.length ? html`${entries.map(([k, v]) => html`<span class="label">${k}=${v}</span> `)}` : html``;
}

/** A small size trend as an inline SVG polyline (no script). */
function sparkline(points: { size: number }[]): Html {
  if (points.length < 2) return html``;
  const max = Math.max(...points.map((p) => p.size)) || 1;
  const w = 100;
  const h = 24;
  const xy = points.map((p, i) => `${((i / (points.length - 1)) * w).toFixed(1)},${(h - (p.size / max) * (h - 2) - 1).toFixed(1)}`).join(' ');
  return html`<svg class="spark" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="stored size of the last ${points.length} backups"><polyline points="${xy}"/></svg>`;
}

function actions(who: Principal, database: string): Html {
  const buttons: Html[] = [];
  if (can(who.role, 'backup')) buttons.push(html`<button class="action" data-post="/api/v1/databases/${encodeURIComponent(database)}/backup">Back up now</button>`);
  if (can(who.role, 'verify')) buttons.push(html`<button class="action" data-post="/api/v1/databases/${encodeURIComponent(database)}/verify">Drill now</button>`);
  return html`${buttons}`;
}

export function overviewPage(who: Principal, csrf: string | undefined, dbs: DatabaseSummary[], running: JobRecord[], fleet?: FleetView): Html {
  return layout(
    'Overview',
    who,
    csrf,
    html`<h1>Databases</h1>
${fleet ? fleetSummary(fleet) : ''}
<div id="job-area" aria-live="polite"></div>
<div class="table-wrap"><table class="databases">
<thead><tr><th>Database</th><th>Health</th><th>Newest backup</th><th>Size</th><th>Trend</th><th>Backups</th><th>Last drill</th><th></th></tr></thead>
<tbody>
${dbs.map(
  (d) => html`<tr data-database="${d.name}">
  <td><a href="/databases/${encodeURIComponent(d.name)}">${d.name}</a><div class="sub">${d.engine} ${labels(d.labels)}</div></td>
  <td>${healthBadge(d.health)}<div class="sub">${d.reason}</div>${d.nextBackup ? html`<div class="sub">next backup ${when(d.nextBackup)}</div>` : ''}${d.window ? html`<div class="sub">recoverable ${when(d.window.from)} → ${when(d.window.to)}${d.window.gaps.length ? html` <span class="badge failing">gap</span>` : ''}</div>` : ''}</td>
  <td>${d.newest ? html`<a href="/backups/${encodeURIComponent(d.newest.id)}">${age(d.newest.finishedAt)}</a>` : '—'}</td>
  <td>${d.newest ? formatBytes(d.newest.size) : '—'}<div class="sub">${formatBytes(d.storedBytes)} stored${Object.keys(d.storedByDestination).length > 1 ? html`: ${Object.entries(d.storedByDestination).map(([name, bytes], i) => html`${i ? ', ' : ''}${name} ${formatBytes(bytes)}`)}` : html` in ${Object.keys(d.storedByDestination)[0] ?? '—'}`}</div></td>
  <td>${sparkline(d.trend)}</td>
  <td>${d.backups}</td>
  <td>${d.lastVerify ? html`<span class="badge ${d.lastVerify.result === 'passed' ? 'fresh' : 'failing'}">${d.lastVerify.level} ${d.lastVerify.result}</span><div class="sub">${age(d.lastVerify.at)}</div>` : '—'}</td>
  <td class="actions">${actions(who, d.name)}${running.some((j) => j.database === d.name) ? html`<span class="sub">running…</span>` : ''}</td>
</tr>`,
)}
</tbody></table></div>`,
  );
}

/** Oldest first, for the charts: Unix seconds, MiB, seconds, rows (the last 500 backups). */
function chartData(backups: BackupSummary[]): { t: number[]; size: number[]; duration: number[]; rows: number[] } {
  const b = backups.slice(0, 500).reverse();
  return {
    t: b.map((x) => Math.round(Date.parse(x.finishedAt) / 1000)),
    size: b.map((x) => Math.round((x.size / 2 ** 20) * 1000) / 1000),
    duration: b.map((x) => Math.round(x.durationMs) / 1000),
    rows: b.map((x) => x.rows),
  };
}

/** The history's sortable columns: what each sorts by. */
export const HISTORY_SORTS = {
  finished: (b: BackupSummary) => b.finishedAt,
  size: (b: BackupSummary) => b.size,
  duration: (b: BackupSummary) => b.durationMs,
  rows: (b: BackupSummary) => b.rows,
} as const;
export type HistorySort = { by: keyof typeof HISTORY_SORTS; order: 'asc' | 'desc' };

/** Backups in the asked order (ties newest first); the default is newest first. */
export function sortHistory(backups: BackupSummary[], sort: HistorySort): BackupSummary[] {
  const key = HISTORY_SORTS[sort.by];
  const sign = sort.order === 'asc' ? 1 : -1;
  return [...backups].sort((a, b) => {
    const x = key(a);
    const y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * sign || b.finishedAt.localeCompare(a.finishedAt);
  });
}

export function databasePage(who: Principal, csrf: string | undefined, d: DatabaseSummary, unsorted: BackupSummary[], page: number, pageSize: number, days: CalendarDay[] = [], sort: HistorySort = { by: 'finished', order: 'desc' }): Html {
  const backups = sortHistory(unsorted, sort);
  const pages = Math.max(1, Math.ceil(backups.length / pageSize));
  const shown = backups.slice((page - 1) * pageSize, page * pageSize);
  const query = (p: number, by = sort.by, order = sort.order) => `?sort=${by}&order=${order}&page=${p}`;
  /** A column header that sorts by it (a second click turns the order round). */
  const th = (label: string, by: HistorySort['by']) => {
    const current = sort.by === by;
    const next = current && sort.order === 'desc' ? 'asc' : 'desc';
    return html`<th aria-sort="${current ? (sort.order === 'asc' ? 'ascending' : 'descending') : 'none'}"><a href="${query(1, by, next)}">${label}${current ? (sort.order === 'asc' ? ' ▲' : ' ▼') : ''}</a></th>`;
  };
  const schedule = Object.entries(d.schedule);
  return layout(
    d.name,
    who,
    csrf,
    html`<h1>${d.name} ${healthBadge(d.health)}</h1>
<p class="sub">${d.engine} · ${d.url} ${labels(d.labels)}</p>
<p>${d.reason}</p>
<p>${schedule.length ? html`Schedule: ${schedule.map(([k, v]) => html`<span class="label">${k} "${v}"</span> `)}` : 'No schedule in the config.'}</p>
<div id="job-area" aria-live="polite"></div>
<p class="actions">${actions(who, d.name)}</p>
<p><button id="prune-button" data-url="/api/v1/databases/${encodeURIComponent(d.name)}/prune"${can(who.role, 'prune') ? raw(' data-can-prune="1"') : ''}>${can(who.role, 'prune') ? 'Prune…' : 'Retention preview'}</button></p><div id="prune-area" aria-live="polite"></div>
${days.length ? calendar(days) : ''}
${backups.length >= 2
  ? html`<h2>Over time</h2>
<div class="charts">
  <figure><figcaption>Stored size (MiB)</figcaption><div class="chart" data-series="size"></div></figure>
  <figure><figcaption>Duration (s)</figcaption><div class="chart" data-series="duration"></div></figure>
  <figure><figcaption>Rows</figcaption><div class="chart" data-series="rows"></div></figure>
</div>
<script type="application/json" id="chart-data">${raw(JSON.stringify(chartData(unsorted)).replace(/</g, '\\u003c'))}</script>`
  : ''}
<h2>History (${backups.length})</h2>
<div class="table-wrap"><table class="history">
<thead><tr>${th('Finished', 'finished')}<th>Backup</th>${th('Size', 'size')}<th>Raw</th>${th('Duration', 'duration')}${th('Rows', 'rows')}<th>Storages</th><th>Verified</th></tr></thead>
<tbody>
${shown.map(
  (b) => html`<tr>
  <td>${when(b.finishedAt)}</td>
  <td><a href="/backups/${encodeURIComponent(b.id)}">${b.id}</a>${b.degraded ? html` <span class="badge stale">degraded</span>` : ''}</td>
  <td>${formatBytes(b.size)}</td><td>${formatBytes(b.rawSize)}</td><td>${formatDuration(b.durationMs)}</td><td>${b.rows.toLocaleString('en')}</td>
  <td>${b.storages.join(', ')}</td><td>${b.verifications ? `${b.verifications}×` : '—'}</td>
</tr>`,
)}
</tbody></table></div>
${pages > 1 ? html`<p class="pager">${page > 1 ? html`<a href="${query(page - 1)}">previous</a>` : ''} page ${page} of ${pages} ${page < pages ? html`<a href="${query(page + 1)}">next</a>` : ''}</p>` : ''}`,
    { charts: backups.length >= 2 },
  );
}

/**
 * Successes and failures by day, a column per week (Monday on top): green when every backup run
 * of the day succeeded, red when runs failed and none succeeded, amber for both.
 */
function calendar(days: CalendarDay[]): Html {
  const today = new Date().toISOString().slice(0, 10);
  const weeks: CalendarDay[][] = [];
  for (let i = 0; i < days.length; i += 7) weeks.push(days.slice(i, i + 7));
  const names = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
  const cell = (d: CalendarDay | undefined) => {
    if (!d || d.day > today) return html`<td class="day future"></td>`;
    const kind = d.ok && d.failed ? 'mixed' : d.failed ? 'failed' : d.ok ? 'ok' : 'none';
    const says = `${d.day}: ${d.ok} backup${d.ok === 1 ? '' : 's'}${d.failed ? `, ${d.failed} failed` : ''}`;
    return html`<td class="day ${kind}" title="${says}"><span class="sr">${says}</span></td>`;
  };
  const total = days.reduce((n, d) => n + d.ok, 0);
  const failed = days.reduce((n, d) => n + d.failed, 0);
  return html`<h2>Calendar</h2>
<p class="sub">The last ${weeks.length} weeks: ${total} backup${total === 1 ? '' : 's'}, ${failed} failed run${failed === 1 ? '' : 's'}.</p>
<div class="table-wrap calendar-wrap"><table class="calendar" aria-label="backups by day">
<tbody>${names.map((n, row) => html`<tr><th scope="row">${n}</th>${weeks.map((w) => cell(w[row]))}</tr>`)}</tbody>
</table></div>
<p class="legend"><span class="day ok"></span> backed up <span class="day mixed"></span> some failed <span class="day failed"></span> failed <span class="day none"></span> none</p>`;
}

export function backupPage(who: Principal, csrf: string | undefined, m: Manifest, storages: string[], records: { key: string; storage: string }[]): Html {
  const byHand = m.engine === 'postgres' ? 'zstd -dc FILE | pg_restore -d NEWDB' : m.engine === 'mysql' ? 'zstd -dc FILE | mariadb NEWDB' : 'zstd -dc FILE > restored.sqlite';
  return layout(
    m.id,
    who,
    csrf,
    html`<h1>${m.id}</h1>
<dl class="facts">
  <dt>Database</dt><dd>${m.database.name} (${m.engine} ${m.database.serverVersion ?? ''})</dd>
  <dt>Environment</dt><dd>${m.environment}</dd>
  <dt>Finished</dt><dd>${when(m.finishedAt)} (${age(m.finishedAt)}), took ${formatDuration(m.durationMs)}</dd>
  <dt>Storages</dt><dd>${storages.join(', ')}</dd>
  <dt>Dump</dt><dd><code>${m.dump.tool} ${m.dump.args.join(' ')}</code></dd>
  <dt>Labels</dt><dd>${labels(m.labels)}</dd>
  <dt>Signature</dt><dd>${m.extra.signature ? 'signed' : 'not signed'}</dd>
</dl>
<h2>Artifacts</h2>
<div class="table-wrap"><table><thead><tr><th>Role</th><th>File</th><th>Size</th><th>Raw</th><th>Stages</th><th>SHA-256</th></tr></thead><tbody>
${m.artifacts.map((a) => html`<tr><td>${a.role}</td><td>${a.file}</td><td>${formatBytes(a.size)}</td><td>${formatBytes(a.rawSize)}</td><td>${a.stages.map((s) => s.id).join(' → ')}</td><td><code class="hash">${a.sha256}</code></td></tr>`)}
</tbody></table></div>
<h2>Tables (${m.tables.length})</h2>
<div class="table-wrap"><table><thead><tr><th>Table</th><th>Rows</th></tr></thead><tbody>
${m.tables.map((t) => html`<tr><td>${t.schema ? `${t.schema}.` : ''}${t.name}</td><td>${t.rows.toLocaleString('en')}</td></tr>`)}
</tbody></table></div>
<h2>Records</h2>
${records.length ? html`<ul>${records.map((r) => html`<li>${r.key.split('/').pop()} (${r.storage})</li>`)}</ul>` : html`<p>No verification or restore yet.</p>`}
${can(who.role, 'restore')
  ? html`<h2>Restore</h2>
<form id="restore-form" data-backup="${m.id}">
  <label>Into <input name="to" required placeholder="a database from the config, or a database URL"></label>
  <button type="submit">Show the plan</button>
</form>
<div id="restore-area" aria-live="polite"></div>`
  : ''}
<h2>Restore by hand</h2>
<pre><code>dbstash restore ${m.id} --to NEWDB --dry-run
dbstash restore ${m.id} --to NEWDB
# without dbstash: ${byHand}</code></pre>`,
  );
}

export function activityPage(who: Principal, csrf: string | undefined, jobs: JobRecord[], audit: AuditEntry[], fleet?: FleetView | 'unreachable'): Html {
  return layout(
    'Activity',
    who,
    csrf,
    html`<h1>Activity</h1>
${fleet === 'unreachable'
  ? html`<h2>Fleet runs</h2><p class="error" role="alert">The fleet's control database does not answer: its runs cannot be shown (see the dashboard's log).</p>`
  : fleet
    ? html`<h2>Fleet runs</h2><p class="sub">Every worker's jobs, scheduled or started here, as the control database records them. <a href="/fleet">Workers and queues</a></p>
${fleetRuns(fleet)}`
    : ''}
<h2>${fleet ? 'Jobs of this dashboard' : 'Jobs'}</h2>
${jobs.length
  ? html`<div class="table-wrap"><table><thead><tr><th>Started</th><th>Job</th><th>Database</th><th>By</th><th>State</th><th>Last event</th></tr></thead><tbody>
${jobs.map((j) => html`<tr><td>${when(j.startedAt)}</td><td><a href="/jobs/${j.id}">${j.kind}</a></td><td>${j.database}</td><td>${j.by}</td><td><span class="badge ${j.state === 'succeeded' ? 'fresh' : j.state === 'failed' ? 'failing' : 'stale'}">${j.state}</span></td><td>${j.error ?? j.events[j.events.length - 1]?.message ?? ''}</td></tr>`)}
</tbody></table></div>`
  : html`<p>No job started from the dashboard since it started.</p>`}
<h2>Audit log</h2>
${audit.length ? html`<ul class="audit">${audit.map((a) => html`<li>${when(a.at)} · ${a.user} · ${a.action} ${a.target} · ${a.result}</li>`)}</ul>` : html`<p>Nothing yet.</p>`}`,
  );
}

export function jobPage(who: Principal, csrf: string | undefined, j: JobRecord): Html {
  return layout(
    `${j.kind} ${j.database}`,
    who,
    csrf,
    html`<h1>${j.kind} of <a href="/databases/${encodeURIComponent(j.database)}">${j.database}</a></h1>
<p>Started ${when(j.startedAt)} by ${j.by}. <span id="job-state" class="badge ${j.state === 'succeeded' ? 'fresh' : j.state === 'failed' ? 'failing' : 'stale'}">${j.state}</span></p>
${j.error ? html`<p class="error" role="alert">${j.error}</p>` : ''}
<ol id="job-events" ${j.state === 'running' ? raw(`data-stream="/api/v1/jobs/${j.id}/events"`) : ''}>
${j.events.map((e) => html`<li class="${e.level}">${when(e.at)} ${e.message}</li>`)}
</ol>`,
  );
}

/** The fleet in one line on the overview, with every queue whose jobs no live worker takes. */
function fleetSummary(f: FleetView): Html {
  const live = f.workers.filter((w) => w.live && w.role === 'worker');
  const queued = f.queues.reduce((n, q) => n + q.queued, 0);
  const active = f.queues.reduce((n, q) => n + q.active, 0);
  return html`<p class="fleet-summary"><a href="/fleet">Fleet</a>: ${live.length} live worker${live.length === 1 ? '' : 's'}, ${active} job${active === 1 ? '' : 's'} running, ${queued} queued.</p>
${f.queues.filter((q) => q.stuck).map((q) => html`<p class="error" role="alert">${q.kind}: ${q.stuck}</p>`)}`;
}

export function fleetPage(who: Principal, csrf: string | undefined, f: FleetView): Html {
  return layout(
    'Fleet',
    who,
    csrf,
    html`<h1>Fleet</h1>
${fleetSummary(f)}
<h2>Workers</h2>
${f.workers.length
  ? html`<div class="table-wrap"><table class="workers"><thead><tr><th>Role</th><th>Host</th><th>Pid</th><th>Tags</th><th>State</th><th>Last heartbeat</th><th>Jobs in hand</th></tr></thead><tbody>
${f.workers.map((w) => html`<tr><td>${w.role}</td><td>${w.host}</td><td>${w.pid}</td><td>${w.tags || '—'}</td><td><span class="badge ${w.live ? 'fresh' : 'never'}">${w.live ? 'live' : 'gone'}</span></td><td>${age(w.heartbeatAt)}</td><td>${w.active}</td></tr>`)}
</tbody></table></div>`
  : html`<p>No worker has registered with the queue.</p>`}
<h2>Queues</h2>
<div class="table-wrap"><table class="queues"><thead><tr><th>Queue</th><th>Tags</th><th>Queued</th><th>Running</th><th>Failed (a week)</th><th>Live workers</th></tr></thead><tbody>
${f.queues.map((q) => html`<tr><td>${q.kind}</td><td>${q.tags || '—'}</td><td>${q.queued}</td><td>${q.active}</td><td>${q.failed}</td><td>${q.workers}${q.stuck ? html` <span class="badge failing">none takes them</span>` : ''}</td></tr>`)}
</tbody></table></div>
${f.wal.length
  ? html`<h2>WAL archiving</h2>
<div class="table-wrap"><table class="wal"><thead><tr><th>Database</th><th>Host</th><th>State</th><th>Recovery point</th><th>Window from</th><th>Reported</th></tr></thead><tbody>
${f.wal.map((w) => html`<tr><td>${w.database}</td><td>${w.host}</td><td><span class="badge ${w.healthy ? 'fresh' : 'failing'}">${w.healthy ? 'healthy' : 'failing'}</span>${w.problems.length ? html`<div class="sub">${w.problems.join('; ')}</div>` : ''}</td><td>${w.lastArchivedAt ? when(w.lastArchivedAt) : '—'}</td><td>${w.windowFrom ? when(w.windowFrom) : '—'}</td><td>${age(w.reportedAt)}</td></tr>`)}
</tbody></table></div>`
  : ''}
<h2>Recent runs</h2>
${fleetRuns(f)}`,
  );
}

/** The fleet's runs, as the control database records them (the queue keeps finished jobs a week). */
function fleetRuns(f: FleetView): Html {
  const badge = (state: string) => html`<span class="badge ${state === 'completed' ? 'fresh' : state === 'failed' ? 'failing' : 'stale'}">${state}</span>`;
  return f.runs.length
    ? html`<div class="table-wrap"><table class="runs"><thead><tr><th>Queued</th><th>Job</th><th>Database</th><th>By</th><th>State</th><th>Attempts</th><th>Worker</th><th>Duration</th><th>Error</th></tr></thead><tbody>
${f.runs.map((r) => html`<tr><td>${when(r.createdAt)}</td><td><a href="/fleet/runs/${r.id}">${r.kind}</a></td><td>${r.database}</td><td>${r.by}</td><td>${badge(r.state)}</td><td>${r.attempts}</td><td>${r.worker ?? '—'}</td><td>${r.durationMs !== undefined ? formatDuration(r.durationMs) : '—'}</td><td>${r.error ?? ''}</td></tr>`)}
</tbody></table></div>`
    : html`<p>No job in the last week.</p>`;
}

export function fleetRunPage(who: Principal, csrf: string | undefined, r: FleetRunDetail): Html {
  return layout(
    `${r.kind} ${r.database}`,
    who,
    csrf,
    html`<h1>${r.kind} of <a href="/databases/${encodeURIComponent(r.database)}">${r.database}</a> on the fleet</h1>
<p>Queued ${when(r.createdAt)} by ${r.by}. <span class="badge ${r.state === 'completed' ? 'fresh' : r.state === 'failed' ? 'failing' : 'stale'}">${r.state}</span>
attempt ${r.attempts}${r.worker ? html`, worker ${r.worker}` : ''}${r.durationMs !== undefined ? html`, ${formatDuration(r.durationMs)}` : ''}${r.exitCode !== undefined ? html`, exit code ${r.exitCode}` : ''}.</p>
${r.error ? html`<p class="error" role="alert">${r.error}</p>` : ''}
${r.events.length
  ? html`<h2>Events of the ${r.state === 'completed' ? 'run' : 'last attempt'}</h2><ol id="job-events">${r.events.map((e) => html`<li class="${e.level}">${when(e.at)} ${e.message}</li>`)}</ol>`
  : html`<p>No events recorded yet${r.state === 'created' ? ': no worker has taken the job' : ''}.</p>`}`,
  );
}

export function settingsPage(who: Principal, csrf: string | undefined, redactedYaml: string): Html {
  return layout('Settings', who, csrf, html`<h1>Settings</h1><p>The effective configuration, every secret redacted.</p><pre><code>${redactedYaml}</code></pre>`);
}

export function errorPage(who: Principal | undefined, csrf: string | undefined, status: number, message: string): Html {
  return layout(String(status), who, csrf, html`<h1>${status}</h1><p class="error">${message}</p><p><a href="/">Overview</a></p>`);
}
