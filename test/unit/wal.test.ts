// WAL names, LSNs and segments; the archive's continuity (gaps across timelines); which timeline a
// base backup can recover along; and the archive's push and get against an in-memory storage
// (same bytes again, other bytes under a name, a damaged copy passed over for a good one).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { formatLsn, lastSegnoBefore, parseLsn, parseWalName, parseWalObject, segmentName, segnoOf, walObjectKey } from '../../src/wal/names.js';
import { archiveReport, parseHistory, reachableTimeline } from '../../src/wal/continuity.js';
import { getWal, pushWal, walCopies } from '../../src/wal/archive.js';
import { zstdStage } from '../../src/pipeline/compress.js';
import { createMemoryStorage } from '../../src/storage/memory.js';
import { IntegrityError } from '../../src/core/errors.js';
import { archiverProblems, type ArchiverStats } from '../../src/wal/health.js';
import { layOut, placeTablespaces, pointTablespaceMap } from '../../src/wal/recover.js';
import { tarHeader } from '../../src/engines/postgres/tar.js';
import { artifactKey } from '../../src/core/id.js';
import { createHash } from 'node:crypto';
import { tempDir } from '../harness/tmp.js';
import type { Manifest } from '../../src/catalog/manifest.js';

const MB16 = 16 * 1024 * 1024;

describe('WAL names', () => {
  it('reads segments, partial, backup and history files, and nothing else', () => {
    assert.deepEqual(parseWalName('00000002000000010000000A'), { name: '00000002000000010000000A', kind: 'segment', timeline: 2, segno: 256 + 10 });
    assert.equal(parseWalName('00000001000000000000000A.partial')?.kind, 'partial');
    assert.equal(parseWalName('000000010000000000000002.00000028.backup')?.segno, 2);
    assert.deepEqual(parseWalName('0000000A.history'), { name: '0000000A.history', kind: 'history', timeline: 10 });
    for (const bad of ['RECOVERYXLOG', '00000001000000000000000', '00000001000000000000000g', '../000000010000000000000001', '']) assert.equal(parseWalName(bad), undefined, bad);
  });

  it('turns segment numbers and LSNs into names and back, for 16 MB and other segment sizes', () => {
    assert.equal(segmentName(1, 256 + 10), '00000001000000010000000A');
    assert.equal(segmentName(3, 70, 64 * 1024 * 1024), '000000030000000100000006');
    assert.equal(parseWalName('000000030000000100000006', 64 * 1024 * 1024)?.segno, 70);
    assert.equal(formatLsn(parseLsn('16/B374D848')), '16/B374D848');
    assert.equal(segnoOf('0/2000028'), 2);
    assert.equal(segnoOf('1/0'), 256);
    // A stop exactly at a segment boundary needs the segment before it, not the next one.
    assert.equal(lastSegnoBefore('0/3000000'), 2);
    assert.equal(lastSegnoBefore('0/3000001'), 3);
    assert.throws(() => parseLsn('nope'));
  });

  it('object keys carry the raw SHA-256 and the stages, and read back', () => {
    const sha = 'a'.repeat(64);
    const key = walObjectKey('main.12345678', '000000010000000000000003', sha, '.zst.age');
    assert.equal(key, `main.12345678/wal/0000000100000000/000000010000000000000003-${sha}.zst.age`);
    assert.deepEqual(parseWalObject({ key, size: 9, modifiedAt: new Date(0) }), { key, name: '000000010000000000000003', sha256: sha, suffix: '.zst.age', size: 9, modifiedAt: new Date(0) });
    assert.equal(walObjectKey('s', '00000002.history', sha, '.zst'), `s/wal/history/00000002.history-${sha}.zst`);
    assert.equal(parseWalObject({ key: 's/wal/marks/x.json', size: 1, modifiedAt: new Date() }), undefined);
  });
});

