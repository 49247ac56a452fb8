// Signed manifests through the CLI: keygen, backup --signing-key, and verify/restore with
// --verify-key catching a tampered manifest, a swapped backup, a signature by another key and
// an unsigned backup (accepted only with --allow-unsigned).

import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb } from '../s3/helpers.js';
import { seriesDir } from '../harness/stash.js';

let dir: string;
let db: string;
let key: string;
let keyId: string;
let otherKey: string;

async function backup(stash: string, ...extra: string[]): Promise<{ id: string; manifest: { database: { name: string }; artifacts: { file: string }[]; extra: Record<string, unknown> } }> {
  const res = await runCli(['backup', db, '--output-dir', stash, '--json', ...extra], { cwd: dir });
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout);
}

const manifestPath = (stash: string, id: string) => path.join(seriesDir(stash, 'shop'), `${id}.manifest.json`);

before(async () => {
  dir = tempDir('dbstash-sign');
  db = makeSqliteDb(dir, 'shop', 1);
  key = path.join(dir, 'signing.key');
  const res = await runCli(['keygen', '--out', key, '--json'], { cwd: dir });
  assert.equal(res.code, 0, res.stderr);
  keyId = JSON.parse(res.stdout).keyId;
  otherKey = path.join(dir, 'other.key');
  assert.equal((await runCli(['keygen', '--out', otherKey], { cwd: dir })).code, 0);
});

describe('dbstash keygen', () => {
  it('writes a 0600 private key and its public key, and never replaces a key', async () => {
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.match(readFileSync(key, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.match(readFileSync(`${key}.pub`, 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
    assert.match(keyId, /^[0-9a-f]{16}$/);
    const before = readFileSync(key);
    const again = await runCli(['keygen', '--out', key], { cwd: dir });
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists/);
    assert.ok(readFileSync(key).equals(before));
    const dry = await runCli(['keygen', '--out', path.join(dir, 'dry.key'), '--dry-run'], { cwd: dir });
    assert.equal(dry.code, 0, dry.stderr);
    assert.ok(!existsSync(path.join(dir, 'dry.key')), '--dry-run writes nothing');
  });

  it('--age writes an age identity the age CLI accepts', async () => {
    const file = path.join(dir, 'age.key');
    const res = await runCli(['keygen', '--age', '--out', file, '--json'], { cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const { recipient } = JSON.parse(res.stdout);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const { execFileSync } = await import('node:child_process');
    assert.equal(execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim(), recipient);
  });
});

describe('signed manifests', () => {
  it('a signed backup verifies with the public key; the signature sits beside the manifest', async () => {
    const stash = path.join(dir, 'signed');
    const out = await backup(stash, '--signing-key', key);
    assert.deepEqual(out.manifest.extra.signing, { algorithm: 'ed25519', keyId });
    assert.ok(existsSync(path.join(seriesDir(stash, 'shop'), `${out.id}.manifest.sig`)));
    const res = await runCli(['verify', out.id, '--output-dir', stash, '--verify-key', `${key}.pub`], { cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const list = await runCli(['list', '--output-dir', stash, '--json'], { cwd: dir });
    assert.deepEqual(JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id), [out.id], 'the signature is not mistaken for a backup');
  });

  it('a tampered manifest fails verify and restore (exit 7); the restore target is not touched', async () => {
    const stash = path.join(dir, 'tampered');
    const out = await backup(stash, '--signing-key', key);
    const file = manifestPath(stash, out.id);
    const manifest = JSON.parse(readFileSync(file, 'utf8'));
    manifest.tables[0].rows += 1;
    writeFileSync(file, JSON.stringify(manifest, null, 2) + '\n');
    const res = await runCli(['verify', out.id, '--output-dir', stash, '--verify-key', `${key}.pub`], { cwd: dir });
    assert.equal(res.code, 7, res.stderr);
    assert.match(res.stderr, /^error: the manifest of .* does not match its signature/m);
    const target = path.join(dir, 'tampered-target.db');
    const restore = await runCli(['restore', out.id, '--output-dir', stash, '--to', target, '--yes', '--verify-key', `${key}.pub`], { cwd: dir });
    assert.equal(restore.code, 7, restore.stderr);
    assert.ok(!existsSync(target));
  });

  it('a swapped backup fails: another backup\'s artifact under a rewritten manifest, or its manifest and signature renamed', async () => {
    const stash = path.join(dir, 'swapped');
    const a = await backup(stash, '--signing-key', key);
    const handle = new Database(db);
    handle.prepare('INSERT INTO notes (body) VALUES (?)').run('written between the two backups');
    handle.close();
    const b = await backup(stash, '--signing-key', key);
    assert.notEqual(readFileSync(manifestPath(stash, a.id), 'utf8'), readFileSync(manifestPath(stash, b.id), 'utf8'));
    const folder = seriesDir(stash, 'shop');
    // 1. B's artifact in A's place, A's manifest rewritten to B's size and hash.
    copyFileSync(path.join(folder, b.manifest.artifacts[0].file), path.join(folder, a.manifest.artifacts[0].file));
    const forged = JSON.parse(readFileSync(manifestPath(stash, a.id), 'utf8'));
    const bManifest = JSON.parse(readFileSync(manifestPath(stash, b.id), 'utf8'));
    forged.artifacts[0].size = bManifest.artifacts[0].size;
    forged.artifacts[0].sha256 = bManifest.artifacts[0].sha256;
    writeFileSync(manifestPath(stash, a.id), JSON.stringify(forged, null, 2) + '\n');
    const first = await runCli(['verify', a.id, '--output-dir', stash, '--verify-key', `${key}.pub`], { cwd: dir });
    assert.equal(first.code, 7, first.stderr);
    assert.match(first.stderr, /does not match its signature/);
    // 2. B's manifest and its valid signature under A's names.
    copyFileSync(manifestPath(stash, b.id), manifestPath(stash, a.id));
    copyFileSync(path.join(folder, `${b.id}.manifest.sig`), path.join(folder, `${a.id}.manifest.sig`));
    const second = await runCli(['verify', a.id, '--output-dir', stash, '--verify-key', `${key}.pub`], { cwd: dir });
    assert.equal(second.code, 7, second.stderr);
    assert.match(second.stderr, /describes another backup/);
  });

  it('a backup signed by another key is refused, naming both key ids', async () => {
    const stash = path.join(dir, 'otherkey');
    const out = await backup(stash, '--signing-key', otherKey);
    const res = await runCli(['verify', out.id, '--output-dir', stash, '--verify-key', `${key}.pub`], { cwd: dir });
    assert.equal(res.code, 7, res.stderr);
    assert.match(res.stderr, new RegExp(`signed by key [0-9a-f]{16}, not by the configured verify key ${keyId}`));
  });

  it('an unsigned backup is reported when a key is configured; --allow-unsigned accepts it', async () => {
    const stash = path.join(dir, 'unsigned');
    const out = await backup(stash);
    const config = path.join(dir, 'signing.yaml');
    writeFileSync(config, `signing:\n  publicKeyFile: ${key}.pub\n`);
    const res = await runCli(['verify', out.id, '--output-dir', stash, '--config', config], { cwd: dir });
    assert.equal(res.code, 7, res.stderr);
    assert.match(res.stderr, /is not signed, but a verify key is configured/);
    assert.match(res.stderr, /hint: .*--allow-unsigned/);
    const allowed = await runCli(['verify', out.id, '--output-dir', stash, '--config', config, '--allow-unsigned'], { cwd: dir });
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stderr, /is unsigned \(accepted: --allow-unsigned\)/);
  });
});
