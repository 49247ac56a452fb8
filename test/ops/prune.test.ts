// prune against real stashes built from one real SQLite backup: decisions and reasons in
// --dry-run, what a real run removes (records and stale leases with their backup), the pins
// (newest verified, leased), leftovers of crashed runs, per-storage policies, bad flags, and the
// deletion order (manifest first) with a storage whose artifact deletion fails.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { createMemoryStorage } from '../../src/storage/memory.js';
import { getBytes, type Storage } from '../../src/storage/storage.js';
import { openStorage } from '../../src/storage/index.js';
import { pruneStorage } from '../../src/prune/prune.js';
import { age, cloneBackup, makeSqliteDb, writeConfig } from './helpers.js';
import { folderOf, seriesDir } from '../harness/stash.js';

let base: string;
let sourceId: string;
let sourceDb: string;

before(async () => {
  const dir = tempDir('prune-base');
  const db = makeSqliteDb(path.join(dir, 'shop.db'), 200);
  sourceDb = db;
  base = path.join(dir, 'stash');
  const r = await runCli(['backup', db, '--output-dir', base, '--env', 'prod', '--json']);
  assert.equal(r.code, 0, r.stderr);
  sourceId = JSON.parse(r.stdout).id;
});

/** A stash holding one backup of shop per day from 2026-01-01 to 2026-01-10 at 12:00 UTC (not the source). */
function tenDays(labels: Record<number, Record<string, string>> = {}): { stash: string; ids: string[] } {
  const stash = path.join(tempDir('prune'), 'stash');
  cpSync(base, stash, { recursive: true });
  const ids = Array.from({ length: 10 }, (_, i) => cloneBackup(stash, sourceId, new Date(Date.UTC(2026, 0, i + 1, 12)), labels[i + 1] ?? {}));
  for (const f of readdirSync(seriesDir(stash, 'shop'))) if (f.startsWith(sourceId)) spawnSync('rm', [path.join(seriesDir(stash, 'shop'), f)]);
  return { stash, ids };
}

function record(stash: string, id: string, kind: 'verify' | 'restore', result: string, at: string): string {
  const file = path.join(seriesDir(stash, 'shop'), `${id}.${kind}-${at}.json`);
  writeFileSync(file, JSON.stringify({ kind, id, level: 'integrity', result, at: new Date().toISOString(), durationMs: 1, toolVersion: 'test' }));
  return file;
}

function filesOf(stash: string, id: string): string[] {
  return readdirSync(seriesDir(stash, 'shop')).filter((f) => f.startsWith(`${id}.`));
}

function bytesOf(stash: string, id: string): number {
  return filesOf(stash, id).reduce((s, f) => s + statSync(path.join(seriesDir(stash, 'shop'), f)).size, 0);
}

test('dry run explains every decision; the real run removes exactly those backups with their records and stale leases', async () => {
  const { stash, ids } = tenDays({ 1: { release: '1.0' } });
  const day = (n: number) => ids[n - 1];
  record(stash, day(3), 'verify', 'passed', '2026-01-04T00-00-00.000Z');
  record(stash, day(7), 'verify', 'failed', '2026-01-08T00-00-00.000Z');
  record(stash, day(8), 'restore', 'succeeded', '2026-01-09T00-00-00.000Z');
  const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '-');
  writeFileSync(path.join(seriesDir(stash, 'shop'), `${day(5)}.lease-${host}-${process.pid}.json`), '{}');
  const deadPid = spawnSync('true').pid!;
  writeFileSync(path.join(seriesDir(stash, 'shop'), `${day(6)}.lease-${host}-${deadPid}.json`), '{}');

  const flags = ['--output-dir', stash, '--keep-last', '2', '--keep-tag', 'release'];
  const before = readdirSync(seriesDir(stash, 'shop')).sort();
  const dry = await runCli(['prune', ...flags, '--dry-run', '--json']);
  assert.equal(dry.code, 0, dry.stderr);
  const report = JSON.parse(dry.stdout);
  assert.deepEqual(readdirSync(seriesDir(stash, 'shop')).sort(), before, 'a dry run changes nothing');
  const decisions = Object.fromEntries(report.storages[0].backups.map((b: { id: string; keep: boolean; reasons: string[] }) => [b.id, [b.keep, b.reasons.join('; ')]]));
  assert.deepEqual(decisions, {
    [day(10)]: [true, 'last 1 of 2'],
    [day(9)]: [true, 'last 2 of 2'],
    [day(8)]: [false, 'no rule keeps it'],
    [day(7)]: [false, 'no rule keeps it'],
    [day(6)]: [false, 'no rule keeps it'],
    [day(5)]: [true, `in use by a verify/restore (pid ${process.pid} on ${host})`],
    [day(4)]: [false, 'no rule keeps it'],
    [day(3)]: [true, 'newest backup that passed verification'],
    [day(2)]: [false, 'no rule keeps it'],
    [day(1)]: [true, 'tag release'],
  });
  const removed = [day(8), day(7), day(6), day(4), day(2)];
  const expectedBytes = removed.reduce((s, id) => s + bytesOf(stash, id), 0);
  assert.equal(report.bytesFreed, expectedBytes);
  const dryText = await runCli(['prune', ...flags, '--dry-run']);
  assert.match(dryText.stdout, /would remove 5 backups and 0 leftovers, freeing /);
  assert.match(dryText.stdout, new RegExp(`remove\\s+${day(2)}\\s+.*no rule keeps it`));

  const real = await runCli(['prune', ...flags]);
  assert.equal(real.code, 0, real.stderr);
  assert.match(real.stdout, /removed 5 backups and 0 leftovers, freed /);
  for (const id of removed) assert.deepEqual(filesOf(stash, id), [], `${id} is gone with its records and stale lease`);
  for (const id of [day(10), day(9), day(5), day(3), day(1)]) assert.ok(filesOf(stash, id).some((f) => f.endsWith('.manifest.json')), `${id} kept`);
  assert.ok(existsSync(path.join(seriesDir(stash, 'shop'), `${day(5)}.lease-${host}-${process.pid}.json`)), 'the active lease stays');
  const list = await runCli(['list', '--output-dir', stash, '--json']);
  assert.deepEqual(JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id), [day(10), day(9), day(5), day(3), day(1)]);
});

