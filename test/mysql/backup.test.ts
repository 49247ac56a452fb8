/**
 * MySQL/MariaDB backups beyond the engine contract: row counts aligned with the dump's snapshot
 * while a writer is busy, the privilege fallbacks, non-transactional tables and --lock-tables,
 * the password never on a command line and its option file always removed, a truncated dump
 * failing the backup, and users and grants for --globals.
 */
import assert from 'node:assert/strict';
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import mysql from 'mysql2/promise';
import { ExitCode } from '../../src/core/errors.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { manifestSchema } from '../../src/catalog/manifest-schema.js';
import { loadEngine } from '../../src/engines/index.js';
import { parseTarget } from '../../src/engines/target.js';
import { decoders } from '../../src/pipeline/stage.js';
import { toolConnectionArgs, writeOptionFile } from '../../src/engines/mysql/connection.js';
import { runTool } from '../../src/engines/process.js';
import '../../src/pipeline/compress.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { folderOf } from '../harness/stash.js';

let server: MariaServer;

async function backup(url: string, stash: string, ...args: string[]): Promise<{ manifest: Manifest; stderr: string }> {
  const r = await runCli(['backup', url, '--output-dir', stash, '--json', ...args], { timeoutMs: 120_000 });
  assert.equal(r.code, ExitCode.ok, r.stderr);
  const { id } = JSON.parse(r.stdout) as { id: string };
  const db = parseTarget(url).database;
  return { manifest: manifestSchema.parse(JSON.parse(readFileSync(path.join(stash, folderOf(id), `${id}.manifest.json`), 'utf8'))), stderr: r.stderr };
}

function raw(stash: string, manifest: Manifest, role: 'main' | 'globals' = 'main'): Readable {
  const artifact = manifest.artifacts.find((a) => a.role === role)!;
  let s: Readable = createReadStream(path.join(stash, manifest.series!.key, artifact.file));
  for (const d of decoders(artifact.stages)) s = s.pipe(d);
  return s;
}

async function text(stream: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

function filesIn(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => statSync(path.join(dir, f)).isFile());
}

