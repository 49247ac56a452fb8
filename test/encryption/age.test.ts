// The age stage against the standard `age` CLI (both directions), and encrypted backups through
// the CLI: verify and restore with the right identity or passphrase, and a wrong key or
// passphrase failing with exit 10 before anything is written to the restore target.

import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Database from 'better-sqlite3';
import { DecryptError, IntegrityError } from '../../src/core/errors.js';
import { ageStage } from '../../src/pipeline/age.js';
import { readAll } from '../../src/storage/storage.js';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb } from '../s3/helpers.js';

let dir: string;
let db: string;
let keyFile: string;
let recipient: string;
let otherKeyFile: string;

function ageKeygen(file: string): string {
  execFileSync('age-keygen', ['-o', file], { stdio: 'pipe' });
  return execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim();
}

/** age reads passphrases only from a terminal: script(1) gives it one, fed with `input`. */
function ageOnTerminal(command: string, input: string): void {
  execFileSync('script', ['-qec', command, '/dev/null'], { input, stdio: ['pipe', 'ignore', 'pipe'], timeout: 30_000 });
}

function identityOf(file: string): string {
  return readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!;
}

async function decode(stage: ReturnType<typeof ageStage>, bytes: Buffer, chunk = 7919): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) pieces.push(bytes.subarray(i, i + chunk));
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces), stage.decode(), async (source: AsyncIterable<Buffer>) => {
    for await (const c of source) out.push(c);
  });
  return Buffer.concat(out);
}

async function encode(stage: ReturnType<typeof ageStage>, bytes: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([bytes]), stage.encode(), async (source: AsyncIterable<Buffer>) => {
    for await (const c of source) out.push(c);
  });
  return Buffer.concat(out);
}

before(() => {
  dir = tempDir('dbstash-age');
  db = makeSqliteDb(dir, 'shop', 2);
  keyFile = path.join(dir, 'key.txt');
  recipient = ageKeygen(keyFile);
  otherKeyFile = path.join(dir, 'other.txt');
  ageKeygen(otherKeyFile);
});

