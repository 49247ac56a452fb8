// What the SFTP driver does beyond the storage contract, against a real OpenSSH sshd on loopback:
// host keys (known_hosts forms; a changed key and an unknown host are refused, loudly), logins
// (wrong key, encrypted keys; no secret in any message), a server killed in the middle of an
// upload and of a download, free space, the preflight check, and a process that exits although
// its storage was never closed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ConfigError, StorageError } from '../../src/core/errors.js';
import { pruneStorage } from '../../src/prune/prune.js';
import { checkHostKey, fingerprint, hostKeyAlgorithms, hostsMatch, knownHostName, parseKnownHosts } from '../../src/storage/known-hosts.js';
import { openStorage } from '../../src/storage/index.js';
import { createSftpStorage } from '../../src/storage/sftp.js';
import { getBytes, type Storage } from '../../src/storage/storage.js';
import { freePort, run } from '../harness/proc.js';
import { startSshd, type SshServer } from '../harness/sshd.js';
import { tempDir } from '../harness/tmp.js';

let server: SshServer;
let keys: string;
const opened: Storage[] = [];

before(async () => {
  server = await startSshd();
  keys = tempDir('dbstash-sftp-keys');
});
after(async () => {
  for (const s of opened) await s.close?.();
  await server?.stop();
});

const sub = () => `t-${randomBytes(4).toString('hex')}`;

/** The driver without the retry wrapper, so each failure shows as it is classified. */
function sftp(options: Record<string, unknown> = {}, dir = sub()): Storage {
  const storage = createSftpStorage(server.url(dir), { privateKey: server.userKey, knownHosts: server.knownHosts, ...options });
  opened.push(storage);
  return storage;
}

async function keygen(name: string, passphrase = ''): Promise<string> {
  const file = path.join(keys, name);
  await run('ssh-keygen', { cmd: 'ssh-keygen', args: ['-q', '-t', 'ed25519', '-a', '16', '-N', passphrase, '-C', name, '-f', file] });
  return file;
}