describe('mysql backup', { timeout: 180_000 }, () => {
  before(async () => {
    server = await startMariadb();
    await server.query(`SET GLOBAL max_allowed_packet = 1073741824`);
    await server.createDatabase('shop');
    await server.query(
      `CREATE TABLE busy (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB;
       CREATE TABLE payload (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB;
       INSERT INTO busy (note) VALUES ('first');`,
      'shop',
    );
    // A few MB of payload, so that the dump runs long enough for the writer to overlap it.
    for (let i = 0; i < 6; i++) {
      await server.query(`INSERT INTO payload VALUES (${i}, REPEAT(SHA2('${i}', 256), 32768))`, 'shop');
    }
  });
  after(async () => {
    await server?.stop();
  });

  test("the dump takes over the probe's session: a backup connects twice, itself once and the dump tool once", async () => {
    const connections = async () => Number((await server.query<mysql.RowDataPacket[]>(`SHOW GLOBAL STATUS LIKE 'Connections'`))[0].Value);
    const before = await connections();
    await backup(server.url('shop'), tempDir('dbstash-my-sessions'));
    // Less the one that asks the counter.
    assert.equal((await connections()) - before - 1, 2);
  });

  test('row counts match the dump exactly while a writer inserts (aligned snapshots)', async () => {
    const stash = tempDir('dbstash-my-aligned');
    const writer = await mysql.createConnection({ host: server.host, port: server.port, user: 'root', password: server.password, database: 'shop' });
    let stop = false;
    let inserted = 0;
    const writing = (async () => {
      while (!stop) {
        await writer.query(`INSERT INTO busy (note) VALUES ('during')`);
        inserted++;
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    const before = inserted;
    const { manifest } = await backup(server.url('shop'), stash);
    const during = inserted - before;
    stop = true;
    await writing;
    await writer.end();
    assert.ok(during > 0, 'the writer kept inserting while the backup ran');
    assert.equal(manifest.dump.details.counts, 'aligned');

    const engine = await loadEngine('mysql');
    const scratch = await engine.createDatabase!(parseTarget(server.url('shop')), 'aligned_check');
    await engine.restore!(scratch, raw(stash, manifest), { signal: new AbortController().signal, format: 'sql', tempDir: stash, warn: () => {} });
    const restored = await engine.tableStats!(scratch, { checksums: false });
    assert.deepEqual(restored, manifest.tables, 'the manifest counts are exactly what the dump holds');
    const live = (await server.query<mysql.RowDataPacket[]>(`SELECT COUNT(*) AS n FROM busy`, 'shop'))[0].n as number;
    assert.ok(live > manifest.tables.find((t) => t.name === 'busy')!.rows, 'rows written after the snapshot are not counted');
  });

  test('a user without RELOAD and PROCESS: --no-tablespaces, separate snapshots, both said', async () => {
    await server.query(
      `CREATE USER 'reader'@'%' IDENTIFIED BY 'r3ader-pw!';
       GRANT SELECT, LOCK TABLES, SHOW VIEW, TRIGGER, EVENT ON shop.* TO 'reader'@'%';`,
    );
    const stash = tempDir('dbstash-my-reader');
    const { manifest, stderr } = await backup(`mysql://reader:${encodeURIComponent('r3ader-pw!')}@127.0.0.1:${server.port}/shop`, stash);
    assert.match(stderr, /lacks the PROCESS privilege: tablespaces are not dumped \(--no-tablespaces\)/);
    assert.ok(manifest.dump.args.includes('--no-tablespaces'));
    assert.equal(manifest.dump.details.counts, 'separate');
    assert.ok(manifest.warnings.some((w) => /PROCESS/.test(w)), 'the warning is kept in the manifest');
  });

  test('non-transactional tables are named; --lock-tables locks instead and counts under the lock', async () => {
    await server.query(`CREATE TABLE legacy (id INT) ENGINE=MyISAM; CREATE TABLE scratchpad (id INT) ENGINE=Aria; INSERT INTO legacy VALUES (1), (2);`, 'shop');
    const stash = tempDir('dbstash-my-myisam');
    const plain = await backup(server.url('shop'), stash);
    assert.match(plain.stderr, /non-transactional tables that --single-transaction cannot keep consistent: legacy \(MyISAM\), scratchpad \(Aria\)/);
    assert.match(plain.stderr, /--lock-tables/);
    const locked = await backup(server.url('shop'), stash, '--lock-tables');
    assert.doesNotMatch(locked.stderr, /non-transactional/);
    assert.equal(locked.manifest.dump.details.consistency, 'lock-tables');
    assert.equal(locked.manifest.dump.details.counts, 'locked');
    assert.ok(locked.manifest.dump.args.includes('--lock-tables') && !locked.manifest.dump.args.includes('--single-transaction'));
    assert.equal(locked.manifest.tables.find((t) => t.name === 'legacy')!.rows, 2);
    await server.query(`DROP TABLE legacy, scratchpad`, 'shop');
  });

  test('the password never reaches a command line, and its option file is removed', async () => {
    const stash = tempDir('dbstash-my-argv');
    const scratch = tempDir('dbstash-my-argv-tmp');
    const child = spawnCli(['backup', server.url('shop'), '--output-dir', stash, '--temp-dir', scratch]);
    child.stdout.resume();
    child.stderr.resume();
    const seen: string[] = [];
    const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
    let done = false;
    void closed.then(() => (done = true));
    while (!done) {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
          if (!stat.includes('(mariadb-dump)') || Number(/\) \S (\d+)/.exec(stat)?.[1]) !== child.pid) continue;
          const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
          if (argv.includes('--version')) continue;
          seen.push(argv);
        } catch {
          /* the process ended meanwhile */
        }
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(await closed, ExitCode.ok);
    const dumps = seen.filter((s) => s.includes('mariadb-dump'));
    assert.ok(dumps.length > 0, 'mariadb-dump was seen running');
    for (const argv of dumps) {
      assert.ok(!argv.includes(server.password), 'no password on the command line');
      assert.match(argv, /^[^\0]*mariadb-dump\0--defaults-file=/, 'the option file comes first');
    }
    assert.deepEqual(filesIn(scratch), [], 'the option file and its directory are gone');
  });

  test('a ~/.my.cnf with another password and [mysqldump] settings changes neither who connects nor what the dump holds', async () => {
    await server.createDatabase('mycnf');
    await server.query(`CREATE TABLE t (id INT PRIMARY KEY); CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.id = NEW.id;`, 'mycnf');
    const home = tempDir('dbstash-my-home');
    writeFileSync(path.join(home, '.my.cnf'), `[client]\npassword=not-the-one-in-the-url\n[mysqldump]\nskip-triggers\n`, { mode: 0o600 });
    const stash = tempDir('dbstash-my-mycnf');
    const r = await runCli(['backup', server.url('mycnf'), '--output-dir', stash, '--json'], { env: { HOME: home }, timeoutMs: 120_000 });
    assert.equal(r.code, ExitCode.ok, r.stderr);
    const { id } = JSON.parse(r.stdout) as { id: string };
    const manifest = manifestSchema.parse(JSON.parse(readFileSync(path.join(stash, folderOf(id), `${id}.manifest.json`), 'utf8')));
    assert.match(await text(raw(stash, manifest)), /CREATE\*\/ \/\*!50017 DEFINER=`root`@`[^`]+`\*\/ \/\*!50003 TRIGGER `?t_bi`?/, 'the trigger is in the dump');
  });

  test('the option file: 0600 in a private 0700 directory, the password escaped, removed without a trace', async () => {
    const dir = tempDir('dbstash-my-optfile');
    const password = `p"a\\ss'w#rd;\n2`;
    const file = await writeOptionFile({ ...parseTarget(server.url('shop')), password }, dir);
    assert.equal(statSync(file.path).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(file.path)).mode & 0o777, 0o700);
    // The client accepts it: the password survives the option-file quoting.
    await server.query(`CREATE USER 'odd'@'%' IDENTIFIED BY ${mysql.escape(password)}`);
    const r = await runTool('/usr/bin/mariadb', [...toolConnectionArgs({ ...parseTarget(server.url('shop')), user: 'odd', password }, file.path), '-N', '-e', 'SELECT CURRENT_USER()']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^odd@%/);
    await file.remove();
    assert.deepEqual(readdirSync(dir), []);
  });

  test('SIGINT mid-dump: exit 130, the option file removed, nothing in the stash', async () => {
    const stash = tempDir('dbstash-my-sigint');
    const scratch = tempDir('dbstash-my-sigint-tmp');
    const child = spawnCli(['backup', server.url('shop'), '--output-dir', stash, '--temp-dir', scratch]);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.resume();
    const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
    let dumpPid: number | undefined;
    for (let i = 0; i < 5000 && dumpPid === undefined; i++) {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
          if (stat.includes('(mariadb-dump)') && Number(/\) \S (\d+)/.exec(stat)?.[1]) === child.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--single-transaction')) {
            // Hold the dump still so that the interruption surely lands mid-way.
            process.kill(Number(pid), 'SIGSTOP');
            dumpPid = Number(pid);
          }
        } catch {
          /* ended meanwhile */
        }
      }
      if (dumpPid === undefined) await new Promise((r) => setTimeout(r, 2));
    }
    assert.ok(dumpPid, 'mariadb-dump started');
    
    child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 100));
    try {
      process.kill(dumpPid, 'SIGCONT');
    } catch {
      /* already gone: the abort killed it */
    }
    assert.equal(await closed, ExitCode.interrupted, stderr);
    assert.match(stderr, /interrupted by SIGINT/);
    assert.deepEqual(filesIn(scratch), [], 'the option file is removed');
    assert.deepEqual(filesIn(stash).filter((f) => !/^shop(\.[0-9a-f]{8})?$/.test(f)), [], 'no artifact, manifest or lock');
  });

  test('a dump without the completion trailer fails the backup (exit 5), leaving nothing', async () => {
    const bin = tempDir('dbstash-my-fakebin');
    const fake = path.join(bin, 'mariadb-dump');
    // The real mariadb-dump, cut short, by a wrapper that then claims success.
    writeFileSync(fake, `#!/bin/sh\nif [ "$1" = "--version" ]; then exec /usr/bin/mariadb-dump --version; fi\n/usr/bin/mariadb-dump "$@" | head -c 3000\nexit 0\n`);
    chmodSync(fake, 0o755);
    const stash = tempDir('dbstash-my-trunc');
    const scratch = tempDir('dbstash-my-trunc-tmp');
    const r = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--temp-dir', scratch, '--bin-dir', bin]);
    assert.equal(r.code, ExitCode.backupFailed, r.stderr);
    assert.match(r.stderr, /^error: \[mysql\] the dump is truncated: mariadb-dump output does not end with its "-- Dump completed" trailer/m);
    assert.deepEqual(filesIn(stash).filter((f) => !/^shop(\.[0-9a-f]{8})?$/.test(f)), [], 'no artifact, manifest or lock');
    assert.deepEqual(filesIn(scratch), []);
  });

  test('DEV_DB_* variables with DEV_DB_ENGINE=mariadb select the MySQL engine', async () => {
    const stash = tempDir('dbstash-my-env');
    const r = await runCli(['backup', '--env', 'dev', '--output-dir', stash, '--json'], {
      cwd: tempDir('dbstash-my-env-cwd'),
      env: {
        DATABASE_URL: undefined, PGHOST: undefined, PGDATABASE: undefined,
        DEV_DB_ENGINE: 'mariadb', DEV_DB_HOST: '127.0.0.1', DEV_DB_PORT: String(server.port), DEV_DB_NAME: 'shop', DEV_DB_USER: 'root', DEV_DB_PASSWORD: server.password,
      },
    });
    assert.equal(r.code, ExitCode.ok, r.stderr);
    const { manifest } = JSON.parse(r.stdout) as { manifest: Manifest };
    assert.equal(manifest.engine, 'mysql');
    assert.equal(manifest.dump.tool, 'mariadb-dump');
    assert.match(manifest.dump.version, /^10\.\d+\.\d+-MariaDB/);
    assert.ok(!JSON.stringify(manifest).includes(server.password), 'no password in the manifest');
  });

  test('a dump tool older than the server is named in a warning', async () => {
    const bin = tempDir('dbstash-my-oldbin');
    const fake = path.join(bin, 'mariadb-dump');
    writeFileSync(fake, `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "mariadb-dump  Ver 10.19 Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)"; exit 0; fi\nexec /usr/bin/mariadb-dump "$@"\n`);
    chmodSync(fake, 0o755);
    const { manifest, stderr } = await backup(server.url('shop'), tempDir('dbstash-my-old'), '--bin-dir', bin);
    assert.match(stderr, /the dump tool \(10\.3\.39-MariaDB\) is older than the server \(10\.\d+\.\d+-MariaDB/);
    assert.equal(manifest.dump.version, '10.3.39-MariaDB');
  });

  test('--globals captures users and grants, and they restore', async () => {
    await server.query(`CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON shop.* TO 'app'@'%'; CREATE ROLE auditor; GRANT SELECT ON shop.busy TO auditor; GRANT auditor TO 'app'@'%';`);
    const stash = tempDir('dbstash-my-globals');
    const { manifest } = await backup(server.url('shop'), stash, '--globals');
    const globals = manifest.artifacts.find((a) => a.role === 'globals');
    assert.ok(globals, 'a globals artifact');
    const sql = await text(raw(stash, manifest, 'globals'));
    assert.match(sql, /CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '\*[0-9A-F]{40}';/);
    assert.match(sql, /GRANT SELECT, INSERT ON `shop`\.\* TO `app`@`%`;/);
    assert.match(sql, /CREATE ROLE IF NOT EXISTS `auditor`;/);
    assert.ok(!sql.includes('app-pw'), 'only the password hash');

    await server.query(`DROP USER 'app'@'%'; DROP ROLE auditor;`);
    const engine = await loadEngine('mysql');
    await engine.restoreGlobals!(parseTarget(server.url('shop')), raw(stash, manifest, 'globals'), { signal: new AbortController().signal, format: globals!.format, tempDir: stash, warn: () => {} });
    const conn = await mysql.createConnection({ host: server.host, port: server.port, user: 'app', password: 'app-pw', database: 'shop' });
    const [grants] = await conn.query(`SHOW GRANTS`);
    await conn.end();
    assert.match(JSON.stringify(grants), /GRANT SELECT, INSERT ON `shop`/, 'the user logs in with its old password and has its grants');
  });
});
