// The anomaly check's lookup of the previous backup: it reads only raw size and rows from the
// manifest, skips manifests that do not yield both (damaged, another backup's, not a manifest),
// and compares within the same database and environment only.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { anomalyCheck, previousBackup, readBackupSize } from '../../src/backup/anomaly.js';
import { MANIFEST_FORMAT } from '../../src/catalog/manifest.js';
import { manifestKey } from '../../src/core/id.js';
import { createMemoryStorage } from '../../src/storage/memory.js';

function manifestBytes(id: string, rawSize: number, rows: number[]): Buffer {
  const m = {
    format: MANIFEST_FORMAT,
    version: 1,
    id,
    artifacts: [
      { role: 'globals', rawSize: 5 },
      { role: 'main', rawSize },
    ],
    tables: rows.map((r, i) => ({ schema: 'public', name: `t${i}`, rows: r })),
  };
  return Buffer.from(JSON.stringify(m));
}

describe('anomaly: previous backup', () => {
  it('reads raw size and total rows of a manifest, and nothing from bytes that are not its manifest', () => {
    const id = 'shop_prod_2026-11-20T08-00-00Z';
    assert.deepEqual(readBackupSize(manifestBytes(id, 1000, [10, 32]), id), { id, rawSize: 1000, rows: 42 });
    assert.equal(readBackupSize(manifestBytes(id, 1000, [10]), 'shop_prod_2026-11-21T08-00-00Z'), undefined, 'another backup');
    assert.equal(readBackupSize(Buffer.from('{"format":"dbstash.manifest",'), id), undefined, 'truncated');
    assert.equal(readBackupSize(Buffer.from(JSON.stringify({ format: 'other', id })), id), undefined, 'not a manifest');
    const noRows = JSON.parse(manifestBytes(id, 1000, [10]).toString());
    delete noRows.tables[0].rows;
    assert.equal(readBackupSize(Buffer.from(JSON.stringify(noRows)), id), undefined, 'a table without rows');
    const negative = JSON.parse(manifestBytes(id, -1, [10]).toString());
    assert.equal(readBackupSize(Buffer.from(JSON.stringify(negative)), id), undefined, 'a negative size');
  });

  it('takes the newest earlier backup of the same environment and skips damaged manifests', async () => {
    const storage = createMemoryStorage();
    const put = (id: string, body: Buffer) => storage.put(manifestKey(id), body);
    await put('shop_prod_2026-11-19T08-00-00Z', manifestBytes('shop_prod_2026-11-19T08-00-00Z', 900, [40]));
    await put('shop_prod_2026-11-20T08-00-00Z', manifestBytes('shop_prod_2026-11-20T08-00-00Z', 1000, [50]));
    await put('shop_prod_2026-11-21T08-00-00Z', Buffer.from('{ damaged'));
    await put('shop_dev_2026-11-21T09-00-00Z', manifestBytes('shop_dev_2026-11-21T09-00-00Z', 5, [1]));
    await put('shop_prod_2026-11-23T08-00-00Z', manifestBytes('shop_prod_2026-11-23T08-00-00Z', 7, [1]));
    const current = 'shop_prod_2026-11-22T08-00-00Z';
    assert.deepEqual(await previousBackup(storage, current), { id: 'shop_prod_2026-11-20T08-00-00Z', rawSize: 1000, rows: 50 });
    assert.equal(await previousBackup(storage, 'shop_prod_2026-11-19T07-00-00Z'), undefined, 'nothing earlier');

    const anomaly = await anomalyCheck(storage, current, 0.5).check({ rawSize: 400, rows: 50 });
    assert.deepEqual(anomaly?.dropped, ['raw size']);
    assert.equal(anomaly?.previousId, 'shop_prod_2026-11-20T08-00-00Z');
    assert.equal(await anomalyCheck(storage, current, 0.5).check({ rawSize: 600, rows: 30 }), undefined);
  });

  it('a failing lookup is a warning and no anomaly', async () => {
    const storage = createMemoryStorage();
    storage.list = async () => {
      throw new Error('listing refused');
    };
    const warnings: string[] = [];
    const result = await anomalyCheck(storage, 'shop_prod_2026-11-22T08-00-00Z', 0.5, (m) => warnings.push(m)).check({ rawSize: 1, rows: 1 });
    assert.equal(result, undefined);
    assert.deepEqual(warnings, ['could not compare with the previous backup: listing refused']);
  });
});
