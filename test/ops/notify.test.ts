// Notifications against real receivers (an HTTP server and an SMTP server on loopback): every
// channel's payload, event filtering, retries with backoff, a failing channel that never fails
// the backup, and the anomaly flag of a backup whose database lost most of its rows.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startSmtpReceiver, startWebhookReceiver, type SmtpReceiver, type WebhookReceiver } from '../harness/receivers.js';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { notificationSchema } from '../../src/config/schema.js';
import { createNotifier } from '../../src/notify/notifier.js';
import { makeMessage } from '../../src/notify/message.js';
import { makeSqliteDb, writeConfig } from './helpers.js';
import { seriesDir } from '../harness/stash.js';

let hook: WebhookReceiver;
let smtp: SmtpReceiver;

before(async () => {
  hook = await startWebhookReceiver();
  smtp = await startSmtpReceiver();
});
after(async () => {
  await hook.stop();
  await smtp.stop();
});

function quietLog() {
  const warnings: string[] = [];
  return { warnings, warn: (m: string) => warnings.push(m) };
}

const sample = () =>
  makeMessage({ event: 'failure', database: 'shop', environment: 'prod', backupId: 'shop_prod_2026-11-23T08-07-00Z', size: 1234, durationMs: 5000, sha256: 'ab'.repeat(32), error: 'pg_dump exited with 1', hint: 'check the server log' });

test('webhook, slack, discord and email each deliver the message fields; heartbeats only call the URL', async () => {
  const start = hook.requests.length;
  const configs = [
    { type: 'webhook', url: `${hook.url}/hook`, headers: { authorization: 'Bearer t0ken' } },
    { type: 'slack', url: `${hook.url}/slack` },
    { type: 'discord', url: `${hook.url}/discord` },
    { type: 'webhook', url: `${hook.url}/beat-fail`, method: 'GET', events: ['failure'] },
    { type: 'webhook', url: `${hook.url}/beat`, method: 'HEAD' },
    { type: 'email', to: ['oncall@example.test'], from: 'backups@example.test', smtp: { host: smtp.host, port: smtp.port } },
  ].map((c) => notificationSchema.parse(c));
  const log = quietLog();
  const deliveries = await createNotifier(configs, log).notify(sample());
  // The HEAD heartbeat listens to success only (its default), so five channels take a failure.
  assert.equal(deliveries.length, 5);
  assert.ok(deliveries.every((d) => d.ok && d.attempts === 1), JSON.stringify(deliveries));
  assert.deepEqual(log.warnings, []);

  const got = (await hook.waitFor(start + 4)).slice(start);
  const byPath = Object.fromEntries(got.map((r) => [r.path, r]));
  assert.deepEqual(Object.keys(byPath).sort(), ['/beat-fail', '/discord', '/hook', '/slack']);
  const json = JSON.parse(byPath['/hook'].body);
  assert.equal(byPath['/hook'].method, 'POST');
  assert.equal(byPath['/hook'].headers.authorization, 'Bearer t0ken');
  assert.equal(json.event, 'failure');
  assert.equal(json.database, 'shop');
  assert.equal(json.environment, 'prod');
  assert.equal(json.backupId, 'shop_prod_2026-11-23T08-07-00Z');
  assert.equal(json.size, 1234);
  assert.equal(json.durationMs, 5000);
  assert.equal(json.sha256, 'ab'.repeat(32));
  assert.equal(json.error, 'pg_dump exited with 1');
  assert.equal(json.hint, 'check the server log');
  assert.match(JSON.parse(byPath['/slack'].body).text, /shop \(prod\): BACKUP FAILED[\s\S]*error: pg_dump exited with 1[\s\S]*hint: check the server log/);
  assert.match(JSON.parse(byPath['/discord'].body).content, /backup: shop_prod_2026-11-23T08-07-00Z/);
  assert.equal(byPath['/beat-fail'].method, 'GET');
  assert.equal(byPath['/beat-fail'].body, '');

  const [mail] = await smtp.waitFor(1);
  assert.equal(mail.from, 'backups@example.test');
  assert.deepEqual(mail.to, ['oncall@example.test']);
  assert.match(mail.raw, /Subject: \[dbstash\] shop \(prod\): BACKUP FAILED/);
  assert.match(mail.raw, /sha256: abab/);
  assert.match(mail.raw, /duration: 5\.0s/);
});

