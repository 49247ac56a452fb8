/**
 * The dashboard's JSON API and its security, over HTTP against `dbstash dashboard` with real
 * SQLite and PostgreSQL databases: 401 without credentials, 403 by role, CSRF and cross-origin
 * refusals, the login limit, bad input, backups and drills run through the same job bodies as the
 * daemon, the redacted settings, the security headers, and the refusals at start.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../harness/run.js';
import { startDashboardFixture, login, waitForJob, HOSTILE, PASSWORDS, type DashboardFixture } from './helpers.js';
import { verifyPassword } from '../../src/web/auth.js';

let d: DashboardFixture;

before(async () => {
  d = await startDashboardFixture();
});
after(async () => {
  await d?.stop();
});

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

describe('the dashboard API', () => {
  it('answers 401 without credentials or with an unknown token, and sends the security headers', async () => {
    const none = await fetch(`${d.url}/api/v1/databases`);
    assert.equal(none.status, 401);
    assert.match(((await none.json()) as { error: string }).error, /authentication required/);
    const wrong = await fetch(`${d.url}/api/v1/databases`, { headers: bearer('dbst_not-a-token') });
    assert.equal(wrong.status, 401);
    // Every read route, the newer ones included, asks for credentials first.
    for (const route of ['/api/v1/databases/shop/backups', '/api/v1/databases/shop/calendar', '/api/v1/databases/shop/prune', '/api/v1/jobs', '/api/v1/audit', '/api/v1/fleet', '/api/v1/fleet/runs/00000000-0000-0000-0000-000000000000']) {
      assert.equal((await fetch(`${d.url}${route}`)).status, 401, route);
    }
    const page = await fetch(`${d.url}/`, { redirect: 'manual' });
    assert.equal(page.status, 303);
    assert.equal(page.headers.get('location'), '/login');
    const csp = none.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(none.headers.get('x-content-type-options'), 'nosniff');
  });

  it('lists the configured databases to a viewer token, refuses its POST (403), and 404s what does not exist', async () => {
    const res = await fetch(`${d.url}/api/v1/databases`, { headers: bearer(d.tokens.viewer) });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { databases: { name: string; health: string; url: string; labels: Record<string, string> }[] };
    assert.deepEqual(body.databases.map((x) => x.name).sort(), ['broken', 'pg', 'shop']);
    assert.ok(body.databases.every((x) => x.health === 'never'));
    const pg = body.databases.find((x) => x.name === 'pg')! as (typeof body.databases)[number] & { nextBackup?: string };
    assert.match(pg.nextBackup ?? '', /T03:00:00\.000Z$/, 'the next scheduled backup, from the schedule');
    assert.doesNotMatch(pg.url, new RegExp(d.pg.password), 'no password in the API');
    assert.equal(body.databases.find((x) => x.name === 'shop')!.labels.note, HOSTILE, 'JSON carries the label as data');
    const post = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: bearer(d.tokens.viewer) });
    assert.equal(post.status, 403);
    assert.match(((await post.json()) as { error: string }).error, /the viewer role may not backup/);
    assert.equal((await fetch(`${d.url}/api/v1/databases/nope`, { headers: bearer(d.tokens.viewer) })).status, 404);
    assert.equal((await fetch(`${d.url}/api/v1/backups/nope`, { headers: bearer(d.tokens.viewer) })).status, 404);
    assert.equal((await fetch(`${d.url}/api/v1/jobs/nope`, { headers: bearer(d.tokens.viewer) })).status, 404);
    assert.equal((await fetch(`${d.url}/api/v1/databases/shop/backups?limit=0`, { headers: bearer(d.tokens.viewer) })).status, 400);
    assert.equal((await fetch(`${d.url}/api/v1/databases/shop/backups?offset=-1`, { headers: bearer(d.tokens.viewer) })).status, 400);
  });

  it('an operator token backs up PostgreSQL and SQLite through the same core as the CLI; the history and the backup answer; a second request while one runs gets 409', async () => {
    const op = bearer(d.tokens.operator);
    const first = await fetch(`${d.url}/api/v1/databases/pg/backup`, { method: 'POST', headers: op });
    assert.equal(first.status, 202);
    const { job } = (await first.json()) as { job: { id: string; state: string } };
    const second = await fetch(`${d.url}/api/v1/databases/pg/backup`, { method: 'POST', headers: op });
    if (second.status === 409) assert.equal(((await second.json()) as { job: { id: string } }).job.id, job.id, 'the running job, not a second one');
    else assert.equal(second.status, 202, 'the first had ended already');
    const done = await waitForJob(d.url, job.id, op);
    assert.equal(done.state, 'succeeded', done.error);
    assert.ok(done.events.some((e) => /backup .* done/.test(e.message)), 'the job carries the backup\'s events');
    const shop = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: op });
    const shopJob = (await shop.json()) as { job: { id: string } };
    assert.equal((await waitForJob(d.url, shopJob.job.id, op)).state, 'succeeded');

    const list = (await (await fetch(`${d.url}/api/v1/databases/pg/backups`, { headers: op })).json()) as { total: number; backups: { id: string; rows: number }[] };
    assert.ok(list.total >= 1);
    assert.equal(list.backups[0].rows, 1000);
    const one = (await (await fetch(`${d.url}/api/v1/backups/${list.backups[0].id}`, { headers: op })).json()) as { manifest: { id: string; tables: { name: string; rows: number }[] } };
    assert.equal(one.manifest.id, list.backups[0].id);
    assert.deepEqual(one.manifest.tables.map((t) => [t.name, t.rows]), [['items', 1000]]);
    const dbs = (await (await fetch(`${d.url}/api/v1/databases`, { headers: op })).json()) as { databases: { name: string; health: string }[] };
    assert.equal(dbs.databases.find((x) => x.name === 'pg')!.health, 'fresh');

    // A drill of one given backup: that backup's id in the job and its events.
    const refusedDrill = await fetch(`${d.url}/api/v1/backups/${list.backups[0].id}/verify`, { method: 'POST', headers: bearer(d.tokens.viewer) });
    assert.equal(refusedDrill.status, 403);
    assert.equal((await fetch(`${d.url}/api/v1/backups/nope/verify`, { method: 'POST', headers: op })).status, 404);
    const pgDrill = await fetch(`${d.url}/api/v1/backups/${list.backups[0].id}/verify`, { method: 'POST', headers: op });
    assert.equal(pgDrill.status, 202);
    const pgJob = (await pgDrill.json()) as { job: { id: string; backupId: string } };
    assert.equal(pgJob.job.backupId, list.backups[0].id);
    const pgDrilled = await waitForJob(d.url, pgJob.job.id, op, 120_000);
    assert.equal(pgDrilled.state, 'succeeded', pgDrilled.error);
    assert.ok(pgDrilled.events.some((e) => e.message.includes(`${list.backups[0].id}: drill passed`)), JSON.stringify(pgDrilled.events));

    const drill = await fetch(`${d.url}/api/v1/databases/shop/verify`, { method: 'POST', headers: op });
    assert.equal(drill.status, 202);
    const drilled = await waitForJob(d.url, ((await drill.json()) as { job: { id: string } }).job.id, op);
    assert.equal(drilled.state, 'succeeded', drilled.error);
    assert.ok(drilled.events.some((e) => /drill passed/.test(e.message)));
  });

  it('a failing backup (wrong password) fails its job with the reason, marks the database failing, and shows no password', async () => {
    const op = bearer(d.tokens.operator);
    const res = await fetch(`${d.url}/api/v1/databases/broken/backup`, { method: 'POST', headers: op });
    const job = await waitForJob(d.url, ((await res.json()) as { job: { id: string } }).job.id, op);
    assert.equal(job.state, 'failed');
    assert.match(job.error ?? '', /authentication failed for user "postgres"/);
    assert.doesNotMatch(JSON.stringify(job), /wrong-password/);
    const dbs = (await (await fetch(`${d.url}/api/v1/databases`, { headers: op })).json()) as { databases: { name: string; health: string; reason: string }[] };
    const broken = dbs.databases.find((x) => x.name === 'broken')!;
    assert.equal(broken.health, 'failing');
    assert.match(broken.reason, /authentication failed/);
  });

  it('a session POST needs the CSRF token and the same origin; the audit log records actions and refusals', async () => {
    const { cookie, csrf } = await login(d.url, 'operator', PASSWORDS.operator);
    assert.ok(csrf.length > 20);
    const without = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: { cookie } });
    assert.equal(without.status, 403);
    assert.match(((await without.json()) as { error: string }).error, /CSRF/);
    const wrong = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: { cookie, 'X-CSRF-Token': 'x'.repeat(43) } });
    assert.equal(wrong.status, 403);
    const foreign = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: { cookie, 'X-CSRF-Token': csrf, Origin: 'https://evil.example' } });
    assert.equal(foreign.status, 403);
    const ok = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: { cookie, 'X-CSRF-Token': csrf, Origin: d.url } });
    assert.equal(ok.status, 202);
    await waitForJob(d.url, ((await ok.json()) as { job: { id: string } }).job.id, { cookie });
    const audit = ((await (await fetch(`${d.url}/api/v1/audit`, { headers: { cookie } })).json()) as { audit: { user: string; action: string; result: string }[] }).audit;
    assert.ok(audit.some((a) => a.user === 'operator' && a.action === 'login' && a.result === 'succeeded'));
    assert.ok(audit.some((a) => a.user === 'operator' && /CSRF/.test(a.result)));
    assert.ok(audit.some((a) => a.user === 'operator' && a.action === 'backup' && a.result === 'succeeded'));
    assert.match(d.log(), /audit: operator backup shop: succeeded/, 'the audit goes to the log too');
  });

  it('restore: admins only; the plan first; a mistyped name restores nothing; the typed name restores into a new database', async () => {
    const admin = bearer(d.tokens.admin);
    const id = ((await (await fetch(`${d.url}/api/v1/databases/pg/backups`, { headers: admin })).json()) as { backups: { id: string }[] }).backups[0].id;
    const url = `${d.url}/api/v1/backups/${id}/restore`;
    const json = { 'Content-Type': 'application/json' };
    const to = d.pg.url('app_copy');
    assert.equal((await fetch(url, { method: 'POST', headers: { ...bearer(d.tokens.operator), ...json }, body: JSON.stringify({ to, dryRun: true }) })).status, 403);
    assert.equal((await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: JSON.stringify({}) })).status, 400);
    // The plan verifies the backup in full: a job, whose result is the plan.
    const planned = await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: JSON.stringify({ to, dryRun: true }) });
    assert.equal(planned.status, 202);
    const planJob = (await planned.json()) as { job: { id: string; kind: string } };
    assert.equal(planJob.job.kind, 'restore-plan');
    const planDone = await waitForJob(d.url, planJob.job.id, admin, 120_000);
    assert.equal(planDone.state, 'succeeded', planDone.error);
    const { plan, confirmWith } = planDone.result as { plan: { mode: string; database: string; targetExists: boolean }; confirmWith: string };
    assert.deepEqual([plan.mode, plan.database, plan.targetExists, confirmWith], ['new', 'app_copy', false, 'app_copy']);
    assert.ok(to.includes(`:${d.pg.password}@`), 'the target URL carries a password');
    const planRecord = await (await fetch(`${d.url}/api/v1/jobs/${planJob.job.id}`, { headers: admin })).text();
    assert.doesNotMatch(planRecord, new RegExp(d.pg.password), 'the job record masks the target URL\'s password');
    const auditText = await (await fetch(`${d.url}/api/v1/audit`, { headers: admin })).text();
    assert.match(auditText, /restore-plan/);
    assert.doesNotMatch(auditText, new RegExp(d.pg.password), 'so does the audit log');
    assert.equal((await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: JSON.stringify({ to }) })).status, 400, 'no confirmation, no restore');
    const exists = async () => (await d.pg.query(`SELECT count(*)::int AS n FROM pg_database WHERE datname = 'app_copy'`)).rows[0].n as number;
    const mistyped = await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: JSON.stringify({ to, confirm: 'app' }) });
    const wrong = await waitForJob(d.url, ((await mistyped.json()) as { job: { id: string } }).job.id, admin);
    assert.equal(wrong.state, 'failed');
    assert.match(wrong.error ?? '', /the typed name "app" is not the target database "app_copy": nothing was restored/);
    assert.equal(await exists(), 0, 'nothing was created');
    const typed = await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: JSON.stringify({ to, confirm: 'app_copy' }) });
    assert.equal(typed.status, 202);
    const done = await waitForJob(d.url, ((await typed.json()) as { job: { id: string } }).job.id, admin, 120_000);
    assert.equal(done.state, 'succeeded', done.error);
    assert.equal((await d.pg.query('SELECT count(*)::int AS n FROM items', 'app_copy')).rows[0].n, 1000);
  });

  it('prune: every role sees what the policy would remove; only admins prune; the confirmation removes exactly what the preview said', async () => {
    const admin = bearer(d.tokens.admin);
    const json = { 'Content-Type': 'application/json' };
    const url = `${d.url}/api/v1/databases/shop/prune`;
    assert.equal((await fetch(url, { method: 'POST', headers: { ...bearer(d.tokens.operator), ...json }, body: '{}' })).status, 403);
    assert.equal((await fetch(url, { method: 'POST', headers: { ...bearer(d.tokens.viewer), ...json }, body: JSON.stringify({ confirm: true }) })).status, 403);
    assert.equal((await fetch(`${d.url}/api/v1/databases/nope/prune`, { headers: bearer(d.tokens.viewer) })).status, 404);
    // One more backup: beside the newest and the newest verified one, one is left for the policy to remove.
    const more = await fetch(`${d.url}/api/v1/databases/shop/backup`, { method: 'POST', headers: admin });
    assert.equal((await waitForJob(d.url, ((await more.json()) as { job: { id: string } }).job.id, admin)).state, 'succeeded');
    const before = ((await (await fetch(`${d.url}/api/v1/databases/shop/backups`, { headers: admin })).json()) as { backups: { id: string }[] }).backups.map((b) => b.id);
    assert.ok(before.length >= 3, 'several backups of shop by now');
    const preview = (await (await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: '{}' })).json()) as { storages: { policy: string; remove: { id: string }[]; keep: { id: string }[] }[] };
    // The read-only preview answers a viewer the same as the admin's POST without confirmation.
    const seen = await fetch(url, { headers: bearer(d.tokens.viewer) });
    assert.equal(seen.status, 200);
    assert.deepEqual(await seen.json(), preview);
    assert.match(preview.storages[0].policy, /^last 1\b/, 'the policy is spelled out (keepLast: 1)');
    const keep = preview.storages[0].keep.map((b) => b.id);
    const remove = preview.storages[0].remove.map((b) => b.id);
    assert.ok(keep.includes(before[0]), 'keepLast: 1 keeps the newest');
    assert.ok(remove.length >= 1, `something to remove: ${JSON.stringify(preview)}`);
    assert.deepEqual([...keep, ...remove].sort(), [...before].sort(), 'every backup is decided');
    const after1 = ((await (await fetch(`${d.url}/api/v1/databases/shop/backups`, { headers: admin })).json()) as { total: number }).total;
    assert.equal(after1, before.length, 'the preview removed nothing');
    const go = await fetch(url, { method: 'POST', headers: { ...admin, ...json }, body: JSON.stringify({ confirm: true }) });
    assert.equal(go.status, 202);
    const job = await waitForJob(d.url, ((await go.json()) as { job: { id: string } }).job.id, admin);
    assert.equal(job.state, 'succeeded', job.error);
    const left = ((await (await fetch(`${d.url}/api/v1/databases/shop/backups`, { headers: admin })).json()) as { backups: { id: string }[] }).backups.map((b) => b.id);
    assert.deepEqual(left.sort(), keep.sort(), 'exactly what the preview said stays');
  });

  it('settings are for admins only, with every secret redacted', async () => {
    const viewer = await login(d.url, 'viewer', PASSWORDS.viewer);
    assert.equal((await fetch(`${d.url}/settings`, { headers: { cookie: viewer.cookie } })).status, 403);
    const admin = await login(d.url, 'admin', PASSWORDS.admin);
    const page = await (await fetch(`${d.url}/settings`, { headers: { cookie: admin.cookie } })).text();
    assert.match(page, /password: &quot;\*\*\*&quot;|password: \*\*\*|password: &#39;\*\*\*&#39;/);
    assert.doesNotMatch(page, /scrypt\$/);
    assert.doesNotMatch(page, new RegExp(d.pg.password));
    assert.doesNotMatch(page, /wrong-password/);
    assert.doesNotMatch(page, /T0KEN-IN-THE-PATH/, 'a webhook\'s path');
    assert.doesNotMatch(page, /header-secret/, 'a webhook\'s headers');
    assert.match(page, /http:\/\/127\.0\.0\.1:9\/…/);
  });

  it('limits failed logins: the sixth wrong password within the window is refused with 429', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${d.url}/login`, { method: 'POST', body: new URLSearchParams({ user: 'admin', password: `guess ${i}` }), redirect: 'manual' });
      assert.equal(r.status, 401);
    }
    const blocked = await fetch(`${d.url}/login`, { method: 'POST', body: new URLSearchParams({ user: 'admin', password: PASSWORDS.admin }), redirect: 'manual' });
    assert.equal(blocked.status, 429, 'even the right password waits');
    assert.match(await blocked.text(), /Too many failed attempts/);
  });

  it('the index: the calendar counts today\'s backups and failed runs; after a restart the pages answer from the kept index, with the earlier runs and audit log, and a backup the CLI made meanwhile shows; a damaged index is rebuilt', async () => {
    const v = bearer(d.tokens.viewer);
    const today = new Date().toISOString().slice(0, 10);
    const dayOf = async (name: string) => {
      const body = (await (await fetch(`${d.url}/api/v1/databases/${name}/calendar`, { headers: v })).json()) as { days: { day: string; ok: number; failed: number }[] };
      assert.equal(body.days.length % 7 !== 0 || body.days.length <= 12 * 7, true);
      return body.days.find((x) => x.day === today)!;
    };
    const shopBefore = (await (await fetch(`${d.url}/api/v1/databases/shop/backups`, { headers: v })).json()) as { total: number };
    assert.ok(shopBefore.total >= 1);
    assert.ok((await dayOf('shop')).ok >= 1, 'the operator\'s backup of shop counts today');
    assert.ok((await dayOf('broken')).failed >= 1, 'the failed backup of broken counts today');
    // broken names the same database as pg (with a wrong password): pg's backups are its own too.
    const page = await (await fetch(`${d.url}/databases/broken`, { headers: v })).text();
    const cell = new RegExp(`<td class="day (failed|mixed)" title="${today}: (\\d+) backups?, (\\d+) failed">`).exec(page);
    assert.ok(cell, 'today\'s cell shows the failure');
    assert.equal(cell[1], Number(cell[2]) > 0 ? 'mixed' : 'failed');
    // The history sorts by size, duration, rows or date, either way; a wrong sort is a 400.
    const bySize = ((await (await fetch(`${d.url}/api/v1/databases/shop/backups?sort=size&order=asc`, { headers: v })).json()) as { backups: { size: number }[] }).backups.map((b) => b.size);
    assert.deepEqual(bySize, [...bySize].sort((a, b) => a - b));
    assert.equal((await fetch(`${d.url}/api/v1/databases/shop/backups?sort=bogus`, { headers: v })).status, 400);
    assert.equal((await fetch(`${d.url}/databases/shop?order=sideways`, { headers: v })).status, 400);
    assert.match(await (await fetch(`${d.url}/databases/shop?sort=rows&order=asc`, { headers: v })).text(), /<th aria-sort="ascending"><a href="\?sort=rows&amp;order=desc&amp;page=1">Rows ▲<\/a><\/th>/);
    // Stored bytes per destination.
    const shop = (await (await fetch(`${d.url}/api/v1/databases/shop`, { headers: v })).json()) as { storedBytes: number; storedByDestination: Record<string, number> };
    assert.deepEqual(shop.storedByDestination, { local: shop.storedBytes });
    const jobsBefore = ((await (await fetch(`${d.url}/api/v1/jobs`, { headers: v })).json()) as { jobs: { id: string; state: string }[] }).jobs;
    assert.ok(jobsBefore.length >= 3);

    // A backup made by the CLI while the dashboard is down, then a restart.
    const cli = await runCli(['backup', 'shop', '--config', d.config, '--quiet']);
    assert.equal(cli.code, 0, cli.stderr);
    await d.restart();
    const jobsAfter = ((await (await fetch(`${d.url}/api/v1/jobs`, { headers: v })).json()) as { jobs: { id: string; state: string }[] }).jobs;
    assert.deepEqual(jobsAfter.map((j) => j.id).slice(0, jobsBefore.length).sort(), jobsBefore.map((j) => j.id).sort(), 'the runs are kept');
    const audit = ((await (await fetch(`${d.url}/api/v1/audit`, { headers: v })).json()) as { audit: { action: string }[] }).audit;
    assert.ok(audit.some((a) => a.action === 'backup'), 'the audit log is kept');
    const broken = ((await (await fetch(`${d.url}/api/v1/databases`, { headers: v })).json()) as { databases: { name: string; health: string }[] }).databases.find((x) => x.name === 'broken')!;
    assert.equal(broken.health, 'failing', 'still failing after a restart: the failed run is kept');
    // The rescan at start finds the CLI's backup (the pages do not wait for it).
    let total = 0;
    for (let i = 0; i < 100 && total <= shopBefore.total; i++) {
      total = ((await (await fetch(`${d.url}/api/v1/databases/shop/backups`, { headers: v })).json()) as { total: number }).total;
      if (total <= shopBefore.total) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(total, shopBefore.total + 1, 'the backup made by the CLI is listed');

    // Garbage in place of the index: it is only a cache, so it is rebuilt from the stash.
    const indexFile = path.join(d.root, '.dbstash-dashboard.sqlite');
    assert.ok(existsSync(indexFile), 'the index is kept beside the config');
    await d.restart(() => {
      for (const f of [`${indexFile}-wal`, `${indexFile}-shm`]) rmSync(f, { force: true });
      writeFileSync(indexFile, 'this is not a database '.repeat(200));
    });
    const rebuilt = ((await (await fetch(`${d.url}/api/v1/databases/shop/backups`, { headers: v })).json()) as { total: number }).total;
    assert.equal(rebuilt, shopBefore.total + 1, 'the rebuilt index lists every backup');
  });
});

describe('dashboard commands', () => {
  it('refuses to listen beyond loopback without TLS, and to start without users; user add prints a hash that verifies', async () => {
    const taken = await runCli(['dashboard', '--config', d.config, '--listen', d.url.replace('http://', '')]);
    assert.equal(taken.code, 2, taken.stderr);
    assert.match(taken.stderr, /the dashboard cannot listen on 127\.0\.0\.1:\d+: the address is in use/);
    const exposed = await runCli(['dashboard', '--config', d.config, '--listen', '0.0.0.0:0']);
    assert.equal(exposed.code, 2, exposed.stderr);
    assert.match(exposed.stderr, /reachable from other machines, without TLS/);
    const { writeFileSync } = await import('node:fs');
    const path = await import('node:path');
    const bare = path.join(d.root, 'bare.yaml');
    writeFileSync(bare, `stash: ${d.stash}\ndatabases: {}\n`);
    const nobody = await runCli(['dashboard', '--config', bare, '--listen', '127.0.0.1:0']);
    assert.equal(nobody.code, 2);
    assert.match(nobody.stderr, /the dashboard has no users/);
    const added = await runCli(['user', 'add', 'carol', '--role', 'operator', '--password-stdin', '--json'], { input: 'a long enough passphrase\n' });
    assert.equal(added.code, 0, added.stderr);
    const entry = JSON.parse(added.stdout) as { name: string; role: string; password: string };
    assert.equal(entry.role, 'operator');
    assert.ok(await verifyPassword('a long enough passphrase', entry.password));
    assert.ok(!(await verifyPassword('a long enough passphrase!', entry.password)));
    const short = await runCli(['user', 'add', 'dave', '--role', 'viewer', '--password-stdin'], { input: 'short\n' });
    assert.equal(short.code, 2);
    const badRole = await runCli(['user', 'add', 'dave', '--role', 'root', '--password-stdin'], { input: 'a long enough passphrase\n' });
    assert.equal(badRole.code, 2);
    assert.match(badRole.stderr, /--role must be viewer, operator or admin/);
  });
});

describe('docs/dashboard.md, as written', () => {
  it('token create prints a token the config takes by its hash; the curl examples list, start a backup and stream its events', async () => {
    const { readFileSync } = await import('node:fs');
    const { spawnSync } = await import('node:child_process');
    const doc = readFileSync(new URL('../../../docs/dashboard.md', import.meta.url), 'utf8');
    const blocks = [...doc.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
    const create = blocks.find((b) => b.startsWith('dbstash token create'))!.trim();
    const made = await runCli(create.split(/\s+/).slice(1).concat('--json'));
    assert.equal(made.code, 0, made.stderr);
    const { token, hash } = JSON.parse(made.stdout) as { token: string; hash: string };
    const { tokenHash } = await import('../../src/web/auth.js');
    assert.equal(tokenHash(token), hash);
    // The fixture's dashboard knows the operator token; the examples' address is its own.
    const curl = blocks.find((b) => b.includes('/api/v1/databases'))!.replaceAll('http://127.0.0.1:8484', d.url).replace('export DBSTASH_TOKEN=dbst_…', `export DBSTASH_TOKEN=${d.tokens.operator}`);
    const r = spawnSync('bash', ['-euo', 'pipefail', '-c', curl], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /"name": "shop"/);
    assert.match(r.stdout, /event: event\ndata: .*backup of shop started/);
    assert.match(r.stdout, /event: end\ndata: .*"state":"succeeded"/, r.stdout.slice(-1500));
  });
});

describe('the daemon serves the dashboard', () => {
  it('with --dashboard: the login page and the API answer; a scheduled run that fails shows as a failed job, by "schedule", and the database as failing', async () => {
    const { spawnCli } = await import('../harness/run.js');
    const { readFileSync, writeFileSync } = await import('node:fs');
    // The broken database backed up every 2 seconds by the daemon's schedule.
    const config = `${d.root}/daemon.yaml`;
    // And shop pruned every 2 seconds by the daemon's schedule (the prune job of app/actions.ts).
    const text = readFileSync(d.config, 'utf8')
      .replace(/(  broken:\n    url: [^\n]+\n)/, '$1    schedule: { backup: "*/2 * * * * *" }\n')
      .replace(/(  shop:\n    url: [^\n]+\n)/, '$1    schedule: { prune: "*/2 * * * * *" }\n');
    assert.match(text, /schedule: \{ backup: "\*\/2/);
    assert.match(text, /schedule: \{ prune: "\*\/2/);
    writeFileSync(config, text, { mode: 0o600 });
    const child = spawnCli(['daemon', '--config', config, '--dashboard', '127.0.0.1:0', '--state-file', `${d.root}/daemon-state.json`]);
    let log = '';
    child.stderr.on('data', (b: Buffer) => (log += b));
    child.stdout.on('data', (b: Buffer) => (log += b));
    try {
      for (let i = 0; i < 200 && !/dashboard on http/.test(log); i++) await new Promise((r) => setTimeout(r, 50));
      const url = /dashboard on (http:\/\/127\.0\.0\.1:\d+)/.exec(log)?.[1];
      assert.ok(url, log);
      assert.equal((await fetch(`${url}/login`)).status, 200);
      const res = await fetch(`${url}/api/v1/databases`, { headers: bearer(d.tokens.viewer) });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { databases: unknown[] }).databases.length, 3);
      let failed: { by: string; state: string; error?: string; database: string } | undefined;
      for (let i = 0; i < 100 && !failed; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const jobs = ((await (await fetch(`${url}/api/v1/jobs`, { headers: bearer(d.tokens.viewer) })).json()) as { jobs: { by: string; state: string; error?: string; database: string }[] }).jobs;
        failed = jobs.find((j) => j.by === 'schedule' && j.state === 'failed');
      }
      assert.ok(failed, `a failed scheduled run in the jobs:\n${log}`);
      assert.equal(failed.database, 'broken');
      assert.match(failed.error ?? '', /authentication failed/);
      const dbs = ((await (await fetch(`${url}/api/v1/databases`, { headers: bearer(d.tokens.viewer) })).json()) as { databases: { name: string; health: string }[] }).databases;
      assert.equal(dbs.find((x) => x.name === 'broken')!.health, 'failing');
      let pruned: { state: string; error?: string } | undefined;
      for (let i = 0; i < 100 && !pruned; i++) {
        const jobs = ((await (await fetch(`${url}/api/v1/jobs`, { headers: bearer(d.tokens.viewer) })).json()) as { jobs: { by: string; kind: string; state: string; error?: string }[] }).jobs;
        pruned = jobs.find((j) => j.by === 'schedule' && j.kind === 'prune' && j.state !== 'running');
        if (!pruned) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(pruned?.state, 'succeeded', `${pruned?.error}\n${log}`);
      assert.match(log, /\[shop\] prune of local: removed \d+ backups and \d+ leftovers, freed /);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