async function rejectsWith(promise: Promise<unknown>, reason: StorageError['reason'], message: RegExp): Promise<StorageError> {
  let caught: unknown;
  await assert.rejects(promise, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof StorageError, `expected a StorageError, got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.match(caught.message, message);
  return caught;
}

async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('known_hosts', () => {
  const blob = (type: string, fill: number) => {
    const name = Buffer.from(type);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(name.length);
    return Buffer.concat([head, name, Buffer.alloc(32, fill)]);
  };
  const ed = blob('ssh-ed25519', 1);
  const other = blob('ssh-ed25519', 2);
  const line = (hosts: string, key: Buffer) => `${hosts} ${key.subarray(4, 4 + key.readUInt32BE(0)).toString()} ${key.toString('base64')}`;

  it('finds plain, [host]:port, wildcard and hashed entries, and honours negation', () => {
    const salt = randomBytes(20);
    const hashed = (name: string) => `|1|${salt.toString('base64')}|${createHmacSha1(salt, name)}`;
    const entries = parseKnownHosts(
      [
        '# comment',
        line('files.example.com,10.0.0.5', ed),
        line('[files.example.com]:2222', other),
        line('*.backup.example.com,!evil.backup.example.com', ed),
        line(hashed('[hashed.example.com]:2200'), ed),
        'garbage line',
        `${line('damaged.example.com', ed).split(' ').slice(0, 2).join(' ')} AAAAC3NzaC1yc2E=`,
      ].join('\n'),
    );
    assert.equal(entries.length, 4, 'comments, garbage and a blob that disagrees with its type are skipped');
    assert.equal(knownHostName('Files.Example.com', 22), 'files.example.com');
    assert.equal(knownHostName('files.example.com', 2222), '[files.example.com]:2222');
    assert.equal(checkHostKey(entries, 'files.example.com', ed).status, 'known');
    assert.equal(checkHostKey(entries, '10.0.0.5', ed).status, 'known');
    assert.equal(checkHostKey(entries, '[files.example.com]:2222', other).status, 'known');
    assert.equal(checkHostKey(entries, '[files.example.com]:2222', ed).status, 'changed', 'port 2222 has its own key');
    assert.equal(checkHostKey(entries, 'a.backup.example.com', ed).status, 'known');
    assert.equal(checkHostKey(entries, 'evil.backup.example.com', ed).status, 'unknown');
    assert.equal(checkHostKey(entries, '[hashed.example.com]:2200', ed).status, 'known');
    assert.equal(checkHostKey(entries, 'hashed.example.com', ed).status, 'unknown', 'a hashed [host]:port entry is not the host on port 22');
    assert.equal(checkHostKey(entries, 'nowhere.example.com', ed).status, 'unknown');
    assert.ok(!hostsMatch('files.example.com', 'files.example.com.evil.org'));
  });

  it('refuses a @revoked key and offers the known key types first', () => {
    const rsa = blob('ssh-rsa', 3);
    const entries = parseKnownHosts([line('host', rsa), `@revoked * ${line('x', other).split(' ').slice(1).join(' ')}`, `@cert-authority * ${line('x', ed).split(' ').slice(1).join(' ')}`].join('\n'));
    assert.equal(checkHostKey(entries, 'host', other).status, 'revoked');
    assert.equal(checkHostKey(entries, 'host', ed).status, 'changed', 'a CA line vouches for nothing here');
    assert.deepEqual(hostKeyAlgorithms(entries, 'host').slice(0, 3), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
    assert.match(fingerprint(ed), /^SHA256:[A-Za-z0-9+/]{43}$/);
  });
});

/** The hashed form of a known_hosts name, computed here rather than by the module under test. */
function createHmacSha1(salt: Buffer, name: string): string {
  return createHmac('sha1', salt).update(name).digest('base64');
}

describe('sftp driver', () => {
  it('connects with a hashed known_hosts entry (ssh-keygen -H) and reuses one connection', async () => {
    const file = path.join(keys, 'known_hosts_hashed');
    writeFileSync(file, readFileSync(server.knownHosts));
    await run('ssh-keygen -H', { cmd: 'ssh-keygen', args: ['-H', '-f', file] });
    assert.match(readFileSync(file, 'utf8'), /^\|1\|/);
    const logins = () => readFileSync(path.join(server.root, 'sshd.log'), 'utf8').split('Accepted publickey').length - 1;
    const before = logins();
    const storage = sftp({ knownHosts: file });
    await storage.put('db/a.txt', Buffer.from('hello'));
    await Promise.all([storage.stat('db/a.txt'), storage.list('db/'), storage.put('db/b.txt', Buffer.from('b'))]);
    assert.equal((await getBytes(storage, 'db/a.txt')).toString(), 'hello');
    assert.equal(logins() - before, 1, 'one login for all of it');
  });

  it('refuses a host whose key CHANGED, naming both fingerprints (permanent)', async () => {
    const impostor = await keygen(`impostor-${sub()}`);
    const file = path.join(keys, `known_hosts_changed_${sub()}`);
    writeFileSync(file, `[127.0.0.1]:${server.port} ${readFileSync(`${impostor}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const err = await rejectsWith(sftp({ knownHosts: file }).list(''), 'permanent', /host key of \[127\.0\.0\.1\]:\d+ has CHANGED/);
    assert.match(err.message, /man-in-the-middle/);
    assert.ok(err.message.includes(server.hostKeyFingerprint), 'the presented fingerprint');
    assert.match(err.hint ?? '', /ssh-keygen -R/);
    // Through the retry wrapper too: permanent, so tried once.
    const connections = () => readFileSync(path.join(server.root, 'sshd.log'), 'utf8').split('Connection from').length - 1;
    const before = connections();
    const wrapped = await openStorage(server.url(sub()), { privateKey: server.userKey, knownHosts: file });
    opened.push(wrapped);
    await rejectsWith(wrapped.stat('x'), 'permanent', /CHANGED/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(connections() - before, 1, 'not retried');
  });

  it('refuses an unknown host with its fingerprint and how to accept it (permanent)', async () => {
    const file = path.join(keys, `known_hosts_empty_${sub()}`);
    writeFileSync(file, '');
    const storage = sftp({ knownHosts: file });
    const err = await rejectsWith(storage.put('db/x', Buffer.from('x')), 'permanent', /not in known_hosts/);
    assert.ok(err.message.includes(server.hostKeyFingerprint), err.message);
    assert.ok(err.hint?.includes(`ssh-keyscan -p ${server.port} 127.0.0.1 >> ${file}`), err.hint);
    assert.ok(err.hint?.includes(`ssh -p ${server.port} root@127.0.0.1`), err.hint);
    assert.deepEqual(await filesUnder(server.dataDir).then((f) => f.filter((k) => k.endsWith('db/x'))), []);
  });

  it('a key the server does not accept is a permanent error that names the key file', async () => {
    const stranger = await keygen(`stranger-${sub()}`);
    const err = await rejectsWith(sftp({ privateKey: stranger }).list(''), 'permanent', /refused the login of root/);
    assert.ok(err.message.includes(stranger));
    assert.match(err.hint ?? '', /authorized_keys/);
    assert.ok(!err.message.includes(readFileSync(stranger, 'utf8').split('\n')[1]), 'no key material');
  });

  it('opens an encrypted key with its passphrase, and never shows the passphrase', async () => {
    const passphrase = `pass-${randomBytes(8).toString('hex')}`;
    const key = await keygen(`encrypted-${sub()}`, passphrase);
    appendFileSync(server.authorizedKeys, readFileSync(`${key}.pub`));
    const storage = sftp({ privateKey: key, passphrase });
    await storage.put('db/secret.txt', Buffer.from('ok'));
    assert.equal(storage.url.includes(passphrase), false);
    const wrong = `wrong-${randomBytes(8).toString('hex')}`;
    const errWrong = await rejectsWith(sftp({ privateKey: key, passphrase: wrong }).list(''), 'permanent', /passphrase does not open this key/);
    const errNone = await rejectsWith(sftp({ privateKey: key }).list(''), 'permanent', /the key is encrypted: set passphrase/);
    for (const err of [errWrong, errNone]) {
      for (const secret of [passphrase, wrong]) {
        assert.ok(!`${err.message} ${err.hint} ${err.stack}`.includes(secret), `a passphrase in: ${err.message}`);
      }
    }
  });

  it('without privateKey: logs in with the agent at SSH_AUTH_SOCK, else with ~/.ssh/id_ed25519', async () => {
    const emptyHome = tempDir('dbstash-sftp-home');
    const agentSock = path.join(keys, `agent-${sub()}.sock`);
    const agent = spawn('ssh-agent', ['-D', '-a', agentSock], { stdio: 'ignore' });
    try {
      await waitFor('the agent socket', () => existsSync(agentSock));
      await run('ssh-add', { cmd: 'ssh-add', args: [server.userKey] }, { env: { ...process.env, SSH_AUTH_SOCK: agentSock } });
      const viaAgent = createSftpStorage(server.url(sub()), { knownHosts: server.knownHosts }, { HOME: emptyHome, SSH_AUTH_SOCK: agentSock, USER: 'root' });
      opened.push(viaAgent);
      await viaAgent.put('db/agent.txt', Buffer.from('via agent'));
    } finally {
      agent.kill();
    }
    const home = tempDir('dbstash-sftp-home');
    mkdirSync(path.join(home, '.ssh'));
    copyFileSync(server.userKey, path.join(home, '.ssh', 'id_ed25519'));
    // No user in the URL: the current user's name, as ssh does (root here).
    const viaDefault = createSftpStorage(`sftp://127.0.0.1:${server.port}${server.dataDir}/${sub()}`, { knownHosts: server.knownHosts }, { HOME: home, USER: 'root' });
    opened.push(viaDefault);
    await viaDefault.put('db/default.txt', Buffer.from('via ~/.ssh/id_ed25519'));
    const none = createSftpStorage(server.url(sub()), { knownHosts: server.knownHosts }, { HOME: emptyHome });
    await rejectsWith(none.list(''), 'permanent', /no SSH key to log in/);
  });

  it('a server that stops answering is given up after the keepalive rounds (transient), and used again once it answers', async () => {
    const storage = sftp({ keepaliveInterval: '150ms', connectTimeout: '400ms' });
    await storage.put('db/a.txt', Buffer.from('a'));
    server.freeze();
    try {
      const t0 = Date.now();
      await rejectsWith(storage.stat('db/a.txt'), 'transient', /no answer from the server for/);
      assert.ok(Date.now() - t0 < 2_000, `gave up after ${Date.now() - t0} ms`);
      const fresh = sftp({ connectTimeout: '300ms' });
      await rejectsWith(fresh.list(''), 'transient', /no connection within 300ms \(connectTimeout\)/);
    } finally {
      server.thaw();
    }
    assert.equal((await storage.stat('db/a.txt'))?.size, 1);
  });

  it('a password in the URL is refused without being echoed; unknown options are config errors', () => {
    const password = `pw-${randomBytes(6).toString('hex')}`;
    assert.throws(
      () => createSftpStorage(`sftp://root:${password}@127.0.0.1:${server.port}/x`, {}),
      (err: unknown) => err instanceof ConfigError && !err.message.includes(password) && /password does not belong/.test(err.message),
    );
    assert.throws(() => createSftpStorage(`sftp://root@127.0.0.1/x`, { privateKy: 'x' }), (err: unknown) => err instanceof ConfigError && /privateKy/.test(err.message));
    assert.throws(() => createSftpStorage(`sftp://root@127.0.0.1/x`, { fileMode: '0644' }), (err: unknown) => err instanceof ConfigError && /fileMode/.test(err.message));
    assert.equal(createSftpStorage(`sftp://backup@files.example.com/~/stash/`, {}).url, 'sftp://backup@files.example.com/~/stash');
    assert.equal(createSftpStorage(`sftp://backup@[::1]:2222/srv/x`, {}).url, 'sftp://backup@[::1]:2222/srv/x');
  });

  it('files and directories get the configured modes (0600/0700 unless set)', async () => {
    const dir = sub();
    await sftp({}, dir).put('db/private.txt', Buffer.from('x'));
    await sftp({ fileMode: '0640', dirMode: '0750' }, dir).put('group/shared.txt', Buffer.from('x'));
    const mode = (p: string) => (statSync(path.join(server.dataDir, dir, p)).mode & 0o777).toString(8);
    assert.deepEqual([mode('db'), mode('db/private.txt'), mode('group'), mode('group/shared.txt')], ['700', '600', '750', '640']);
  });

  it('a refused connection is transient', async () => {
    const port = await freePort();
    const storage = createSftpStorage(`sftp://root@127.0.0.1:${port}/x`, { privateKey: server.userKey, knownHosts: server.knownHosts });
    opened.push(storage);
    await rejectsWith(storage.stat('a'), 'transient', /ECONNREFUSED/);
  });

  it('freeSpace() reads statvfs@openssh.com; check() creates the directory and proves it writable', async () => {
    const dir = `${sub()}/deeper/still`;
    const storage = sftp({}, dir);
    const free = await storage.freeSpace!();
    assert.ok(typeof free === 'number' && free > 0, `free space ${free}`);
    await storage.check!();
    assert.ok(existsSync(path.join(server.dataDir, dir)), 'check made the directory');
    assert.deepEqual(await filesUnder(path.join(server.dataDir, dir)), [], 'and left no probe behind');
    writeFileSync(path.join(server.dataDir, 'a-file'), 'x');
    await rejectsWith(sftp({}, 'a-file/below').check!(), 'permanent', /cannot create or write the directory/);
  });

  it('an exclusive put whose key appears while it streams fails with "exists" at the rename (OpenSSH refuses to replace)', async () => {
    const dir = sub();
    const storage = sftp({}, dir);
    const source = new PassThrough();
    const slow = storage.put('db/lock', source, { exclusive: true });
    source.write('slow writer ');
    // The slow put has passed its existence check and is writing its temporary.
    await waitFor('the temporary', async () => (await filesUnder(path.join(server.dataDir, dir))).length === 1);
    await storage.put('db/lock', Buffer.from('fast writer'), { exclusive: true });
    source.end('done');
    await rejectsWith(slow, 'exists', /already exists/);
    assert.equal((await getBytes(storage, 'db/lock')).toString(), 'fast writer');
    assert.deepEqual(await filesUnder(path.join(server.dataDir, dir)), ['db/lock']);
  });

  it('a source that fails while the put is still connecting fails the put, not the process', async () => {
    const dir = sub();
    const storage = sftp({}, dir);
    const source = new PassThrough();
    const put = storage.put('db/early.bin', source);
    source.destroy(new Error('the dump died at once'));
    await rejectsWith(put, 'permanent', /the dump died at once/);
    assert.deepEqual(await filesUnder(path.join(server.dataDir, dir)), []);
  });

  it('a short read is a stream error, never a clean end', async () => {
    const dir = sub();
    const storage = sftp({}, dir);
    await storage.put('db/big.bin', Buffer.alloc(8 << 20, 5));
    const stream = await storage.get('db/big.bin');
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.pause();
    assert.ok(first.length > 0);
    truncateSync(path.join(server.dataDir, dir, 'db/big.bin'), 3 << 20);
    const err = await drain(stream);
    assert.ok(err instanceof StorageError, `got ${String(err)}`);
    assert.match(err.message, /ended after \d+ of 8388608 bytes/);
  });

  it('the server killed mid-upload: the put fails (transient), nothing is visible, prune sweeps the temporary once the server is back', async () => {
    const dir = sub();
    const storage = await openStorage(server.url(dir), { privateKey: server.userKey, knownHosts: server.knownHosts });
    opened.push(storage);
    await storage.put('shop/before.txt', Buffer.from('published before'));
    const reading = await storage.get('shop/before.txt');
    const source = new PassThrough();
    const put = storage.put('shop/shop_prod_2026-01-01T00-00-00Z.dump.zst', source);
    source.write(Buffer.alloc(2 << 20, 1));
    const onDisk = path.join(server.dataDir, dir, 'shop');
    await waitFor('bytes in the temporary', async () => (await filesUnder(onDisk)).some((f) => f.startsWith('.tmp-')));
    const t0 = Date.now();
    server.kill();
    // The source is quiet: the put fails all the same, as soon as the connection drops.
    await rejectsWith(put, 'transient', /connection to root@127\.0\.0\.1:\d+ was lost/);
    assert.ok(Date.now() - t0 < 3_000, `the put took ${Date.now() - t0} ms to fail`);
    const readErr = await drain(reading);
    assert.ok(readErr instanceof StorageError && readErr.reason === 'transient', `a read stream cut by the kill errors: ${String(readErr)}`);
    const temps = (await filesUnder(onDisk)).filter((f) => f.startsWith('.tmp-'));
    assert.equal(temps.length, 1, 'the temporary stays: the server could not be told to remove it');

    await server.restart();
    assert.equal(await storage.stat('shop/shop_prod_2026-01-01T00-00-00Z.dump.zst'), undefined);
    assert.deepEqual(
      (await storage.list('shop/')).map((o) => o.key),
      ['shop/before.txt'],
    );
    const listed = await storage.listTemporaries!('shop/');
    assert.deepEqual(
      listed.map((o) => o.key),
      [`shop/${temps[0]}`],
    );
    const warnings: string[] = [];
    const report = await pruneStorage(storage, { dryRun: false, policyFor: () => ({ keepLast: 1 }), orphanMinAgeMs: 0, warn: (m) => warnings.push(m) });
    assert.deepEqual(
      report.orphans.map((o) => [o.key, o.reason.split(',')[0]]),
      [[`shop/${temps[0]}`, 'unfinished upload']],
    );
    assert.deepEqual(await filesUnder(onDisk), ['before.txt']);
    assert.deepEqual(await storage.listTemporaries!(''), []);
  });

  it('a process that never closes its storage still exits once the work is done', async () => {
    const index = fileURLToPath(new URL('../../src/storage/index.js', import.meta.url));
    const script = `
      const { openStorage } = await import(${JSON.stringify(index)});
      const s = await openStorage(${JSON.stringify(server.url(sub()))}, { privateKey: ${JSON.stringify(server.userKey)}, knownHosts: ${JSON.stringify(server.knownHosts)} });
      await s.put('db/x', Buffer.from('x'));
      const stream = await s.get('db/x');
      for await (const _ of stream);
      console.log((await s.list('db/')).length);
    `;
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const code = await new Promise((resolve) => child.once('exit', resolve));
    clearTimeout(timer);
    assert.equal(code, 0, out);
    assert.equal(out.trim(), '1');
    assert.ok(Date.now() - t0 < 8_000, `exited after ${Date.now() - t0} ms`);
  });
});

/** Reads a stream to its end; returns the error it failed with, or undefined for a clean end. */
async function drain(stream: Readable): Promise<unknown> {
  try {
    for await (const _ of stream);
    return undefined;
  } catch (err) {
    return err;
  }
}
