/**
 * The remote drivers through the CLI, each against its real server on loopback, started here:
 * Azurite (Azure Blob), Debian's sshd (SFTP) and an rclone remote of rclone's own. One backup fans
 * out to a local directory and all three; then, from each remote alone: list, verify with a
 * restore drill, restore, copy, status and prune. And an optional destination that fails: a
 * degraded backup (exit 12), the others intact. No credential shows in any output.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { startAzurite, type AzuriteServer } from '../harness/azurite.js';
import { makeRcloneRemotes, type RcloneRemotes } from '../harness/rclone.js';
import { runCli } from '../harness/run.js';
import { startSshd, type SshServer } from '../harness/sshd.js';
import { seriesDir } from '../harness/stash.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb } from '../s3/helpers.js';

const REMOTES = ['azure', 'sftp', 'rclone'] as const;
let azurite: AzuriteServer;
let sshd: SshServer;
let rc: RcloneRemotes;
let root: string;
let db: string;
let config: string;
let env: NodeJS.ProcessEnv;

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const net = await import('node:net');
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as import('node:net').AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

before(async () => {
  root = tempDir('dbstash-drivers');
  [azurite, sshd, rc] = await Promise.all([startAzurite({ containers: ['stash'] }), startSshd(), makeRcloneRemotes()]);
  // 6 MiB of random rows: with 1 MiB blocks the Azure artifact is several staged blocks.
  db = makeSqliteDb(root, 'shop', 6);
  // The connection string (with the account key) stays in the environment, as users keep it.
  env = { AZ_CONNECTION: azurite.connectionString };
  const down = await closedPort();
  config = path.join(root, 'dbstash.yaml');
  writeFileSync(
    config,
    `encryption: none
storages:
  local:
    url: ${path.join(root, 'local')}
  azure:
    url: azure://stash/dbstash
    connectionString: \${AZ_CONNECTION}
    blockSizeMiB: 1
  sftp:
    url: ${sshd.url('stash')}
    privateKey: ${sshd.userKey}
    knownHosts: ${sshd.knownHosts}
  rclone:
    url: ${rc.url('stash')}
    config: ${rc.config}
  sftp-down:
    url: sftp://root@127.0.0.1:${down}/stash
    privateKey: ${sshd.userKey}
    knownHosts: ${sshd.knownHosts}
    optional: true
databases:
  shop:
    url: sqlite://${db}
    storages: [local, azure, sftp, rclone]
`,
    { mode: 0o600 },
  );
});

after(async () => {
  await Promise.all([azurite?.stop(), sshd?.stop(), rc?.remove()]);
});

/** Runs the CLI with the config; asserts that no output carries the account key. */
async function cli(args: string[], timeoutMs = 120_000) {
  const res = await runCli([...args, '--config', config], { env, cwd: root, timeoutMs });
  for (const out of [res.stdout, res.stderr]) {
    assert.ok(!out.includes(azurite.accountKey), `the account key showed in the output of ${args.join(' ')}`);
  }
  return res;
}

const ids = async (storage: string): Promise<string[]> => {
  const list = await cli(['list', '--storage', storage, '--json']);
  assert.equal(list.code, 0, list.stderr);
  return (JSON.parse(list.stdout) as { backups: { id: string }[] }).backups.map((b) => b.id);
};