test('leftovers: old orphan artifacts, records and temporaries go; fresh ones, unreadable backups, a held lock and other files stay', async () => {
  const { stash, ids } = tenDays();
  const dir = seriesDir(stash, 'shop');
  const artifact = readdirSync(dir).find((f) => f.startsWith(ids[0]) && !f.endsWith('.json'))!;
  const put = (name: string, ageMs: number, from?: string) => {
    const file = path.join(dir, name);
    if (from) cpSync(path.join(dir, from), file);
    else writeFileSync(file, 'x'.repeat(100));
    age(file, ageMs);
    return name;
  };
  const hour = 3600_000;
  const oldOrphan = put(artifact.replace(ids[0], 'shop_prod_2025-12-01T00-00-00Z'), 2 * hour, artifact);
  const oldRecord = put('shop_prod_2025-12-01T00-00-00Z.verify-2025-12-02T00-00-00.000Z.json', 2 * hour);
  const freshOrphan = put(artifact.replace(ids[0], 'shop_prod_2026-02-01T00-00-00Z'), 60_000, artifact);
  const oldTemp = put('.tmp-shop_prod_x.sqlite.zst.abc123', 3 * hour);
  const freshTemp = put('.tmp-shop_prod_y.sqlite.zst.def456', 0);
  const badManifest = put('shop_prod_2025-11-01T00-00-00Z.manifest.json', 5 * hour);
  writeFileSync(path.join(dir, badManifest), '{ not json');
  age(path.join(dir, badManifest), 5 * hour);
  const badArtifact = put(artifact.replace(ids[0], 'shop_prod_2025-11-01T00-00-00Z'), 5 * hour, artifact);
  const notes = put('notes.txt', 10 * hour);
  const lock = path.join(dir, 'dbstash.lock');
  writeFileSync(lock, JSON.stringify({ owner: 'test', pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), command: 'dbstash backup' }));

  const flags = ['--output-dir', stash, '--keep-last', '100'];
  const held = await runCli(['prune', ...flags, '--json']);
  assert.equal(held.code, 0, held.stderr);
  assert.match(held.stderr, /warning: .*shop_prod_2025-11-01T00-00-00Z\.manifest\.json is not valid JSON.*\(left alone\)/);
  assert.deepEqual(
    JSON.parse(held.stdout).storages[0].orphans.map((o: { key: string }) => o.key),
    [`${path.basename(dir)}/${oldTemp}`],
    'while a backup holds the lock, only old temporaries go',
  );

  spawnSync('rm', [lock]);
  const r = await runCli(['prune', ...flags, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const orphans = JSON.parse(r.stdout).storages[0].orphans;
  assert.deepEqual(orphans.map((o: { key: string }) => o.key).sort(), [`${path.basename(dir)}/${oldOrphan}`, `${path.basename(dir)}/${oldRecord}`].sort());
  assert.match(orphans[0].reason, /no manifest for shop_prod_2025-12-01T00-00-00Z, 2h0\dm old/);
  const left = readdirSync(dir);
  for (const gone of [oldOrphan, oldRecord, oldTemp]) assert.ok(!left.includes(gone), `${gone} removed`);
  for (const kept of [freshOrphan, freshTemp, badManifest, badArtifact, notes]) assert.ok(left.includes(kept), `${kept} kept`);
  assert.equal(left.filter((f) => f.endsWith('.manifest.json')).length, 11, 'no backup was touched');

  const soon = await runCli(['prune', ...flags, '--orphan-age', '0s', '--json']);
  assert.deepEqual(JSON.parse(soon.stdout).storages[0].orphans.map((o: { key: string }) => o.key).sort(), [`${path.basename(dir)}/${freshOrphan}`, `${path.basename(dir)}/${freshTemp}`].sort());
});

test('each storage applies its own policy, over the database and global ones', async () => {
  const dir = tempDir('prune-storages');
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  for (const stash of [a, b]) {
    cpSync(base, stash, { recursive: true });
    for (let i = 1; i <= 4; i++) cloneBackup(stash, sourceId, new Date(Date.UTC(2026, 0, i, 12)));
  }
  const config = writeConfig(dir, {
    retention: { keepLast: 3 },
    storages: { a: { url: a, retention: { keepLast: 1 } }, b: { url: b } },
    databases: { main: { url: sourceDb, storages: ['a', 'b'] } },
  });
  const r = await runCli(['prune', 'main', '--config', config, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [ra, rb] = JSON.parse(r.stdout).storages;
  assert.equal(ra.series[0].policy, 'last 1 (UTC)');
  assert.equal(rb.series[0].policy, 'last 3 (UTC)');
  assert.equal(ra.backups.filter((x: { keep: boolean }) => x.keep).length, 1);
  assert.equal(rb.backups.filter((x: { keep: boolean }) => x.keep).length, 3);
  assert.equal(readdirSync(seriesDir(a, 'shop')).filter((f) => f.endsWith('.manifest.json')).length, 1);
  assert.equal(readdirSync(seriesDir(b, 'shop')).filter((f) => f.endsWith('.manifest.json')).length, 3);
});

test('bad flags fail with a usage error and a hint, and remove nothing', async () => {
  const { stash } = tenDays();
  const before = readdirSync(seriesDir(stash, 'shop')).length;
  for (const [flags, message] of [
    [['--keep-daily', 'many'], /--keep-daily takes a whole number/],
    [['--keep-within', 'forever'], /--keep-within takes a duration/],
    [['--keep-daily', '1', '--timezone', 'Mars/Olympus'], /unknown time zone "Mars\/Olympus"/],
    [['--orphan-age', 'soon'], /--orphan-age takes a duration/],
  ] as const) {
    const r = await runCli(['prune', '--output-dir', stash, ...flags]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /\nhint: /);
    assert.doesNotMatch(r.stderr, /    at /);
  }
  assert.equal(readdirSync(seriesDir(stash, 'shop')).length, before);
});

test('the manifest is deleted first: a failure after it leaves an orphan artifact, which the next prune removes', async () => {
  const { stash, ids } = tenDays();
  const memory = createMemoryStorage(`prune-order-${process.pid}`);
  const local = await openStorage(stash);
  const folder = folderOf(ids[0]);
  for (const id of ids.slice(0, 2)) {
    for (const f of filesOf(stash, id)) await memory.put(`${folder}/${f}`, await getBytes(local, `${folder}/${f}`));
  }
  const deletes: string[] = [];
  let failArtifacts = true;
  const flaky: Storage = {
    ...memory,
    async delete(key) {
      deletes.push(key);
      if (failArtifacts && !key.endsWith('.json')) throw new Error('disk went read-only');
      return memory.delete(key);
    },
  };
  const warnings: string[] = [];
  const opts = { dryRun: false, policyFor: () => ({ keepLast: 1 }), warn: (m: string) => warnings.push(m) };
  const first = await pruneStorage(flaky, opts);
  assert.equal(first.failures, 1);
  assert.deepEqual(deletes.map((k) => k.split('/').pop()!.replace(ids[0], 'ID')), ['ID.manifest.json', 'ID.sqlite.zst']);
  assert.match(warnings[0], /could not remove .*disk went read-only/);
  const keys = (await memory.list(`${folder}/`)).map((o) => o.key);
  assert.ok(!keys.includes(`${folder}/${ids[0]}.manifest.json`), 'manifest gone');
  assert.ok(keys.some((k) => k.startsWith(`${folder}/${ids[0]}.`)), 'artifact left as an orphan');

  failArtifacts = false;
  const second = await pruneStorage(flaky, { ...opts, orphanMinAgeMs: 0 });
  assert.equal(second.failures, 0);
  assert.deepEqual(second.orphans.map((o) => o.key), keys.filter((k) => k.startsWith(`${folder}/${ids[0]}.`)));
  assert.deepEqual((await memory.list(`${folder}/`)).map((o) => o.key).filter((k) => k.startsWith(`${folder}/${ids[0]}`)), []);
});
