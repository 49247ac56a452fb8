// The manifest schema: round-trips, refuses newer versions, names the invalid field.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IntegrityError } from '../../src/core/errors.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, mainArtifact, serializeManifest, totalRows, type Manifest } from '../../src/catalog/manifest.js';
import { parseManifest } from '../../src/catalog/manifest-schema.js';

function sampleManifest(): Manifest {
  return {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    id: 'shop_prod_2026-11-23T08-07-00Z',
    tool: { name: 'dbstash', version: '0.1.0' },
    engine: 'postgres',
    database: { name: 'shop', url: 'postgres://app:***@db:5432/shop', host: 'db', port: 5432, user: 'app', serverVersion: '15.8', sizeBytes: 1234 },
    environment: 'prod',
    dump: { tool: 'pg_dump', version: '15.8', path: '/usr/bin/pg_dump', args: ['--format=custom', '--compress=0'], details: { snapshot: '00000003-1' } },
    artifacts: [
      { role: 'main', file: 'shop_prod_2026-11-23T08-07-00Z.dump.zst', format: 'dump', stages: [{ id: 'zstd', params: { level: 3 } }], rawSize: 1000, size: 300, sha256: 'a'.repeat(64) },
      { role: 'globals', file: 'shop_prod_2026-11-23T08-07-00Z.globals.sql.zst', format: 'globals.sql', stages: [{ id: 'zstd', params: { level: 3 } }], rawSize: 10, size: 9, sha256: 'b'.repeat(64) },
    ],
    tables: [
      { schema: 'public', name: 'orders', rows: 10 },
      { schema: 'sales', name: 'items', rows: 32, checksum: '123' },
    ],
    startedAt: '2026-11-23T08:07:00.123Z',
    finishedAt: '2026-11-23T08:07:02.123Z',
    durationMs: 2000,
    host: 'backup-host',
    labels: { team: 'core' },
    warnings: [],
    extra: { future: { anything: true } },
  };
}

describe('manifest', () => {
  it('round-trips through JSON unchanged', () => {
    const m = sampleManifest();
    const back = parseManifest(serializeManifest(m), 'test');
    assert.deepEqual(back, m);
    assert.equal(mainArtifact(back).file, 'shop_prod_2026-11-23T08-07-00Z.dump.zst');
    assert.equal(totalRows(back), 42);
  });

  it('fills defaults for optional sections written by older writers', () => {
    const m = sampleManifest() as Partial<Manifest>;
    delete m.labels;
    delete m.warnings;
    delete m.extra;
    const back = parseManifest(JSON.stringify(m), 'test');
    assert.deepEqual([back.labels, back.warnings, back.extra], [{}, [], {}]);
  });

  it('refuses a newer version with a hint to upgrade', () => {
    const m = { ...sampleManifest(), version: MANIFEST_VERSION + 1 };
    assert.throws(
      () => parseManifest(JSON.stringify(m), 'shop/x.manifest.json'),
      (err: unknown) =>
        err instanceof IntegrityError &&
        err.message.includes(`version ${MANIFEST_VERSION + 1}`) &&
        err.message.includes('shop/x.manifest.json') &&
        /upgrade/.test(err.hint ?? ''),
    );
  });

  it('names the invalid field', () => {
    const m = sampleManifest();
    m.artifacts[0].sha256 = 'not-a-hash';
    assert.throws(() => parseManifest(JSON.stringify(m), 'm.json'), (err: unknown) => err instanceof IntegrityError && err.message.includes('artifacts.0.sha256'));
    const n = sampleManifest() as unknown as Record<string, unknown>;
    (n.tables as { rows: number }[])[1].rows = -1;
    assert.throws(() => parseManifest(JSON.stringify(n), 'm.json'), /tables\.1\.rows/);
    const o = { ...sampleManifest(), engine: 'oracle' };
    assert.throws(() => parseManifest(JSON.stringify(o), 'm.json'), /engine/);
  });

  it('reports damaged JSON and a manifest without a main artifact', () => {
    const text = serializeManifest(sampleManifest()).toString();
    assert.throws(() => parseManifest(text.slice(0, text.length / 2), 'half.json'), (err: unknown) => err instanceof IntegrityError && /half\.json is not valid JSON/.test(err.message));
    const m = sampleManifest();
    m.artifacts = m.artifacts.filter((a) => a.role !== 'main');
    assert.throws(() => mainArtifact(parseManifest(JSON.stringify(m), 'x')), IntegrityError);
  });
});
