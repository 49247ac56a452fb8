// What the rclone driver promises beyond the storage contract, against the real rclone binary and
// the generated remotes of test/harness/rclone.ts: clear one-line errors for a missing binary or
// an unknown remote, settings that reach rclone through its environment only, claims that stop a
// second writer (a live one) or do not (a stale one), at most one winner among writers in separate
// processes, and reads cut short (or altered) that fail instead of ending cleanly.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, StorageError } from '../../src/core/errors.js';
import { openStorage } from '../../src/storage/index.js';
import { CLAIM_STALE_MS, createRcloneStorage, rcloneErrorLine } from '../../src/storage/rclone.js';
import { getBytes, readAll } from '../../src/storage/storage.js';
import { makeRcloneRemotes, type RcloneRemotes } from '../harness/rclone.js';

let remotes: RcloneRemotes;

before(async () => {
  remotes = await makeRcloneRemotes();
});
after(async () => {
  await remotes?.remove();
});

const fresh = () => `t-${randomBytes(4).toString('hex')}`;

async function storageError(promise: Promise<unknown>, reason: StorageError['reason']): Promise<StorageError> {
  let caught: unknown;
  await assert.rejects(promise, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof StorageError, `expected a StorageError, got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.ok(!caught.message.includes('\n'), `one line: ${caught.message}`);
  return caught;
}

describe('rclone driver', () => {
  it('a missing rclone binary is a permanent error that says to install it', async () => {
    const elsewhere = await openStorage(remotes.url(fresh()), { config: remotes.config, binary: path.join(remotes.dir, 'no', 'rclone') });
    const e1 = await storageError(elsewhere.list(''), 'permanent');
    assert.match(e1.message, /cannot run ".*no\/rclone": no such file/);
    assert.match(e1.hint ?? '', /apt install rclone/);

    const noPath = createRcloneStorage(remotes.url(fresh()), { config: remotes.config }, { ...process.env, PATH: path.join(remotes.dir, 'empty-path') });
    const e2 = await storageError(noPath.check!(), 'permanent');
    assert.match(e2.message, /cannot run "rclone": not found on PATH/);
    assert.match(e2.hint ?? '', /apt install rclone.*binary:/);
  });

  it('an unknown remote names the config file used and how to create the remote', async () => {
    const unknown = await openStorage('rclone:nosuch:backups', { config: remotes.config });
    const e = await storageError(unknown.check!(), 'permanent');
    assert.equal(e.message, `[rclone] cannot write to rclone:nosuch:backups: remote "nosuch" is not defined in ${remotes.config}`);
    assert.match(e.hint ?? '', new RegExp(`rclone config --config ${remotes.config}`));

    const missing = path.join(remotes.dir, 'absent.conf');
    const e2 = await storageError((await openStorage('rclone:stash:/tmp', { config: missing })).stat('x'), 'permanent');
    assert.match(e2.message, /remote "stash" is not defined in .*absent\.conf \(the file does not exist\)$/);
  });

  it('refuses URLs with parameters or credentials, and unknown options', async () => {
    for (const url of ['rclone::s3,access_key_id=AKIAEXAMPLE:bucket', 'rclone:b2,key=abc:bucket', 'rclone://b2/bucket', 'rclone:-x:path']) {
      await assert.rejects(openStorage(url, {}), ConfigError, url);
    }
    await assert.rejects(openStorage('rclone:stash:/tmp', { bucket: 'x' }), (err: Error) => err instanceof ConfigError && /valid options: config, binary, settings/.test((err as ConfigError).hint ?? ''));
  });

  it('settings define a remote through rclone\'s environment, never its command line', async () => {
    const { binary, log } = remotes.wrapper('rclone-logged');
    const secret = `s3cr3t-${randomBytes(6).toString('hex')}`;
    const storage = await openStorage(`rclone:envonly:${remotes.dir}/${fresh()}`, { binary, settings: { type: 'local', pass: secret } });
    await storage.put('db/a.txt', Buffer.from('through env'));
    assert.equal((await getBytes(storage, 'db/a.txt')).toString(), 'through env');
    const argv = readFileSync(log, 'utf8');
    assert.match(argv, /^rcat .*-- envonly:/m);
    assert.ok(!argv.includes(secret), 'the secret setting is not on any command line');
  });

  it('a live claim of another writer refuses an exclusive put; a stale one does not block it', async () => {
    const sub = fresh();
    const storage = await openStorage(remotes.url(sub), { config: remotes.config });
    const claims = path.join(remotes.dir, sub, 'db', '.tmp-claims');
    await mkdir(claims, { recursive: true });
    const foreign = path.join(claims, 'lock.claim-0123456789abcdef');
    await writeFile(foreign, '{"host":"elsewhere"}\n');

    const e = await storageError(storage.put('db/lock', Buffer.from('mine'), { exclusive: true }), 'exists');
    assert.match(e.message, /being written by another process/);
    assert.deepEqual(await remotes.files(sub), ['db/.tmp-claims/lock.claim-0123456789abcdef'], 'the loser left only the other claim');

    // A process killed in its claim window left it long ago.
    const old = new Date(Date.now() - CLAIM_STALE_MS - 60_000);
    await utimes(foreign, old, old);
    await storage.put('db/lock', Buffer.from('mine'), { exclusive: true });
    assert.equal((await getBytes(storage, 'db/lock')).toString(), 'mine');
    assert.deepEqual((await storage.list('db/')).map((o) => o.key), ['db/lock']);
    const temps = await storage.listTemporaries!('db/');
    assert.deepEqual(temps.map((t) => t.key), ['db/.tmp-claims/lock.claim-0123456789abcdef'], 'prune sees the stale claim');
    await storage.delete(temps[0].key);
    assert.deepEqual(await remotes.files(sub), ['db/lock']);
  });

  it('of exclusive puts of one key from separate processes at most one succeeds', async () => {
    const sub = fresh();
    const url = remotes.url(sub);
    const keys = ['race/k-0', 'race/k-1'];
    // Node starts in ~100 ms: the writers begin together, well after all have started.
    const startAt = Date.now() + 1000;
    const index = new URL('../../src/storage/index.js', import.meta.url).href;
    const script = `
      const { openStorage } = await import(${JSON.stringify(index)});
      const [url, config, keys, startAt, writer] = JSON.parse(process.argv[1]);
      const storage = await openStorage(url, { config });
      await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
      const results = await Promise.all(keys.map((key) => storage.put(key, Buffer.from('writer ' + writer), { exclusive: true }).then(() => 'won', (e) => 'lost:' + e.reason + ':' + e.message)));
      process.stdout.write(JSON.stringify(results));`;
    const writers = [0, 1, 2].map(
      (writer) =>
        new Promise<string[]>((resolve, reject) => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', script, JSON.stringify([url, remotes.config, keys, startAt, writer])], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.on('data', (c: Buffer) => (out += c.toString()));
          child.once('error', reject);
          child.once('close', (code) => (code === 0 ? resolve(JSON.parse(out) as string[]) : reject(new Error(`writer ${writer} exited with ${code}`))));
        }),
    );
    const results = await Promise.all(writers);
    const storage = await openStorage(url, { config: remotes.config });
    const stored: string[] = [];
    keys.forEach((key, k) => {
      const winners = results.map((r, w) => (r[k] === 'won' ? w : -1)).filter((w) => w >= 0);
      assert.ok(winners.length <= 1, `${key}: ${winners.length} writers won`);
      for (const r of results) if (r[k] !== 'won') assert.match(r[k], /^lost:exists:/);
      if (winners.length === 1) stored.push(key);
    });
    for (const key of stored) {
      const winner = results.findIndex((r) => r[keys.indexOf(key)] === 'won');
      assert.equal((await getBytes(storage, key)).toString(), `writer ${winner}`);
    }
    assert.deepEqual(await remotes.files(sub), stored, 'losers left neither temporaries nor claims');
  });

  it('a get cut short, ended by a failing rclone, or altered fails the stream', async () => {
    const sub = fresh();
    const body = Buffer.alloc(256 * 1024, 'a');
    await (await openStorage(remotes.url(sub), { config: remotes.config })).put('db/f.bin', body);
    const through = async (name: string, cat: string, extra: Record<string, unknown> = {}) => {
      const { binary } = remotes.wrapper(name, `if [ "$1" = cat ]; then ${cat}; fi\nexec rclone "$@"`);
      const storage = await openStorage(remotes.url(sub), { config: remotes.config, binary, ...extra });
      return readAll(await storage.get('db/f.bin'));
    };
    const short = await storageError(through('rclone-short', 'rclone "$@" | head -c 1000; exit 0'), 'transient');
    assert.match(short.message, /ended after 1000 of 262144 bytes/);
    const failed = await storageError(through('rclone-fails', 'rclone "$@" | head -c 1000; echo "Failed to cat: connection reset by peer" >&2; exit 5'), 'transient');
    assert.match(failed.message, /reading db\/f\.bin from .*: connection reset by peer$/);
    const altered = await storageError(through('rclone-alters', 'rclone "$@" | tr a b; exit 0', { hash: 'sha256' }), 'permanent');
    assert.match(altered.message, /sha256 of the data differs/);
    // The real thing, with the hash checked on the way.
    const storage = await openStorage(remotes.url(sub), { config: remotes.config, hash: 'sha256' });
    assert.match((await storage.stat('db/f.bin'))?.metadata?.sha256 ?? '', /^[0-9a-f]{64}$/);
    assert.deepEqual(await getBytes(storage, 'db/f.bin'), body);
  });

  it('works at a remote\'s root, checks writability, and tells the free space', async () => {
    const storage = await openStorage('rclone:stash-alias:', { config: remotes.config });
    await storage.check!();
    await storage.put('db/root.txt', Buffer.from('at the root'));
    assert.deepEqual((await storage.list('')).map((o) => o.key), ['db/root.txt']);
    assert.equal(readFileSync(path.join(remotes.aliasDir, 'db', 'root.txt'), 'utf8'), 'at the root');
    assert.deepEqual(await storage.listTemporaries!(''), [], 'check() left no probe');
    // A stash that does not exist yet: the free space of the nearest folder above it.
    const later = await openStorage(remotes.url(`${fresh()}/not/yet`), { config: remotes.config });
    assert.ok(((await later.freeSpace!()) ?? 0) > 0);
  });

  it('reports rclone\'s last error line without timestamps, levels or URL queries', () => {
    const stderr = [
      '2026/12/05 23:49:38 NOTICE: Config file "/x/rclone.conf" not found - using defaults',
      '2026/12/05 23:49:38 ERROR : a.txt: Failed to copy: Get "https://example.com/b/a.txt?X-Amz-Signature=abc&token=t": dial tcp: i/o timeout',
      '2026/12/05 23:49:38 Failed to copyto: Get "https://example.com/b/a.txt?X-Amz-Signature=abc": dial tcp: i/o timeout',
    ].join('\n');
    assert.equal(rcloneErrorLine(stderr), 'Get "https://example.com/b/a.txt?…": dial tcp: i/o timeout');
  });
});
