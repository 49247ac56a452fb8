// Reading pg_dump's lock-wait failures and showing the session in the way (src/engines/postgres/locks.ts).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatTimeout, parseQualifiedName, pgDumpLockTimeout, qualifiedName, showQuery } from '../../src/engines/postgres/locks.js';
import { parseTimeout } from '../../src/core/format.js';

describe('pg_dump lock-wait failures', () => {
  it('finds the table of a LOCK TABLE that ran out of time, quoted names included', () => {
    const stderr = (q: string) =>
      `pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\npg_dump: detail: Query was: ${q}\n`;
    assert.deepEqual(pgDumpLockTimeout(stderr('LOCK TABLE public."order line" IN ACCESS SHARE MODE')), [{ schema: 'public', name: 'order line' }]);
    assert.deepEqual(pgDumpLockTimeout(stderr('LOCK TABLE "We""ird"."a.b" IN ACCESS SHARE MODE')), [{ schema: 'We"ird', name: 'a.b' }]);
    // Newer pg_dump versions lock several tables per statement.
    assert.deepEqual(pgDumpLockTimeout(stderr('LOCK TABLE public.a, ONLY s.b, public."c d" IN ACCESS SHARE MODE')), [
      { schema: 'public', name: 'a' },
      { schema: 's', name: 'b' },
      { schema: 'public', name: 'c d' },
    ]);
    assert.equal(pgDumpLockTimeout('pg_dump: error: connection to server failed'), undefined);
    assert.equal(pgDumpLockTimeout(stderr('SELECT 1')), undefined);
  });

  it('names tables as SQL would', () => {
    assert.equal(qualifiedName({ schema: 'public', name: 'order line' }), 'public."order line"');
    assert.equal(qualifiedName({ schema: 'public', name: 'events' }), 'public.events');
    assert.equal(parseQualifiedName('events IN ACCESS SHARE MODE'), undefined);
  });

  it('formats and parses timeouts', () => {
    assert.deepEqual([60_000, 1500, 1000, 800, 120_000].map(formatTimeout), ['1m', '1.5s', '1s', '800ms', '2m']);
    assert.deepEqual(['30s', '1.5s', '500ms', '2m', '0', '0s'].map(parseTimeout), [30_000, 1500, 500, 120_000, 0, 0]);
    assert.deepEqual(['soon', '', '-1s', '30'].map(parseTimeout), [undefined, undefined, undefined, undefined]);
  });

  it('masks a password in the statement it shows', () => {
    assert.equal(showQuery(`ALTER ROLE app PASSWORD 's3cr''et' VALID UNTIL 'infinity'`), `ALTER ROLE app PASSWORD '***' VALID UNTIL 'infinity'`);
    assert.equal(showQuery('LOCK TABLE t IN ACCESS EXCLUSIVE MODE'), 'LOCK TABLE t IN ACCESS EXCLUSIVE MODE');
  });
});