describe('the archive\'s continuity', () => {
  const obj = (name: string, at = 0) => ({ key: `s/wal/x/${name}-${'0'.repeat(64)}.zst`, name, sha256: '0'.repeat(64), suffix: '.zst', size: 10, modifiedAt: new Date(at) });

  it('finds every gap from the start on, counting any timeline and a .partial as present', () => {
    const objects = [
      obj('000000010000000000000002'), obj('000000010000000000000003'), obj('000000010000000000000004.partial'),
      obj('000000020000000000000004'), obj('000000020000000000000005'), obj('00000002.history'),
      obj('000000020000000000000008'), obj('00000002000000000000000A'),
    ];
    const r = archiveReport(objects, 2, MB16);
    assert.deepEqual(r.gaps, ['000000020000000000000006 to 000000020000000000000007', '000000020000000000000009']);
    assert.deepEqual(r.timelines.map((t) => [t.timeline, t.first, t.last, t.segments]), [[1, '000000010000000000000002', '000000010000000000000003', 2], [2, '000000020000000000000004', '00000002000000000000000A', 4]]);
    assert.deepEqual(r.missingHistory, []);
    assert.deepEqual(archiveReport(objects.filter((o) => !o.name.endsWith('.history')), 2, MB16).missingHistory, [2]);
    assert.deepEqual(archiveReport([obj('000000010000000000000002'), obj('000000010000000000000003')], 2, MB16).gaps, []);
  });

  it('a base backup follows the newest timeline that branched off its own after it started', () => {
    const histories = new Map([
      [2, parseHistory('1\t0/5000000\tno recovery target specified\n')],
      [3, parseHistory('1\t0/5000000\tx\n2\t0/9000000\ty\n')],
      [4, parseHistory('1\t0/2000000\tbefore the backup\n')],
    ]);
    // Started at 0/3000028 on timeline 1: timelines 2 and 3 branched later, 4 branched before it.
    assert.equal(reachableTimeline(1, parseLsn('0/3000028'), histories), 3);
    // Started at 0/6000028: every branch off timeline 1 came before it.
    assert.equal(reachableTimeline(1, parseLsn('0/6000028'), histories), 1);
    assert.equal(reachableTimeline(2, parseLsn('0/6000028'), histories), 3);
  });
});

describe('push and get', () => {
  const series = { key: 'main.12345678', name: 'main', identity: 'physical:name:postgres:main' };
  const dir = tempDir('dbstash-walunit');
  const file = path.join(dir, '000000010000000000000007');
  writeFileSync(file, Buffer.alloc(1 << 20, 3));
  const dest = (name: string, optional = false) => ({ name, storage: createMemoryStorage(`memory://walunit-${name}-${Math.random()}`), optional });

  it('stores the file once in every destination; the same bytes again succeed; other bytes under the name fail', async () => {
    const a = dest('a');
    const b = dest('b');
    const first = await pushWal(file, { destinations: [a, b], series, stages: [zstdStage({})], warn: () => {} });
    assert.deepEqual(first.stored.map((s) => s.already), [false, false]);
    const again = await pushWal(file, { destinations: [a, b], series, stages: [zstdStage({})], warn: () => {} });
    assert.deepEqual(again.stored.map((s) => s.already), [true, true]);
    assert.equal((await walCopies(a.storage, series, '000000010000000000000007')).length, 1);
    const other = path.join(dir, 'other', '000000010000000000000007');
    (await import('node:fs')).mkdirSync(path.dirname(other), { recursive: true });
    writeFileSync(other, Buffer.alloc(1 << 20, 4));
    await assert.rejects(pushWal(other, { destinations: [a], series, stages: [], warn: () => {} }), (err: Error) => err instanceof IntegrityError && /already archived .* with other contents/.test(err.message));
    await assert.rejects(pushWal(path.join(dir, 'nope.txt'), { destinations: [a], series, stages: [], warn: () => {} }), /is not the name of a WAL file/);
  });

  it('get writes the checked bytes, passes over a damaged copy for a good one, and says when nothing is archived', async () => {
    const broken = dest('broken');
    const good = dest('good');
    await pushWal(file, { destinations: [broken, good], series, stages: [], warn: () => {} });
    const [copy] = await walCopies(broken.storage, series, '000000010000000000000007');
    await broken.storage.delete(copy.key);
    await broken.storage.put(copy.key, Buffer.alloc(1 << 20, 9));
    const out = path.join(dir, 'RECOVERYXLOG');
    const got = await getWal('000000010000000000000007', out, { destinations: [broken, good], series, context: {} });
    assert.equal(got.found && got.from, 'good');
    assert.ok(got.found && /damaged/.test(got.warnings.join()));
    assert.ok(readFileSync(out).equals(readFileSync(file)));
    await assert.rejects(getWal('000000010000000000000007', out, { destinations: [broken], series, context: {} }), /is damaged/);
    assert.deepEqual(await getWal('000000010000000000000099', out, { destinations: [good], series, context: {} }), { found: false });
  });
});

