// Backup ids: {database}_{env}_{YYYY-MM-DDTHH-MM-SSZ}, file-name safe, parsed from the right.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { artifactKey, formatStamp, isBackupId, makeBackupId, manifestKey, parseBackupId, parseStamp, safeName } from '../../src/core/id.js';

const at = new Date('2026-11-23T08:07:00.123Z');

describe('backup ids', () => {
  it('formats the seed example exactly', () => {
    assert.equal(makeBackupId('shop', 'prod', at), 'shop_prod_2026-11-23T08-07-00Z');
    assert.equal(formatStamp(at), '2026-11-23T08-07-00Z');
  });

  it('parses back to database, environment and time (to the second)', () => {
    const parsed = parseBackupId('shop_prod_2026-11-23T08-07-00Z');
    assert.deepEqual(parsed, { database: 'shop', env: 'prod', takenAt: new Date('2026-11-23T08:07:00Z') });
    assert.equal(parseStamp('2026-11-23T08-07-00Z')?.toISOString(), '2026-11-23T08:07:00.000Z');
  });

  it('turns underscores of the database name into dashes, so the id parses unambiguously', () => {
    const id = makeBackupId('my_app_db', 'prod', at);
    assert.equal(id, 'my-app-db_prod_2026-11-23T08-07-00Z');
    assert.deepEqual(parseBackupId(id), { database: 'my-app-db', env: 'prod', takenAt: new Date('2026-11-23T08:07:00Z') });
  });

  it('an environment never contains "_" (so parsing stays unambiguous) and is lowercase', () => {
    const id = makeBackupId('shop', 'Pre_Prod', at);
    assert.equal(id, 'shop_pre-prod_2026-11-23T08-07-00Z');
    assert.deepEqual(parseBackupId(id), { database: 'shop', env: 'pre-prod', takenAt: new Date('2026-11-23T08:07:00Z') });
  });

  it('makes odd database names file-name safe, and they still round-trip', () => {
    const cases: [string, string][] = [
      ['my db', 'my-db'],
      ['a/b\\c', 'a-b-c'],
      ['x_prod_2026', 'x-prod-2026'],
      ['../../etc', 'etc'],
      ['.hidden', 'hidden'],
      ['café', 'caf-'],
      ['', 'db'],
      ['x'.repeat(300), 'x'.repeat(100)],
    ];
    for (const [input, safe] of cases) {
      assert.equal(safeName(input), safe, input);
      const id = makeBackupId(input, 'dev', at);
      assert.ok(!id.includes('/') && !id.startsWith('.'), id);
      assert.equal(parseBackupId(id)?.database, safe, id);
      assert.equal(manifestKey(id), `${safe}/${id}.manifest.json`);
    }
  });

  it('refuses strings that are not ids', () => {
    for (const bad of ['shop', 'shop_prod', 'shop_prod_2026-11-23', 'shop_prod_2026-11-23T08:07:00Z', 'shop_PROD_2026-11-23T08-07-00Z', '_prod_2026-11-23T08-07-00Z', 'shop_prod_2026-13-45T99-99-99Z']) {
      assert.equal(isBackupId(bad), false, bad);
    }
    assert.throws(() => manifestKey('not-an-id'));
  });

  it('places artifacts and manifests in the database folder', () => {
    const id = 'shop_prod_2026-11-23T08-07-00Z';
    assert.equal(artifactKey(id, `${id}.dump.zst`), 'shop/shop_prod_2026-11-23T08-07-00Z.dump.zst');
    assert.equal(manifestKey(id), 'shop/shop_prod_2026-11-23T08-07-00Z.manifest.json');
  });
});