test('a failing delivery is retried with backoff; one that keeps failing is logged, not thrown', async () => {
  const log = quietLog();
  const retried = notificationSchema.parse({ type: 'webhook', url: `${hook.url}/retry`, events: ['failure'], retries: 3, retryDelay: '50ms' });
  hook.failNext(2, 503);
  const t0 = Date.now();
  const [ok] = await createNotifier([retried], log).notify(sample());
  assert.deepEqual({ ok: ok.ok, attempts: ok.attempts }, { ok: true, attempts: 3 });
  assert.ok(Date.now() - t0 >= 150, 'waited 50ms then 100ms between attempts');
  assert.equal(hook.requests.filter((r) => r.path === '/retry').length, 3);

  const hopeless = notificationSchema.parse({ type: 'webhook', url: `${hook.url}/down`, events: ['failure'], retries: 1, retryDelay: '10ms' });
  hook.failNext(5, 500);
  const [bad] = await createNotifier([hopeless], log).notify(sample());
  hook.failNext(0);
  assert.equal(bad.ok, false);
  assert.equal(bad.attempts, 2);
  assert.match(bad.error!, /answered 500/);
  assert.equal(log.warnings.length, 1);
  assert.match(log.warnings[0], /notification failure to webhook#1 http:\/\/127\.0\.0\.1:\d+\/… failed after 2 attempts/);
});

test('an invalid notification config names the key and the valid values', async () => {
  const dir = tempDir('notify-cfg');
  const config = writeConfig(dir, { notifications: [{ type: 'pager', url: 'http://x' }] });
  const r = await runCli(['list', '--config', config, '--output-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /error: .*notifications\.0\.type.*'webhook' \| 'slack' \| 'discord' \| 'email'/);
  assert.match(r.stderr, /hint: /);
});

test('dbstash backup notifies success and anomaly; a dead channel only warns; a failed backup notifies failure', async () => {
  const dir = tempDir('notify-backup');
  const db = makeSqliteDb(path.join(dir, 'app.db'), 2000);
  const stash = path.join(dir, 'stash');
  const start = hook.requests.length;
  const config = writeConfig(dir, {
    stash,
    databases: { app: { url: db } },
    notifications: [
      { type: 'webhook', url: `${hook.url}/events`, events: ['success', 'failure', 'anomaly'] },
      { type: 'webhook', url: 'http://127.0.0.1:1/unreachable', events: ['success'], retries: 0, timeout: '2s' },
    ],
  });
  const first = await runCli(['backup', 'app', '--config', config, '--json'], { cwd: dir });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stderr, /warning: notification success to webhook#2 .* failed after 1 attempts/);
  const firstId = JSON.parse(first.stdout).id as string;
  const manifest = JSON.parse(readFileSync(path.join(seriesDir(stash, 'app'), `${firstId}.manifest.json`), 'utf8'));
  let got = (await hook.waitFor(start + 1)).slice(start);
  const success = JSON.parse(got[0].body);
  assert.equal(success.event, 'success');
  assert.equal(success.backupId, firstId);
  assert.equal(success.sha256, manifest.artifacts[0].sha256);
  assert.equal(success.size, manifest.artifacts[0].size);
  assert.equal(manifest.extra.anomaly, undefined);

  makeSqliteDb(db, 300); // 85% of the rows gone
  const second = await runCli(['backup', 'app', '--config', config, '--json'], { cwd: dir });
  assert.equal(second.code, 0, second.stderr);
  const out = JSON.parse(second.stdout);
  assert.deepEqual(out.manifest.extra.anomaly.dropped, ['raw size', 'rows']);
  assert.equal(out.manifest.extra.anomaly.previousId, firstId);
  assert.deepEqual(out.manifest.extra.anomaly.current.rows, 300);
  assert.match(second.stderr, /warning: anomaly: shrank by more than 50% since /);
  got = (await hook.waitFor(start + 3)).slice(start);
  const anomaly = JSON.parse(got[2].body);
  assert.equal(anomaly.event, 'anomaly');
  assert.match(anomaly.detail, /rows 2000 → 300 \(-85%\)/);

  const list = await runCli(['list', 'app', '--config', config], { cwd: dir });
  assert.equal(list.code, 0);
  assert.match(list.stdout, new RegExp(`${out.id} \\(anomaly\\)`));
  assert.doesNotMatch(list.stdout, new RegExp(`${firstId} \\(anomaly\\)`));

  const missing = writeConfig(dir, { stash, databases: { gone: { url: path.join(dir, 'gone.db') } }, notifications: [{ type: 'webhook', url: `${hook.url}/events`, events: ['failure'] }] }, 'missing.yaml');
  const failed = await runCli(['backup', 'gone', '--config', missing], { cwd: dir });
  assert.equal(failed.code, 4, failed.stderr);
  got = (await hook.waitFor(start + 4)).slice(start);
  const failure = JSON.parse(got[3].body);
  assert.equal(failure.event, 'failure');
  assert.equal(failure.database, 'gone');
  assert.match(failure.error, /does not exist/);
  assert.match(failure.hint, /check the path/);
  assert.deepEqual(readdirSync(path.join(stash)).map((d) => d.replace(/\.[0-9a-f]{8}$/, '')).sort(), ['app'], 'the failed backup left no folder of its own');
});

test('a drop within the allowed share is no anomaly', async () => {
  const dir = tempDir('notify-anomaly');
  const db = makeSqliteDb(path.join(dir, 'app.db'), 1000);
  const config = writeConfig(dir, { stash: path.join(dir, 'stash'), databases: { app: { url: db, anomaly: { maxDrop: 0.8 } } } });
  assert.equal((await runCli(['backup', 'app', '--config', config])).code, 0);
  makeSqliteDb(db, 300);
  const r = await runCli(['backup', 'app', '--config', config, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).manifest.extra.anomaly, undefined);
});

test('a failed verification notifies verify-failed; status --notify sends stale for a database without a backup', async () => {
  const dir = tempDir('notify-verify');
  const stash = path.join(dir, 'stash');
  const start = hook.requests.length;
  const config = writeConfig(dir, {
    stash,
    databases: { app: { url: makeSqliteDb(path.join(dir, 'app.db'), 200) }, never: { url: makeSqliteDb(path.join(dir, 'never.db'), 1) } },
    notifications: [{ type: 'webhook', url: `${hook.url}/v`, events: ['verify-failed', 'stale'], retries: 0 }],
  });
  const backup = await runCli(['backup', 'app', '--config', config, '--json']);
  assert.equal(backup.code, 0, backup.stderr);
  const { id, manifest } = JSON.parse(backup.stdout);
  const artifact = path.join(seriesDir(stash, 'app'), manifest.artifacts[0].file);
  const bytes = readFileSync(artifact);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  writeFileSync(artifact, bytes);
  const verify = await runCli(['verify', id, '--config', config]);
  assert.equal(verify.code, 7, verify.stderr);
  const [failed] = (await hook.waitFor(start + 1)).slice(start).map((r) => JSON.parse(r.body));
  assert.equal(failed.event, 'verify-failed');
  assert.equal(failed.backupId, id);
  assert.equal(failed.sha256, manifest.artifacts[0].sha256);
  assert.match(failed.error, /checksum|SHA-256|sha256/i);
  assert.match(failed.detail, /integrity verification found the backup damaged/);

  const status = await runCli(['status', '--config', config, '--notify']);
  assert.equal(status.code, 13);
  const stale = (await hook.waitFor(start + 2)).slice(start + 1).map((r) => JSON.parse(r.body));
  assert.deepEqual(stale.map((m) => [m.event, m.database]), [['stale', 'never']]);
  assert.match(stale[0].detail, /no backup in local/);
});

test('a backup whose optional destination fails notifies degraded, naming the destination', async () => {
  const dir = tempDir('notify-degraded');
  writeFileSync(path.join(dir, 'file'), 'x');
  const start = hook.requests.length;
  const config = writeConfig(dir, {
    storages: { main: { url: path.join(dir, 'main') }, extra: { url: path.join(dir, 'file', 'sub'), optional: true } },
    databases: { app: { url: makeSqliteDb(path.join(dir, 'app.db'), 50) } },
    notifications: [{ type: 'webhook', url: `${hook.url}/deg`, retries: 0 }],
  });
  const r = await runCli(['backup', 'app', '--config', config, '--json']);
  assert.equal(r.code, 12, r.stderr);
  const [degraded] = (await hook.waitFor(start + 1)).slice(start).map((q) => JSON.parse(q.body));
  assert.equal(degraded.event, 'degraded', 'the default events include degraded but not success');
  assert.equal(degraded.backupId, JSON.parse(r.stdout).id);
  assert.match(degraded.detail, /^stored in main; failed: extra \(.*not writable/);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(hook.requests.length, start + 1, 'no success message on a channel with the default events');
});
