// The Azure Blob driver beyond the storage contract, against Azurite on loopback (one server for
// the file): artifacts in several blocks, exclusive puts racing through the block-commit path,
// uncommitted blocks after an abort and after a writer killed mid-upload (and `dbstash prune`
// sweeping them), access tiers and archived blobs, missing containers, credentials that never
// reach a message, a hung endpoint, and how SDK errors are classified.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { inspect } from 'node:util';
import { ContainerSASPermissions, generateBlobSASQueryParameters, RestError, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob';
import { ConfigError, StorageError } from '../../src/core/errors.js';
import { classifyAzureError, createAzureStorage, parseAzureUrl } from '../../src/storage/azure.js';
import { Drawable, isDrawable } from '../../src/storage/drawable.js';
import { openStorage } from '../../src/storage/index.js';
import { createLocalStorage } from '../../src/storage/local.js';
import { getBytes, readAll, type Storage } from '../../src/storage/storage.js';
import { startAzurite, type AzuriteServer } from '../harness/azurite.js';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb, writeConfig } from '../s3/helpers.js';

const CONTAINER = 'driver';
const MiB = 1024 * 1024;
let server: AzuriteServer;
let raw: ContainerClient;
const opened: Storage[] = [];

before(async () => {
  server = await startAzurite({ containers: [CONTAINER, 'stash'] });
  raw = server.container(CONTAINER);
});
after(async () => {
  for (const s of opened) await s.close?.();
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A fresh prefix and a storage on it, opened by URL (registration and retry wrapper included). */
async function fresh(options: Record<string, unknown> = {}, container = CONTAINER): Promise<{ storage: Storage; prefix: string }> {
  const prefix = `t-${randomBytes(4).toString('hex')}`;
  const storage = await openStorage(`azure://${container}/${prefix}`, {
    endpoint: server.endpoint,
    accountName: server.accountName,
    accountKey: server.accountKey,
    ...options,
  });
  opened.push(storage);
  return { storage, prefix };
}

/** Every blob under prefix/, uncommitted ones and leftover uncommitted blocks included (raw client). */
async function everything(prefix: string, container = raw): Promise<string[]> {
  const committed = new Set<string>();
  for await (const b of container.listBlobsFlat({ prefix: `${prefix}/` })) committed.add(b.name);
  const out: string[] = [];
  for await (const b of container.listBlobsFlat({ prefix: `${prefix}/`, includeUncommitedBlobs: true })) {
    const key = b.name.slice(prefix.length + 1);
    const pending = (await container.getBlockBlobClient(b.name).getBlockList('uncommitted')).uncommittedBlocks?.length ?? 0;
    if (!committed.has(b.name)) out.push(`${key} (only uncommitted blocks: ${pending})`);
    else out.push(pending ? `${key} (plus ${pending} uncommitted blocks)` : key);
  }
  return out.sort();
}

/** Waits until the blob `name` holds at least `blocks` uncommitted blocks. */
async function untilStaged(name: string, blocks: number, container = raw): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const staged = await container
      .getBlockBlobClient(name)
      .getBlockList('uncommitted')
      .then((l) => l.uncommittedBlocks?.length ?? 0)
      .catch(() => 0);
    if (staged >= blocks) return;
    assert.ok(Date.now() < deadline, `${name}: ${staged} of ${blocks} blocks staged after 20 s`);
    await sleep(20);
  }
}

function assertNoSecret(text: string, secrets: string[]): void {
  for (const s of secrets) assert.ok(!text.includes(s), `a credential appears in: ${text}`);
}