describe('age stage and the age CLI', () => {
  const sizes = [0, 1, 65535, 65536, 65537, 3 * 65536, 1_000_003];

  it('our output decrypts with `age -d -i KEY`, byte-exact, at every chunk boundary', async () => {
    const stage = ageStage({ recipients: [recipient] });
    for (const size of sizes) {
      const plain = randomBytes(size);
      const file = path.join(dir, `ours-${size}.age`);
      writeFileSync(file, await encode(stage, plain));
      const out = execFileSync('age', ['-d', '-i', keyFile, file], { maxBuffer: 1 << 26 });
      assert.ok(out.equals(plain), `size ${size}`);
    }
  });

  it('our output for two recipients opens with either key, in `age -d` and in the age-encryption package', async () => {
    const otherRecipient = execFileSync('age-keygen', ['-y', otherKeyFile], { encoding: 'utf8' }).trim();
    const plain = randomBytes(200_000);
    const sealed = await encode(ageStage({ recipients: [recipient, otherRecipient] }), plain);
    const file = path.join(dir, 'ours-two.age');
    writeFileSync(file, sealed);
    for (const key of [keyFile, otherKeyFile]) {
      assert.ok(execFileSync('age', ['-d', '-i', key, file], { maxBuffer: 1 << 26 }).equals(plain), key);
    }
    const { Decrypter } = await import('age-encryption');
    const decrypter = new Decrypter();
    decrypter.addIdentity(identityOf(otherKeyFile));
    assert.ok(Buffer.from(await decrypter.decrypt(sealed)).equals(plain));
    // Each backup gets its own file key and ephemeral shares: two encryptions never share a header.
    const again = await encode(ageStage({ recipients: [recipient, otherRecipient] }), plain);
    assert.notDeepEqual(again.subarray(0, 200), sealed.subarray(0, 200));
  });

  it('files made by `age -r` (two recipients) decrypt with our decoder, byte-exact', async () => {
    const stage = ageStage({ recipients: [recipient] }, { identities: [identityOf(keyFile)] });
    const other = execFileSync('age-keygen', ['-y', otherKeyFile], { encoding: 'utf8' }).trim();
    for (const size of sizes) {
      const plain = randomBytes(size);
      const input = path.join(dir, `plain-${size}`);
      writeFileSync(input, plain);
      const theirs = execFileSync('age', ['-r', other, '-r', recipient, input], { maxBuffer: 1 << 26 });
      assert.ok((await decode(stage, theirs)).equals(plain), `size ${size}`);
    }
  });

  it('a wrong identity is a DecryptError; damage and truncation are IntegrityErrors', async () => {
    const plain = randomBytes(200_000);
    const sealed = execFileSync('age', ['-r', recipient], { input: plain, maxBuffer: 1 << 26 });
    const wrong = ageStage({ recipients: [recipient] }, { identities: [identityOf(otherKeyFile)] });
    await assert.rejects(decode(wrong, sealed), (err: unknown) => err instanceof DecryptError && /none of the given identities/.test(err.message));
    const none = ageStage({ recipients: [recipient] }, {});
    await assert.rejects(decode(none, sealed), (err: unknown) => err instanceof DecryptError && err.hint!.includes('--identity'));

    const right = ageStage({ recipients: [recipient] }, { identities: [identityOf(keyFile)] });
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 70_000] ^= 1;
    await assert.rejects(decode(right, flipped), (err: unknown) => err instanceof IntegrityError && /does not authenticate/.test(err.message));
    const headerLength = sealed.indexOf('\n--- ') + 1 + sealed.subarray(sealed.indexOf('\n--- ') + 1).indexOf('\n') + 1;
    // Cut exactly after the first full chunk: only the last-chunk flag can tell.
    const cut = sealed.subarray(0, headerLength + 16 + 65536 + 16);
    await assert.rejects(decode(right, cut), (err: unknown) => err instanceof IntegrityError && /truncated/.test(err.message));
    const tamperedHeader = Buffer.from(sealed);
    tamperedHeader[headerLength - 5] ^= 1;
    await assert.rejects(decode(right, tamperedHeader), (err: unknown) => err instanceof IntegrityError || err instanceof DecryptError);
  });

  it('passphrase (scrypt) files interoperate with `age -p` / `age -d` both ways; a wrong passphrase is a DecryptError', async () => {
    const passphrase = 'correct horse battery staple';
    const plain = randomBytes(100_000);
    const input = path.join(dir, 'pass-plain');
    writeFileSync(input, plain);
    const ours = path.join(dir, 'ours-pass.age');
    writeFileSync(ours, await encode(ageStage({ scrypt: true }, { passphrase }), plain));
    assert.ok(readFileSync(ours).subarray(0, 200).toString('latin1').includes('-> scrypt '));
    const fromAge = path.join(dir, 'age-decrypted');
    ageOnTerminal(`age -d -o '${fromAge}' '${ours}'`, `${passphrase}\n`);
    assert.ok(readFileSync(fromAge).equals(plain), 'age -d reads our passphrase file');

    const theirs = path.join(dir, 'theirs-pass.age');
    ageOnTerminal(`age -p -o '${theirs}' '${input}'`, `${passphrase}\n${passphrase}\n`);
    const sealed = readFileSync(theirs);
    assert.ok((await decode(ageStage({ scrypt: true }, { passphrase }), sealed)).equals(plain), 'we read age -p output');
    await assert.rejects(decode(ageStage({ scrypt: true }, { passphrase: 'wrong' }), sealed), DecryptError);
  });
});