describe('archiverProblems', () => {
  const now = new Date('2026-12-05T12:00:00Z');
  const healthy: ArchiverStats = {
    archivedCount: 10,
    lastArchivedWal: '000000010000000000000009',
    lastArchivedAt: '2026-12-05T11:59:00Z',
    failedCount: 2,
    lastFailedWal: '000000010000000000000004',
    lastFailedAt: '2026-12-05T11:00:00Z',
    current: '00000001000000000000000A',
    behind: 0,
    waiting: 0,
  };
  it('says nothing while the newest failure is older than the newest success and nothing waits', () => {
    assert.deepEqual(archiverProblems(healthy, now), []);
  });
  it('reports a failing archive_command, a segment waiting past the delay, and falls back to the count behind without the wait', () => {
    const failing = { ...healthy, lastFailedWal: '00000001000000000000000A', lastFailedAt: '2026-12-05T11:59:30Z', failedCount: 3 };
    assert.match(archiverProblems(failing, now)[0], /^archive_command is failing: 00000001000000000000000A failed 30.0s ago \(3 failures so far\)/);
    const stalled = { ...healthy, waiting: 2, oldestWaitingAt: '2026-12-05T11:54:00Z' };
    assert.deepEqual(archiverProblems(stalled, now, 10 * 60_000), [], 'within walMaxDelay');
    assert.match(archiverProblems(stalled, now)[0], /^the WAL archive is stalled: 2 finished segments waiting, the oldest for 6m/);
    const blind = { ...healthy, waiting: undefined, behind: 9 };
    assert.match(archiverProblems(blind, now)[0], /^archiving is 9 segments behind the server/);
    assert.deepEqual(archiverProblems({ ...blind, behind: 8 }, now), []);
  });
});

