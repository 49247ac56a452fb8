// Turning what the user typed into a Target, and keeping the password out of everything printable.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ConfigError } from '../../src/core/errors.js';
import { isLocalHost, parseTarget, redactUrl, urlFromParts } from '../../src/engines/target.js';

describe('target parsing', () => {
  it('splits the password off a PostgreSQL URL', () => {
    const t = parseTarget('postgres://app:s3cr%40t%2Fpw@db.internal:6000/shop?sslmode=require');
    assert.equal(t.engine, 'postgres');
    assert.equal(t.database, 'shop');
    assert.equal(t.host, 'db.internal');
    assert.equal(t.port, 6000);
    assert.equal(t.user, 'app');
    assert.equal(t.password, 's3cr@t/pw');
    assert.equal(t.params.sslmode, 'require');
    assert.ok(!t.displayUrl.includes('s3cr'), t.displayUrl);
    assert.equal(t.displayUrl, 'postgres://app:***@db.internal:6000/shop?sslmode=require');
  });

  it('defaults host and port, accepts postgresql:, mysql: and mariadb:', () => {
    const pg = parseTarget('postgresql:///shop');
    assert.equal(pg.host, 'localhost');
    assert.equal(pg.port, 5432);
    assert.equal(pg.password, undefined);
    assert.equal(parseTarget('mysql://root@h/app').port, 3306);
    assert.equal(parseTarget('mariadb://root@h/app').engine, 'mysql');
  });

  it('decodes a percent-encoded database name', () => {
    assert.equal(parseTarget('postgres://u@h/my%20db').database, 'my db');
  });

  it('reads SQLite paths and sqlite: URLs', () => {
    const rel = parseTarget('data/app.db');
    assert.equal(rel.engine, 'sqlite');
    assert.equal(rel.path, path.resolve('data/app.db'));
    assert.equal(rel.database, 'app');
    assert.equal(parseTarget('sqlite:///var/lib/x.sqlite3').path, '/var/lib/x.sqlite3');
    assert.equal(parseTarget('sqlite:notes.db').path, path.resolve('notes.db'));
    assert.equal(parseTarget('/abs/file-without-extension').engine, 'sqlite');
    assert.equal(parseTarget('./plain').engine, 'sqlite');
  });

  it('refuses what it cannot read, with a hint and without echoing the password', () => {
    const cases = ['', '   ', 'redis://u:hunter2@h/0', 'postgres://u:hunter2@h:5432/', 'sqlite:', 'not a url'];
    for (const input of cases) {
      assert.throws(
        () => parseTarget(input),
        (err: unknown) => err instanceof ConfigError && !!err.hint && !err.message.includes('hunter2'),
        input,
      );
    }
  });

  it('redacts passwords in URLs and in secret-looking query parameters', () => {
    assert.equal(redactUrl('postgres://u:pw@h/db'), 'postgres://u:***@h/db');
    assert.equal(redactUrl('postgres://u@h/db'), 'postgres://u@h/db');
    assert.ok(!redactUrl('postgres://u@h/db?password=pw&sslmode=require').includes('pw&'));
    assert.ok(redactUrl('postgres://u@h/db?password=pw&sslmode=require').includes('sslmode=require'));
    assert.ok(!redactUrl('s3://b/p?secretAccessKey=AKIA123').includes('AKIA123'));
    assert.equal(redactUrl('weird://u:pw@[bad/db'), 'weird://u:***@[bad/db');
  });

  it('builds URLs from parts that parse back to the same values', () => {
    const url = urlFromParts('postgres', { host: 'db', port: '5433', name: 'my db', user: 'a@b', password: 'p:ss/w@rd' });
    const t = parseTarget(url);
    assert.deepEqual([t.host, t.port, t.database, t.user, t.password], ['db', 5433, 'my db', 'a@b', 'p:ss/w@rd']);
    assert.ok(urlFromParts('mysql', { name: 'x' }).startsWith('mysql://localhost/'));
  });

  it('knows which hosts are local', () => {
    for (const h of [undefined, 'localhost', '127.0.0.1', '::1', '/var/run/postgresql']) assert.equal(isLocalHost(h), true, String(h));
    for (const h of ['db.internal', '10.0.0.5']) assert.equal(isLocalHost(h), false, h);
  });
});
