// dbstash status against real stashes: a healthy database exits 0; each kind of problem (never
// backed up, too old, verification failed, anomaly, stale lock, unreachable storage) exits 13 and
// is named; retention backlog, unverified backups and databases kept aside by a restore are warnings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb, writeConfig } from './helpers.js';
import { seriesDir, writeLock } from '../harness/stash.js';

interface Finding {
  level: string;
  check: string;
  message: string;
}
interface Report {
  healthy: boolean;
  databases: { database: string; key?: string; findings: Finding[]; keptAside: { name: string }[]; newest?: { id: string } }[];
  storages: { name: string; reachable: boolean; freeBytes?: number; findings: Finding[] }[];
}

async function status(args: string[]): Promise<{ code: number | null; report: Report; stdout: string; stderr: string }> {
  const r = await runCli(['status', ...args, '--json']);
  return { code: r.code, report: JSON.parse(r.stdout || '{}') as Report, stdout: r.stdout, stderr: r.stderr };
}

const findings = (r: Report, db: string, level?: string) =>
  r.databases.find((d) => d.key === db || d.database === db)!.findings.filter((f) => !level || f.level === level);

test('a backed-up, verified database within its policy is healthy; the text output says so', async () => {
  const dir = tempDir('status-ok');
  const stash = path.join(dir, 'stash');
  const db = makeSqliteDb(path.join(dir, 'app.db'), 100);
  const config = writeConfig(dir, { stash, databases: { app: { url: db, maxAge: '1h' } } });
  assert.equal((await runCli(['backup', 'app', '--config', config])).code, 0);
  const unverified = await status(['--config', config]);
  assert.equal(unverified.code, 0, unverified.stderr);
  assert.deepEqual(findings(unverified.report, 'app', 'warn').map((f) => f.check), ['verification']);
  assert.equal((await runCli(['verify', '--latest', '--config', config])).code, 0);
  const r = await status(['--config', config]);
  assert.equal(r.code, 0);
  assert.equal(r.report.healthy, true);
  assert.deepEqual(findings(r.report, 'app').map((f) => [f.level, f.check]), [
    ['ok', 'backup'],
    ['ok', 'retention'],
    ['ok', 'verification'],
  ]);
  assert.equal(r.report.storages[0].reachable, true);
  assert.ok(r.report.storages[0].freeBytes! > 0);
  const text = await runCli(['status', '--config', config]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^app — sqlite:\S+\n  ok +newest backup app\.[0-9a-f]{8}_dev_\S+ in local finished .* ago; at most 1h00m expected$/m);
  assert.match(text.stdout, /integrity passed/);
  assert.match(text.stdout, /\nhealthy\n$/);
});

test('problems exit 13 and are named: never backed up, too old, failed verification, anomaly; a stale lock and kept databases are warnings', async () => {
  const dir = tempDir('status-bad');
  const stash = path.join(dir, 'stash');
  const db = makeSqliteDb(path.join(dir, 'app.db'), 1000);
  const config = writeConfig(dir, {
    stash,
    databases: {
      app: { url: db, retention: { keepLast: 1 }, schedule: { backup: '0 3 * * *' } },
      never: { url: makeSqliteDb(path.join(dir, 'never.db'), 1) },
    },
  });
  assert.equal((await runCli(['backup', 'app', '--config', config])).code, 0);
  makeSqliteDb(db, 100);
  const second = await runCli(['backup', 'app', '--config', config, '--json']);
  const id = JSON.parse(second.stdout).id as string;
  writeFileSync(path.join(seriesDir(stash, 'app'), `${id}.verify-2026-11-23T09-00-00.000Z.json`), JSON.stringify({ kind: 'verify', id, level: 'drill', result: 'failed', error: 'table main.items: 90 rows, manifest says 100', at: new Date().toISOString(), durationMs: 5, toolVersion: 't' }));
  const deadPid = spawnSync('true').pid!;
  const lock = writeLock(seriesDir(stash, 'app'), { owner: 'x', pid: deadPid, host: os.hostname(), startedAt: '2026-11-23T01:00:00Z', command: 'dbstash backup app' });
  copyFileSync(db, path.join(dir, 'app_before_20261101_000000.db'));

  const r = await status(['--config', config]);
  assert.equal(r.code, 13, r.stderr);
  assert.equal(r.report.healthy, false);
  const problems = findings(r.report, 'app', 'problem').map((f) => `${f.check}: ${f.message}`);
  assert.ok(problems.some((p) => /^anomaly: .*shrank by more than 50%/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /^verification: .*drill FAILED .*90 rows, manifest says 100/.test(p)), problems.join('\n'));
  const warns = findings(r.report, 'app', 'warn').map((f) => `${f.check}: ${f.message}`);
  assert.ok(warns.some((p) => new RegExp(`^lock: stale lock in local: pid ${deadPid} .* is not running any more; it blocks nothing`).test(p)), warns.join('\n'));
  assert.ok(warns.some((w) => /^retention: 1 backups beyond the policy \(last 1 \(UTC\)\)/.test(w)), warns.join('\n'));
  assert.ok(warns.some((w) => /^kept: app_before_20261101_000000 was kept aside by a restore/.test(w)), warns.join('\n'));
  assert.deepEqual(r.report.databases.find((d) => d.key === 'app')!.keptAside.map((k) => k.name), ['app_before_20261101_000000']);
  assert.deepEqual(findings(r.report, 'never').map((f) => `${f.level} ${f.message}`), ['problem no backup in local']);

  await new Promise((resolve) => setTimeout(resolve, 1100)); // the newest backup is now over 1s old
  const text = await runCli(['status', 'app', '--config', config, '--max-age', '1s']);
  assert.equal(text.code, 13);
  assert.match(text.stdout, /PROBLEM  newest backup app\.[0-9a-f]{8}_dev_\S+ in local is too old: finished .* ago; at most 1\.0s expected/);
  assert.match(text.stdout, /UNHEALTHY: 4 problems\n$/);
  assert.doesNotMatch(text.stdout, /^never/m, 'only the database asked for');
  assert.equal(JSON.parse(readFileSync(lock, 'utf8')).pid, deadPid, 'status changes nothing');
});

test('a stash that cannot be read is a problem; bad flags are usage errors', async () => {
  const dir = tempDir('status-unreachable');
  const notADir = path.join(dir, 'file');
  writeFileSync(notADir, 'x');
  const config = writeConfig(dir, { storages: { broken: { url: notADir } }, databases: { app: { url: path.join(dir, 'app.db') } } });
  const r = await status(['--config', config]);
  assert.equal(r.code, 13, r.stderr);
  assert.equal(r.report.storages[0].reachable, false);
  assert.match(r.report.storages[0].findings[0].message, /is not reachable: \[local\] cannot list/);

  const bad = await runCli(['status', '--output-dir', dir, '--max-age', 'soon']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^error: --max-age takes a duration, got "soon"\nhint: e\.g\. --max-age 26h\n$/);
  const empty = await runCli(['status', '--output-dir', path.join(dir, 'nothing')]);
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /error: no database to check/);
});
