// Quoting the statement a MySQL client stopped at (readLine in src/engines/mysql/sqlscan.ts): the
// line the client names in "ERROR … at line N" is found whatever the chunking, a line longer than
// a chunk gives its first 200 bytes, and a line past the end is undefined. The real client's
// errors: test/mysql/restore.test.ts.

import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { readLine } from '../../src/engines/mysql/sqlscan.js';

function chunked(text: string, size: number): Readable {
  const all = Buffer.from(text);
  const parts: Buffer[] = [];
  for (let i = 0; i < all.length; i += size) parts.push(all.subarray(i, i + size));
  return Readable.from(parts);
}

describe('readLine', () => {
  const sql = '-- MariaDB dump\n\nCREATE TABLE t (a int);\nINSERT INTO t VALUES\n(1),\n(2);\n-- Dump completed\n';

  it('finds every line whatever the chunk size, the first line and empty ones included', async () => {
    for (const size of [1, 2, 3, 7, 16, 1000]) {
      assert.equal(await readLine(chunked(sql, size), 1), '-- MariaDB dump', `chunks of ${size}`);
      assert.equal(await readLine(chunked(sql, size), 2), '');
      assert.equal(await readLine(chunked(sql, size), 4), 'INSERT INTO t VALUES', `chunks of ${size}`);
      assert.equal(await readLine(chunked(sql, size), 7), '-- Dump completed');
      assert.equal(await readLine(chunked(sql, size), 99), undefined);
    }
  });

  it('gives the first 200 bytes of a line longer than any chunk, and finds the lines after it', async () => {
    const long = `INSERT INTO t VALUES ${'(1234567890),'.repeat(100_000)}(0);`;
    const text = `CREATE TABLE t (a int);\n${long}\nSELECT 1;\n`;
    assert.equal(await readLine(chunked(text, 65_536), 2), long.slice(0, 200));
    assert.equal(await readLine(chunked(text, 65_536), 3), 'SELECT 1;');
  });
});