describe('encrypted backups through the CLI', () => {
  let id: string;
  let stash: string;

  it('backup --recipient: the artifact opens with `age -d | zstd -d`, the manifest holds only public keys', async () => {
    stash = path.join(dir, 'stash');
    const res = await runCli(['backup', db, '--output-dir', stash, '--recipient', recipient, '--json'], { cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    id = out.id;
    const main = out.manifest.artifacts[0];
    assert.match(main.file, /\.sqlite\.zst\.age$/);
    assert.deepEqual(main.stages.map((s: { id: string }) => s.id), ['zstd', 'age']);
    assert.deepEqual(main.stages[1].params, { recipients: [recipient] });
    const manifestText = readFileSync(path.join(stash, out.manifest.series.key, `${id}.manifest.json`), 'utf8');
    assert.doesNotMatch(manifestText, /AGE-SECRET-KEY/);
    const artifact = path.join(stash, out.manifest.series.key, main.file);
    const restored = path.join(dir, 'by-hand.db');
    execFileSync('bash', ['-c', `age -d -i "${keyFile}" "${artifact}" | zstd -dc > "${restored}"`]);
    const copy = new Database(restored, { readonly: true });
    assert.equal((copy.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n, 100);
    copy.close();
  });

  it('verify and restore with --identity succeed; a wrong identity exits 10 and writes nothing', async () => {
    const ok = await runCli(['verify', id, '--output-dir', stash, '--identity', keyFile], { cwd: dir });
    assert.equal(ok.code, 0, ok.stderr);

    const wrong = await runCli(['verify', id, '--output-dir', stash, '--identity', otherKeyFile], { cwd: dir });
    assert.equal(wrong.code, 10, wrong.stderr);
    assert.match(wrong.stderr, /^error: .*none of the given identities or passphrases can decrypt/m);
    assert.match(wrong.stderr, /^hint: /m);

    const missing = await runCli(['verify', id, '--output-dir', stash], { cwd: dir });
    assert.equal(missing.code, 10, missing.stderr);
    assert.match(missing.stderr, /no identity or passphrase was given/);

    const target = path.join(dir, 'restored-wrong.db');
    const refused = await runCli(['restore', id, '--output-dir', stash, '--to', target, '--yes', '--identity', otherKeyFile], { cwd: dir });
    assert.equal(refused.code, 10, refused.stderr);
    assert.ok(!existsSync(target), 'nothing was written to the restore target');

    const good = path.join(dir, 'restored.db');
    const restored = await runCli(['restore', id, '--output-dir', stash, '--to', good, '--yes', '--identity', keyFile], { cwd: dir });
    assert.equal(restored.code, 0, restored.stderr);
    const copy = new Database(good, { readonly: true });
    assert.equal((copy.prepare('SELECT count(*) AS n FROM blobs').get() as { n: number }).n, 2);
    copy.close();
  });

  it('DBSTASH_PASSPHRASE encrypts with scrypt; --passphrase-file decrypts; a wrong one exits 10', async () => {
    const passStash = path.join(dir, 'pass-stash');
    const res = await runCli(['backup', db, '--output-dir', passStash, '--json'], { cwd: dir, env: { DBSTASH_PASSPHRASE: 'tr0ub4dor&3-long-enough' } });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.deepEqual(out.manifest.artifacts[0].stages[1], { id: 'age', params: { scrypt: true } });
    assert.doesNotMatch(JSON.stringify(out.manifest), /tr0ub4dor/);
    const right = path.join(dir, 'pass.txt');
    writeFileSync(right, 'tr0ub4dor&3-long-enough\n');
    // A passphrase file others can read is refused, as ssh refuses such keys; 0600 is accepted.
    const open = await runCli(['verify', out.id, '--output-dir', passStash, '--passphrase-file', right], { cwd: dir, env: { DBSTASH_PASSPHRASE: undefined } });
    assert.equal(open.code, 2, open.stderr);
    assert.match(open.stderr, /--passphrase-file: \S+pass\.txt can be read or written by other users \(mode 0644\); a secret must be private: chmod 600 /);
    chmodSync(right, 0o600);
    const wrong = path.join(dir, 'wrong-pass.txt');
    writeFileSync(wrong, 'not it\n', { mode: 0o600 });
    const ok = await runCli(['verify', out.id, '--output-dir', passStash, '--passphrase-file', right], { cwd: dir, env: { DBSTASH_PASSPHRASE: undefined } });
    assert.equal(ok.code, 0, ok.stderr);
    const bad = await runCli(['verify', out.id, '--output-dir', passStash, '--passphrase-file', wrong], { cwd: dir, env: { DBSTASH_PASSPHRASE: undefined } });
    assert.equal(bad.code, 10, bad.stderr);
  });

  it('a malformed recipient is a usage error naming it', async () => {
    const res = await runCli(['backup', db, '--output-dir', path.join(dir, 'x'), '--recipient', 'age1notakey'], { cwd: dir });
    assert.equal(res.code, 2, res.stderr);
    assert.match(res.stderr, /--recipient: "age1notakey" is not an age X25519 recipient/);
    // The right length and alphabet, one character mistyped: the bech32 checksum catches it.
    const typo = recipient.slice(0, -1) + (recipient.endsWith('q') ? 'p' : 'q');
    const typoRes = await runCli(['backup', db, '--output-dir', path.join(dir, 'x'), '--recipient', typo], { cwd: dir });
    assert.equal(typoRes.code, 2, typoRes.stderr);
    assert.match(typoRes.stderr, /is not an age X25519 recipient/);
    assert.equal(existsSync(path.join(dir, 'x')), false);
  });
});