function rowsOf(file: string): { blobs: number; notes: number } {
  const d = new Database(file, { readonly: true });
  try {
    return {
      blobs: (d.prepare('SELECT count(*) AS n FROM blobs').get() as { n: number }).n,
      notes: (d.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n,
    };
  } finally {
    d.close();
  }
}

describe('the remote drivers through the CLI', () => {
  let first: string;

  it('one backup fans out to local, Azure, SFTP and rclone; each remote lists it, drills it and restores it byte-exact in rows', async () => {
    const res = await cli(['backup', 'shop', '--json']);
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout) as { id: string; stored: string[]; degraded?: boolean };
    first = out.id;
    assert.deepEqual([...out.stored].sort(), ['azure', 'local', 'rclone', 'sftp']);
    const want = rowsOf(db);
    for (const remote of REMOTES) {
      assert.deepEqual(await ids(remote), [first], `${remote} lists the backup`);
      const drill = await cli(['verify', '--latest', 'shop', '--storage', remote, '--drill', '--json']);
      assert.equal(drill.code, 0, `${remote}: ${drill.stderr}`);
      const into = path.join(root, `restored-${remote}.db`);
      const restored = await cli(['restore', first, '--to', into, '--storage', remote, '--yes']);
      assert.equal(restored.code, 0, `${remote}: ${restored.stderr}`);
      assert.deepEqual(rowsOf(into), want, `${remote}: every row back`);
    }
    // The manifest names the storage by its URL, never with a credential.
    const manifests = (await rc.files('stash')).filter((f) => f.endsWith('.manifest.json'));
    assert.equal(manifests.length, 1, manifests.join(' '));
    const manifest = readFileSync(path.join(rc.dir, 'stash', manifests[0]), 'utf8');
    assert.ok(!manifest.includes(azurite.accountKey));
  });

  it('copy fills each remote from the local stash; status reads each; prune keeps the policy on each', async () => {
    const made: string[] = [];
    for (let i = 0; i < 2; i++) {
      const more = await cli(['backup', 'shop', '--storage', 'local', '--json']);
      assert.equal(more.code, 0, more.stderr);
      made.push((JSON.parse(more.stdout) as { id: string }).id);
      await new Promise((r) => setTimeout(r, 1100)); // ids are stamped to the second
    }
    const [middle, newest] = made;
    for (const remote of REMOTES) {
      const copied = await cli(['copy', '--from', 'local', '--to', remote, '--missing', 'shop']);
      assert.equal(copied.code, 0, `${remote}: ${copied.stderr}`);
      assert.deepEqual((await ids(remote)).sort(), [first, middle, newest].sort(), `${remote} holds all three after the copy`);
      const status = await cli(['status', '--storage', remote, '--json']);
      assert.equal(status.code, 0, `${remote}: ${status.stderr}${status.stdout}`);
      assert.match(status.stdout, new RegExp(newest.replace(/[.]/g, '\\.')), `${remote}: status names the newest backup`);
      // keepLast 1 keeps the newest, and prune always keeps the newest verified one (the first, drilled above).
      const pruned = await cli(['prune', '--storage', remote, '--keep-last', '1', '--yes']);
      assert.equal(pruned.code, 0, `${remote}: ${pruned.stderr}`);
      assert.deepEqual((await ids(remote)).sort(), [first, newest].sort(), `${remote}: prune removed the middle one only`);
    }
  });

  it('a damaged local artifact copied to each remote fails (exit 7) and leaves nothing there', async () => {
    const made = await cli(['backup', 'shop', '--storage', 'local', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const bad = JSON.parse(made.stdout) as { id: string; manifest: { artifacts: { file: string }[] } };
    const artifact = path.join(seriesDir(path.join(root, 'local'), 'shop'), bad.manifest.artifacts[0].file);
    const bytes = readFileSync(artifact);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(artifact, bytes);
    for (const remote of REMOTES) {
      const copied = await cli(['copy', bad.id, '--from', 'local', '--to', remote]);
      assert.equal(copied.code, 7, `${remote}: ${copied.stderr}`);
      assert.match(copied.stderr, /does not match its manifest/, remote);
      assert.ok(!(await ids(remote)).includes(bad.id), `${remote} does not list the damaged backup`);
    }
    // Azure (the artifact drawn into its block buffers): no blob and no uncommitted block of it.
    const left: string[] = [];
    for await (const b of azurite.container('stash').listBlobsFlat({ prefix: 'dbstash/', includeUncommitedBlobs: true })) {
      if (b.name.includes(bad.id)) left.push(b.name);
    }
    assert.deepEqual(left, []);
    rmSync(artifact);
    rmSync(path.join(path.dirname(artifact), `${bad.id}.manifest.json`));
  });

  it('an optional destination that fails: a degraded backup (exit 12), every other copy intact and verified', async () => {
    const res = await cli(['backup', 'shop', '--storage', 'local', '--storage', 'azure', '--storage', 'sftp', '--storage', 'sftp-down', '--json']);
    assert.equal(res.code, 12, res.stderr);
    const out = JSON.parse(res.stdout) as { id: string; stored: string[]; degraded: boolean };
    assert.equal(out.degraded, true);
    assert.deepEqual([...out.stored].sort(), ['azure', 'local', 'sftp']);
    assert.match(res.stderr, /optional destination sftp-down failed/);
    for (const remote of ['azure', 'sftp']) {
      const drill = await cli(['verify', out.id, '--storage', remote, '--json']);
      assert.equal(drill.code, 0, `${remote}: ${drill.stderr}`);
    }
  });
});