describe('placeTablespaces: where a restore puts each tablespace, refused before anything is written', () => {
  const base = (spaces: { oid: number; name: string; location: string }[]) => ({ id: 'b', dump: { details: { physical: { tablespaces: spaces } } } }) as unknown as Manifest;
  const two = base([
    { oid: 16390, name: 'fast', location: '/srv/pg/fast' },
    { oid: 16391, name: 'slow', location: '/srv/pg/slow' },
  ]);
  const dir = tempDir('dbstash-place');

  it('maps what --tablespace-map names and leaves the rest at their old locations', async () => {
    const places = await placeTablespaces(two, new Map([['/srv/pg/fast', path.join(dir, 'fast')]]), path.join(dir, 'data'));
    assert.deepEqual(
      places.map((p) => [p.oid, p.to]),
      [
        [16390, path.join(dir, 'fast')],
        [16391, '/srv/pg/slow'],
      ],
    );
  });

  it('layOut links pg_tblspc/<oid> to the directory before tar, so the files land there; a damaged artifact leaves both empty', async () => {
    const id = 'main.1f0c2a9e_dev_2026-12-04T02-00-00Z';
    const entry = (name: string, body: string) => [tarHeader(name, body.length, 1_700_000_000), Buffer.from(body), Buffer.alloc((512 - (body.length % 512)) % 512)];
    const tar = Buffer.concat([
      ...entry('pg_tblspc/16390/PG_15_202209061/5/16415', 'the table in the tablespace'),
      ...entry('backup_label', 'LABEL: dbstash\n'),
      ...entry('tablespace_map', '16390 /srv/pg/fast\n'),
      Buffer.alloc(1024),
    ]);
    const storage = createMemoryStorage(`memory://layout-${Math.random()}`);
    await storage.put(artifactKey(id, `${id}.base.tar`), tar);
    const manifest = (sha256: string) =>
      ({ id, artifacts: [{ role: 'main', file: `${id}.base.tar`, size: tar.length, sha256, stages: [] }], dump: { details: { physical: { tablespaces: [{ oid: 16390, name: 'fast', location: '/srv/pg/fast' }] } } } }) as unknown as Manifest;
    const good = manifest(createHash('sha256').update(tar).digest('hex'));
    const root = tempDir('dbstash-layout');
    const pgdata = path.join(root, 'data');
    mkdirSync(pgdata);
    const places = await placeTablespaces(good, new Map([['/srv/pg/fast', path.join(root, 'fast')]]), pgdata);
    await layOut(storage, good, pgdata, {}, undefined, undefined, places);
    assert.equal(readFileSync(path.join(root, 'fast', 'PG_15_202209061/5/16415'), 'utf8'), 'the table in the tablespace');
    assert.equal(readlinkSync(path.join(pgdata, 'pg_tblspc', '16390')), path.join(root, 'fast'));
    await pointTablespaceMap(pgdata, places, undefined);
    assert.equal(readFileSync(path.join(pgdata, 'tablespace_map'), 'utf8'), `16390 ${path.join(root, 'fast')}\n`);

    const pgdata2 = path.join(root, 'data2');
    mkdirSync(pgdata2);
    const places2 = await placeTablespaces(good, new Map([['/srv/pg/fast', path.join(root, 'fast2')]]), pgdata2);
    await assert.rejects(layOut(storage, manifest('0'.repeat(64)), pgdata2, {}, undefined, undefined, places2), IntegrityError);
    assert.deepEqual(readdirSync(pgdata2), [], 'the data directory is emptied');
    assert.deepEqual(readdirSync(path.join(root, 'fast2')), [], 'and the tablespace directory it was filling');
  });

  it('refuses two tablespaces in one directory, one inside the data directory, one in a directory with files, and a map of no tablespace', async () => {
    const place = placeTablespaces;
    const both = new Map([
      ['/srv/pg/fast', path.join(dir, 'one')],
      ['/srv/pg/slow', path.join(dir, 'one', 'inner')],
    ]);
    await assert.rejects(place(two, both, path.join(dir, 'data')), /tablespaces fast and slow would share/);
    const inData = new Map([
      ['/srv/pg/fast', path.join(dir, 'data', 'fast')],
      ['/srv/pg/slow', path.join(dir, 'slow')],
    ]);
    await assert.rejects(place(two, inData, path.join(dir, 'data')), /inside the data directory or around it/);
    const full = tempDir('dbstash-place-full');
    writeFileSync(path.join(full, 'PG_VERSION'), '15');
    const withFile = new Map([
      ['/srv/pg/fast', full],
      ['/srv/pg/slow', path.join(dir, 'slow')],
    ]);
    await assert.rejects(place(two, withFile, path.join(dir, 'data')), (err: Error) => /tablespace fast would go to .*, which is not empty$/.test(err.message) && /--tablespace-map \/srv\/pg\/fast=NEW_EMPTY_DIRECTORY/.test((err as Error & { hint?: string }).hint ?? ''));
    await assert.rejects(place(two, new Map([['/srv/pg/other', path.join(dir, 'x')]]), path.join(dir, 'data')), /has no tablespace at \/srv\/pg\/other/);
  });
});