describe('azure driver', () => {
  it('streams an artifact in several blocks, byte-exact, with metadata and the configured tier', async () => {
    const { storage, prefix } = await fresh({ blockSizeMiB: 1, tier: 'cool' });
    const data = randomBytes(5 * MiB + 12345);
    const res = await storage.put('shop/a.dump', Readable.from([data.subarray(0, 3 * MiB), data.subarray(3 * MiB)]), {
      sizeHint: data.length,
      metadata: { Origin: 'test-run' },
    });
    assert.equal(res.size, data.length);
    const blob = raw.getBlockBlobClient(`${prefix}/shop/a.dump`);
    const blocks = (await blob.getBlockList('committed')).committedBlocks ?? [];
    assert.equal(blocks.length, 6, 'five full 1 MiB blocks and a short last one');
    assert.equal(new Set(blocks.map((b) => b.name.length)).size, 1, 'every block id has the same length');
    assert.equal(sha256(await getBytes(storage, 'shop/a.dump')), sha256(data));
    assert.equal((await blob.getProperties()).accessTier, 'Cool', 'the artifact is written in the configured tier');

    const stat = await storage.stat('shop/a.dump');
    assert.equal(stat?.size, data.length);
    assert.equal(stat?.metadata?.origin, 'test-run', 'metadata names come back lower-case, hyphens as underscores');
    const [listed] = await storage.list('shop/');
    assert.equal(listed.metadata?.origin, 'test-run');

    // Buffered writes (manifests, locks) stay in the account's default tier.
    await storage.put('shop/a.manifest.json', Buffer.from('{}'));
    assert.notEqual((await raw.getBlockBlobClient(`${prefix}/shop/a.manifest.json`).getProperties()).accessTier, 'Cool');
    assert.deepEqual(await everything(prefix), ['shop/a.dump', 'shop/a.manifest.json']);
  });

  it('of exclusive puts racing through the block commit (If-None-Match: *), one wins and the others get "exists"', async () => {
    const { storage, prefix } = await fresh({ blockSizeMiB: 1 });
    for (let round = 0; round < 3; round++) {
      const key = `db/race-${round}.dump`;
      const bodies = [0, 1, 2].map(() => randomBytes(3 * MiB + 7));
      const sources = bodies.map(() => new PassThrough());
      const puts = sources.map((src) => storage.put(key, src, { exclusive: true }));
      // Every writer stages its blocks before any of them commits.
      bodies.forEach((b, i) => sources[i].write(b.subarray(0, 3 * MiB)));
      await sleep(150);
      bodies.forEach((b, i) => sources[i].end(b.subarray(3 * MiB)));
      const results = await Promise.allSettled(puts);
      const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      assert.equal(winners.length, 1, `round ${round}: ${winners.length} exclusive puts succeeded`);
      for (const r of results) {
        if (r.status === 'rejected') {
          assert.ok(r.reason instanceof StorageError, String(r.reason));
          assert.equal(r.reason.reason, 'exists', r.reason.message);
        }
      }
      assert.equal(sha256(await getBytes(storage, key)), sha256(bodies[winners[0]]));
    }
    // A loser's blocks staged after the winner committed stay attached to the winner's blob (Azure
    // cannot drop them without rewriting that blob): unseen by list and stat, not an incomplete
    // upload, and gone with the blob.
    const left = await everything(prefix);
    assert.deepEqual(left.map((k) => k.replace(/ \(plus \d+ uncommitted blocks\)$/, '')), ['db/race-0.dump', 'db/race-1.dump', 'db/race-2.dump'], left.join(', '));
    assert.deepEqual(await storage.listIncompleteUploads!(''), []);
    for (const o of await storage.list('')) await storage.delete(o.key);
    assert.deepEqual(await everything(prefix), []);
  });

  it('an abort or a failing source after blocks were staged discards them: nothing is left under a new key', async () => {
    const { storage, prefix } = await fresh({ blockSizeMiB: 1 });
    const source = new PassThrough();
    const controller = new AbortController();
    const put = storage.put('db/aborted.dump', source, { signal: controller.signal });
    source.write(randomBytes(3 * MiB));
    await untilStaged(`${prefix}/db/aborted.dump`, 2);
    controller.abort(new Error('stop'));
    await assert.rejects(put);
    assert.deepEqual(await everything(prefix), [], 'no blob, no uncommitted blocks');

    const broken = new PassThrough();
    const failing = storage.put('db/broken.dump', broken);
    broken.write(randomBytes(3 * MiB));
    await untilStaged(`${prefix}/db/broken.dump`, 2);
    broken.destroy(new Error('the dump died'));
    await assert.rejects(failing);
    assert.deepEqual(await everything(prefix), []);

    // An aborted overwrite never touches the committed blob it would have replaced.
    await storage.put('db/kept.txt', Buffer.from('original'));
    const over = new PassThrough();
    const overController = new AbortController();
    const overwrite = storage.put('db/kept.txt', over, { signal: overController.signal });
    over.write(randomBytes(2 * MiB + 1));
    await untilStaged(`${prefix}/db/kept.txt`, 2);
    overController.abort(new Error('stop'));
    await assert.rejects(overwrite);
    assert.equal((await getBytes(storage, 'db/kept.txt')).toString(), 'original');
  });

  it('draws a local stash\'s artifact straight into its block buffers; a source failing or an abort mid-draw leaves nothing', async () => {
    const { storage, prefix } = await fresh({ blockSizeMiB: 1 });
    const dir = tempDir('azure-draw');
    const local = createLocalStorage({ root: dir });
    const data = randomBytes(5 * MiB + 4321);
    await local.put('db/a.dump', data);
    const source = await local.get('db/a.dump');
    assert.ok(isDrawable(source));
    const seen = createHash('sha256');
    source.observe((b) => seen.update(b));
    assert.equal((await storage.put('db/a.dump', source, { sizeHint: data.length })).size, data.length);
    assert.equal(source.readableDidRead, false, 'drawn, not read as a stream');
    assert.ok(source.destroyed, 'the source is closed');
    assert.equal(seen.digest('hex'), sha256(data));
    assert.equal(sha256(await getBytes(storage, 'db/a.dump')), sha256(data));
    assert.equal((await raw.getBlockBlobClient(`${prefix}/db/a.dump`).getBlockList('committed')).committedBlocks?.length, 6);

    // A source that stalls after 3 MiB, then fails (or the put is aborted), once blocks are staged.
    const stalling = (onStall: () => void) => {
      let position = 0;
      let release: (err: Error) => void = () => {};
      const d = new Drawable(
        {
          async read(into, offset, length) {
            if (position >= 3 * MiB) {
              onStall();
              await new Promise<never>((_, reject) => (release = reject));
            }
            const n = data.copy(into, offset, position, Math.min(position + length, 3 * MiB));
            position += n;
            return n;
          },
          close: async () => release(new Error('closed')),
        },
        256 * 1024,
      );
      return { d, fail: (err: Error) => release(err) };
    };
    const broken = stalling(() => {});
    const failing = storage.put('db/broken.dump', broken.d);
    await untilStaged(`${prefix}/db/broken.dump`, 2);
    broken.fail(new Error('the disk went away'));
    await assert.rejects(failing, /the disk went away/);
    assert.ok(broken.d.destroyed);

    const controller = new AbortController();
    const stalled = stalling(() => {});
    const aborted = storage.put('db/aborted.dump', stalled.d, { signal: controller.signal });
    await untilStaged(`${prefix}/db/aborted.dump`, 2);
    controller.abort(new Error('stop'));
    await assert.rejects(aborted);
    assert.ok(stalled.d.destroyed);
    assert.deepEqual(await everything(prefix), ['db/a.dump'], 'no other blob, no uncommitted blocks');
  });

  it('a writer killed mid-upload leaves no visible blob; prune discards its uncommitted blocks', async () => {
    const prefix = `dbstash-${randomBytes(3).toString('hex')}`;
    const stash = server.container('stash');
    const key = 'shop/shop_prod_2026-01-01T00-00-00Z.dump';
    const storageModule = new URL('../../src/storage/index.js', import.meta.url).href;
    // A put that stages three blocks and then waits for data that never comes.
    const script = `
      const { openStorage } = await import(${JSON.stringify(storageModule)});
      const { PassThrough } = await import('node:stream');
      const storage = await openStorage(${JSON.stringify(`azure://stash/${prefix}`)}, { blockSizeMiB: 1 });
      const source = new PassThrough();
      storage.put(${JSON.stringify(key)}, source).catch((err) => { console.error(err.message); process.exit(3); });
      source.write(Buffer.alloc(3 * 1024 * 1024 + 10, 7));
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, AZURE_STORAGE_CONNECTION_STRING: server.connectionString },
    });
    const exited = once(child, 'exit');
    try {
      await untilStaged(`${prefix}/${key}`, 3, stash);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }

    const storage = await openStorage(`azure://stash/${prefix}`, { connectionString: server.connectionString });
    opened.push(storage);
    assert.equal(await storage.stat(key), undefined, 'nothing is visible under the key');
    assert.deepEqual(await storage.list(''), []);
    assert.deepEqual(await everything(prefix, stash), [`${key} (only uncommitted blocks: 3)`]);
    const [dead, ...others] = await storage.listIncompleteUploads!('');
    assert.deepEqual(others, []);
    assert.equal(dead.key, key);
    assert.match(dead.uploadId, /^blocks:[0-9a-f]{16}$/, 'the upload id names the writer');
    assert.ok(Date.now() - dead.startedAt.getTime() < 60_000, `started ${dead.startedAt.toISOString()}`);

    // What prune does with it, through the CLI as users run it.
    await sleep(Math.max(0, 1100 - (Date.now() - dead.startedAt.getTime())));
    const dir = tempDir('azure-prune');
    const env = { AZURE_STORAGE_CONNECTION_STRING: server.connectionString, AZURE_STORAGE_KEY: undefined, AZURE_STORAGE_ACCOUNT: undefined, AZURE_STORAGE_SAS_TOKEN: undefined };
    const pruned = await runCli(['prune', '--storage', `azure://stash/${prefix}`, '--upload-age', '1s', '--json'], { env, cwd: dir });
    assert.equal(pruned.code, 0, pruned.stderr);
    const [report] = JSON.parse(pruned.stdout).storages as { incompleteUploads: { key: string; uploadId: string; aborted?: boolean }[] }[];
    assert.deepEqual(report.incompleteUploads.map((u) => [u.key, u.uploadId, u.aborted]), [[key, dead.uploadId, true]]);
    assert.deepEqual(await everything(prefix, stash), [], 'no uncommitted blocks remain');
    await assert.rejects(stash.getBlockBlobClient(`${prefix}/${key}`).getBlockList('all'), (err: RestError) => err.statusCode === 404);
    await storage.abortIncompleteUpload!(dead); // idempotent
    assert.deepEqual(await everything(prefix, stash), []);
  });

  it('backup, list, status and verify work on an azure:// storage from the config file', async () => {
    const dir = tempDir('azure-cli');
    const db = makeSqliteDb(dir, 'shop', 2);
    writeConfig(
      dir,
      `storages:
  azure:
    url: azure://stash/cli
    endpoint: ${server.endpoint}
    accountName: ${server.accountName}
    accountKey: \${AZURE_TEST_KEY}
    tier: Cool
databases:
  shop:
    url: ${db}
    storages: [azure]
encryption: none
`,
    );
    const env = { AZURE_TEST_KEY: server.accountKey, AZURE_STORAGE_CONNECTION_STRING: undefined, AZURE_STORAGE_KEY: undefined, AZURE_STORAGE_ACCOUNT: undefined, AZURE_STORAGE_SAS_TOKEN: undefined };
    const backup = await runCli(['backup', 'shop'], { env, cwd: dir });
    assert.equal(backup.code, 0, backup.stderr);
    const list = await runCli(['list', '--json'], { env, cwd: dir });
    assert.equal(list.code, 0, list.stderr);
    assert.equal(JSON.parse(list.stdout).backups.length, 1, list.stdout);
    const status = await runCli(['status'], { env, cwd: dir });
    assert.match(status.stdout, /storage azure \(azure:\/\/stash\/cli\): reachable/, status.stdout + status.stderr);
    const verify = await runCli(['verify', '--latest'], { env, cwd: dir });
    assert.equal(verify.code, 0, verify.stderr);
    const tiers: Record<string, string | undefined> = {};
    for await (const b of server.container('stash').listBlobsFlat({ prefix: 'cli/' })) tiers[b.name.replace(/^.*\./, '')] = b.properties.accessTier;
    assert.deepEqual(tiers, { json: 'Hot', zst: 'Cool' }, 'the artifact in the configured tier, manifests and records in the default one');
  });

  it('aborting an incomplete upload never touches a committed blob', async () => {
    const { storage, prefix } = await fresh();
    await storage.put('db/committed.txt', Buffer.from('keep me'));
    await storage.abortIncompleteUpload!({ key: 'db/committed.txt', uploadId: 'blocks:other', startedAt: new Date(0) });
    assert.equal((await getBytes(storage, 'db/committed.txt')).toString(), 'keep me');
    assert.deepEqual(await everything(prefix), ['db/committed.txt']);
  });

  it('reading an archived blob fails permanently and says how to rehydrate it', async () => {
    const { storage, prefix } = await fresh();
    await storage.put('shop/old.dump', Readable.from([randomBytes(1000)]));
    // Azurite implements Set Blob Tier and refuses reads of archived blobs, as Azure does.
    await raw.getBlockBlobClient(`${prefix}/shop/old.dump`).setAccessTier('Archive');
    await assert.rejects(storage.get('shop/old.dump'), (err: unknown) => {
      assert.ok(err instanceof StorageError);
      assert.equal(err.reason, 'permanent');
      assert.match(err.message, /^\[azure\] cannot read shop\/old\.dump: it is in the Archive tier and must be rehydrated before it can be read$/);
      assert.match(err.hint ?? '', new RegExp(`az storage blob set-tier --container-name ${CONTAINER} --name ${prefix}/shop/old\\.dump --tier Hot --rehydrate-priority Standard`));
      assert.match(err.hint ?? '', /Azure portal/);
      return true;
    });
  });

  it('a missing container: a write says to create it, reads find nothing, the preflight fails', async () => {
    const { storage } = await fresh({}, 'nowhere');
    await assert.rejects(storage.put('db/x.txt', Buffer.from('x')), (err: StorageError) => {
      assert.equal(err.reason, 'permanent');
      assert.match(err.message, /container "nowhere" does not exist at http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1/);
      assert.match(err.hint ?? '', /az storage container create --name nowhere --account-name devstoreaccount1/);
      return true;
    });
    await assert.rejects(storage.put('db/y.dump', Readable.from([randomBytes(100)])), (err: StorageError) => err.reason === 'permanent' && /create it/.test(err.hint ?? ''));
    await assert.rejects(storage.get('db/x.txt'), (err: StorageError) => err.reason === 'not-found');
    assert.equal(await storage.stat('db/x.txt'), undefined);
    await assert.rejects(storage.check!(), (err: StorageError) => err.reason === 'permanent' && /create it/.test(err.hint ?? ''));
  });

  it('a wrong account key is a permanent error with a hint, and the key appears nowhere', async () => {
    const wrongKey = randomBytes(64).toString('base64');
    const { storage } = await fresh({ accountKey: wrongKey });
    const attempts = [() => storage.put('db/x.txt', Buffer.from('x')), () => storage.get('db/x.txt'), () => storage.stat('db/x.txt'), () => storage.list(''), () => storage.check!()];
    for (const attempt of attempts) {
      await assert.rejects(attempt(), (err: unknown) => {
        assert.ok(err instanceof StorageError, String(err));
        assert.equal(err.reason, 'permanent');
        assert.match(err.message, /the credentials were refused|access denied/);
        assert.match(err.hint ?? '', /the accountKey option/);
        assertNoSecret(`${err.message} ${err.hint} ${err.stack} ${inspect(err, { depth: 6 })}`, [wrongKey, server.accountKey]);
        return true;
      });
    }
    assertNoSecret(storage.url, [wrongKey]);
  });

  it('works with a SAS token, whose signature never appears in the url or an error; an expired or narrow SAS fails the preflight', async () => {
    const credential = new StorageSharedKeyCredential(server.accountName, server.accountKey);
    const sas = (permissions: string, expiresOn: Date) =>
      generateBlobSASQueryParameters({ containerName: CONTAINER, permissions: ContainerSASPermissions.parse(permissions), expiresOn }, credential).toString();
    const good = sas('rwdl', new Date(Date.now() + 3600_000));
    const signature = new URLSearchParams(good).get('sig')!;
    const prefix = `t-${randomBytes(4).toString('hex')}`;
    const storage = createAzureStorage(`azure://${CONTAINER}/${prefix}`, { endpoint: server.endpoint }, { AZURE_STORAGE_SAS_TOKEN: `?${good}` });
    opened.push(storage);
    assert.equal(storage.url, `azure://${CONTAINER}/${prefix}`);
    await storage.check!();
    await storage.put('db/a.txt', Buffer.from('via SAS'));
    await storage.put('db/b.dump', Readable.from([randomBytes(2000)]));
    assert.equal((await getBytes(storage, 'db/a.txt')).toString(), 'via SAS');
    assert.deepEqual((await storage.list('db/')).map((o) => o.key), ['db/a.txt', 'db/b.dump']);
    await storage.delete('db/a.txt');
    await assert.rejects(storage.get('db/a.txt'), (err: StorageError) => {
      assert.equal(err.reason, 'not-found');
      assertNoSecret(`${err.message} ${err.stack} ${inspect(err, { depth: 6 })}`, [good, signature]);
      return true;
    });

    const expired = sas('rwdl', new Date(Date.now() - 60_000));
    const old = createAzureStorage(`azure://${CONTAINER}/${prefix}`, { endpoint: server.endpoint, sasToken: expired });
    opened.push(old);
    await assert.rejects(old.check!(), (err: StorageError) => err.reason === 'permanent' && /SAS token .* expired at/.test(err.message) && /sasToken option/.test(err.hint ?? ''));
    await assert.rejects(old.put('db/c.txt', Buffer.from('x')), (err: StorageError) => {
      assert.equal(err.reason, 'permanent');
      assert.match(err.hint ?? '', /a SAS needs permissions r, w and l on the container \(and d where prune runs\) and an expiry \(se=\) in the future/);
      assertNoSecret(`${err.message} ${err.hint} ${err.stack} ${inspect(err, { depth: 6 })}`, [expired, new URLSearchParams(expired).get('sig')!]);
      return true;
    });

    const narrow = createAzureStorage(`azure://${CONTAINER}/${prefix}`, { endpoint: server.endpoint, sasToken: sas('rdl', new Date(Date.now() + 3600_000)) });
    opened.push(narrow);
    await assert.rejects(narrow.check!(), (err: StorageError) => err.reason === 'permanent' && /lacks permission w$/.test(err.message));

    // A backup host's SAS without d: a failed upload still leaves no blocks; the empty blob that
    // discarded them stays hidden from list() and stat() until prune sweeps it (listTemporaries).
    const appendOnly = createAzureStorage(`azure://${CONTAINER}/${prefix}`, { endpoint: server.endpoint, sasToken: sas('rwl', new Date(Date.now() + 3600_000)), blockSizeMiB: 1 });
    opened.push(appendOnly);
    await appendOnly.check!();
    const source = new PassThrough();
    const put = appendOnly.put('db/failed.dump', source);
    source.write(randomBytes(2 * MiB + 1));
    await untilStaged(`${prefix}/db/failed.dump`, 2);
    source.destroy(new Error('the dump died'));
    await assert.rejects(put);
    assert.equal(await appendOnly.stat('db/failed.dump'), undefined);
    assert.deepEqual((await appendOnly.list('db/')).map((o) => o.key), ['db/b.dump']);
    assert.deepEqual((await appendOnly.listTemporaries!('db/')).map((o) => [o.key, o.size]), [['db/failed.dump', 0]]);
    assert.deepEqual((await everything(prefix)).filter((k) => k.startsWith('db/failed')), ['db/failed.dump'], 'no uncommitted blocks, only the empty blob');
    await storage.delete('db/failed.dump'); // what prune does, with its own credentials
    assert.deepEqual(await storage.listTemporaries!('db/'), []);
  });

  it('takes its credentials from the AZURE_STORAGE_* environment, and says what to set when there are none', async () => {
    const prefix = `t-${randomBytes(4).toString('hex')}`;
    const byKey = createAzureStorage(`azure://${CONTAINER}/${prefix}`, { endpoint: server.endpoint }, { AZURE_STORAGE_ACCOUNT: server.accountName, AZURE_STORAGE_KEY: server.accountKey });
    const byString = createAzureStorage(`azure://${CONTAINER}/${prefix}`, {}, { AZURE_STORAGE_CONNECTION_STRING: server.connectionString });
    opened.push(byKey, byString);
    await byKey.put('x.txt', Buffer.from('env key'));
    assert.equal((await getBytes(byString, 'x.txt')).toString(), 'env key');

    // Missing credentials fail each operation (so an optional destination is only dropped), not the opening.
    const none = createAzureStorage(`azure://${CONTAINER}/${prefix}`, {}, {});
    await assert.rejects(none.check!(), (err: StorageError) => err.reason === 'permanent' && /no Azure Storage credentials found/.test(err.message) && /AZURE_STORAGE_CONNECTION_STRING/.test(err.hint ?? ''));
    await assert.rejects(none.list(''), (err: StorageError) => err.reason === 'permanent');

    // A connection string that cannot reach its endpoint: transient, and the key is not in the message.
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const cs = `DefaultEndpointsProtocol=http;AccountName=${server.accountName};AccountKey=${server.accountKey};BlobEndpoint=http://127.0.0.1:${port}/${server.accountName};`;
    const down = createAzureStorage(`azure://${CONTAINER}/${prefix}`, { connectionString: cs, maxAttempts: 1 });
    await assert.rejects(down.stat('x.txt'), (err: StorageError) => {
      assert.equal(err.reason, 'transient');
      assert.match(err.message, /ECONNREFUSED: cannot reach http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1/);
      assertNoSecret(`${err.message} ${err.hint} ${err.stack}`, [server.accountKey, cs]);
      return true;
    });
    await down.close?.();
  });

  it('rejects bad URLs and options at opening, naming the fix', async () => {
    assert.deepEqual(parseAzureUrl('azure://backups/db/stash/'), { container: 'backups', prefix: 'db/stash' });
    assert.throws(() => parseAzureUrl('azure://acct:key@backups/x'), (err: ConfigError) => /credentials do not belong in the storage URL/.test(err.message));
    assert.throws(() => parseAzureUrl('azure://Backups_1/x'), (err: ConfigError) => /not a valid container name/.test(err.message));
    await assert.rejects(openStorage('azure://backups/x', { bucket: 'b' }), (err: ConfigError) => err instanceof ConfigError && /option "bucket"/.test(err.message) && /valid options: endpoint, accountName/.test(err.hint ?? ''));
    await assert.rejects(openStorage('azure://backups/x', { tier: 'Glacier' }), (err: ConfigError) => err instanceof ConfigError && /option "tier"/.test(err.message));
    await assert.rejects(openStorage('azure://backups/x', { endpoint: 'https://a.blob.core.windows.net/?sv=1&sig=abc' }), (err: ConfigError) => /sasToken, not in the endpoint/.test(err.hint ?? ''));
    const s = await openStorage('azure://backups/db', { connectionString: server.connectionString });
    opened.push(s);
    assert.deepEqual(s.properties, { kind: 'azure', local: false, maxParallelism: 8 });
    assert.equal(s.url, 'azure://backups/db');
  });

  it('a hung endpoint fails a request after idleTimeout, and an abort ends one at once', async () => {
    const sockets = new Set<net.Socket>();
    const hung = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(hung.address() as net.AddressInfo).port}/${server.accountName}`;
    try {
      const storage = createAzureStorage('azure://hung/x', { endpoint, accountName: server.accountName, accountKey: server.accountKey, idleTimeout: '500ms', maxAttempts: 1 });
      let started = Date.now();
      await assert.rejects(storage.stat('a'), (err: StorageError) => {
        assert.equal(err.reason, 'transient');
        assert.match(err.message, /no answer for 500ms \(idleTimeout\)/);
        assert.match(err.hint ?? '', /raise connectTimeout\/idleTimeout/);
        return true;
      });
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);

      const slow = createAzureStorage('azure://hung/x', { endpoint, accountName: server.accountName, accountKey: server.accountKey });
      const controller = new AbortController();
      started = Date.now();
      const pending = slow.get('a', { signal: controller.signal });
      setTimeout(() => controller.abort(new Error('stop')), 100);
      await assert.rejects(pending, /stop/);
      assert.ok(Date.now() - started < 1000, `the abort took ${Date.now() - started} ms`);
      await storage.close?.();
      await slow.close?.();
    } finally {
      for (const s of sockets) s.destroy();
      hung.close();
    }
  });

  it('classifies SDK errors: throttling, server errors and resets are transient; no credential survives in a message', () => {
    const ctx = { loc: { container: 'c', prefix: 'p' }, endpoint: 'https://acct.blob.core.windows.net', accountName: 'acct', secrets: ['s3cr3t-account-key=='] };
    const cases: [RestError, string][] = [
      [new RestError('Server busy', { statusCode: 503, code: 'ServerBusy' }), 'transient'],
      [new RestError('Too many requests', { statusCode: 429 }), 'transient'],
      [new RestError('timeout', { statusCode: 408 }), 'transient'],
      [new RestError('socket hang up', { code: 'ECONNRESET' }), 'transient'],
      [new RestError('The specified blob does not exist.', { statusCode: 404, code: 'BlobNotFound' }), 'not-found'],
      [new RestError('The specified blob already exists.', { statusCode: 409, code: 'BlobAlreadyExists' }), 'exists'],
      [new RestError('', { statusCode: 412 }), 'exists'],
      [new RestError('This operation is not permitted on an archived blob.', { statusCode: 409, code: 'BlobArchived' }), 'permanent'],
      [new RestError('Server failed to authenticate the request.\nRequestId:1', { statusCode: 403, code: 'AuthenticationFailed' }), 'permanent'],
    ];
    for (const [err, reason] of cases) assert.equal(classifyAzureError(err, 'x', ctx).reason, reason, err.message);
    const leaky = new RestError('failed GET https://acct.blob.core.windows.net/c/p?sv=2024&sig=AbCdEf%2B123 with AccountKey=s3cr3t-account-key==;', { statusCode: 400 });
    const e = classifyAzureError(leaky, 'cannot read p', ctx);
    assert.equal(e.reason, 'permanent');
    assert.doesNotMatch(e.message, /AbCdEf|s3cr3t/);
    assert.match(e.message, /sig=\*\*\*/);
  });

  it('reads back what a buffered put stored, checking its SHA-256', async () => {
    const { storage, prefix } = await fresh();
    await storage.put('db/m.json', Buffer.from('{"a":1}'));
    // Altered behind the driver's back, keeping the metadata: the read must fail, not return it.
    const blob = raw.getBlockBlobClient(`${prefix}/db/m.json`);
    const { metadata } = await blob.getProperties();
    await blob.upload(Buffer.from('{"a":2}'), 7, { metadata });
    await assert.rejects(readAll(await storage.get('db/m.json')), /SHA-256 differs/);
  });
});
