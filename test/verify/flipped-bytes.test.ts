// One flipped byte in a stored artifact, at many places: verify must report only what it knows.
// The SHA-256 of the whole artifact differs (always known); a stage may add where it noticed the
// damage, but a byte range it names must hold the flipped byte. A zstd decoder notices damage
// where the data stops making sense — often only at the frame's checksum, at the very end — so it
// names no range; an age chunk authenticates exactly its own bytes, so it can. Real backups
// (SQLite, through the CLI), zstd alone and zstd + age to an X25519 recipient, read back through
// the file storage in its real chunks, both as a stream and drawn (as a restore's feed reads it).

import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { backupId, expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { seriesDir } from '../harness/stash.js';
import { DbstashError, IntegrityError } from '../../src/core/errors.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { createLocalStorage } from '../../src/storage/local.js';
import { openArtifact } from '../../src/verify/read.js';
import { readAll } from '../../src/storage/storage.js';
import { canDraw } from '../../src/storage/drawable.js';
import '../../src/pipeline/compress.js';
import '../../src/pipeline/age.js';

let work: string;
let keyFile: string;
let identity: string;

interface Subject {
  stash: string;
  id: string;
  manifest: Manifest;
  artifact: string;
  original: Buffer;
}

const subjects: Record<'zstd' | 'age', Subject> = {} as never;

/** Every "bytes A-B" a message claims, as [A, B] (inclusive). */
function claimedRanges(message: string): [number, number][] {
  return [...message.matchAll(/bytes (\d+)-(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

/** The report of a flip at `at`: the artifact's checksum differs, and every range it names holds `at`. */
function assertTrueReport(message: string, at: number): void {
  assert.match(message, /^checksum mismatch: \S+ has sha256 [0-9a-f]{64}, manifest says [0-9a-f]{64}/, message);
  assert.doesNotMatch(message, /within bytes|at byte \d/, message);
  for (const [from, to] of claimedRanges(message)) {
    assert.ok(from <= at && at <= to, `a flip at byte ${at} reported in bytes ${from}-${to}: ${message}`);
  }
}

/** Length of the age header (through the MAC line), as the format defines it. */
function ageHeaderLength(bytes: Buffer): number {
  const mac = bytes.indexOf('\n--- ');
  return bytes.indexOf(0x0a, mac + 5) + 1;
}

/** Places to flip: both ends, the insides of the first chunks a file read yields, and the middle. */
function positions(size: number, extra: number[] = []): number[] {
  const at = [0, 4, 6, 12, 40, 1000, 65_535, 65_536, 70_000, 200_000, Math.floor(size / 2), size - 300, size - 20, size - 4, size - 1, ...extra];
  return [...new Set(at.filter((p) => p >= 0 && p < size))].sort((a, b) => a - b);
}

function flipped(original: Buffer, at: number): Buffer {
  const bytes = Buffer.from(original);
  bytes[at] ^= 0x01;
  return bytes;
}

async function readBack(subject: Subject, bytes: Buffer, how: 'stream' | 'draw'): Promise<Error> {
  writeFileSync(subject.artifact, bytes);
  const storage = createLocalStorage({ root: subject.stash });
  const main = subject.manifest.artifacts.find((a) => a.role === 'main')!;
  try {
    const raw = await openArtifact(storage, subject.manifest, main, { identities: [identity] });
    if (how === 'stream') await readAll(raw);
    else {
      assert.ok(canDraw(raw), 'a zstd artifact can be drawn');
      const into = Buffer.allocUnsafe(1 << 20);
      while ((await raw.draw(into, 0, into.length)) > 0);
      raw.destroy();
    }
  } catch (err) {
    return err as Error;
  } finally {
    writeFileSync(subject.artifact, subject.original);
  }
  assert.fail('a flipped byte went unnoticed');
}

before(async () => {
  work = tempDir('dbstash-flipped');
  const file = path.join(work, 'notes.db');
  const db = new Database(file);
  db.exec('CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)');
  const insert = db.prepare('INSERT INTO note (body) VALUES (?)');
  // Text that compresses but not to nothing: a few MB dumped, ~1 MB stored, many zstd blocks.
  db.transaction(() => {
    for (let i = 0; i < 60_000; i++) insert.run(`note ${i} for customer ${(i * 7919) % 10007}: ${((i * 2654435761) >>> 0).toString(36)}`);
  })();
  db.close();
  keyFile = path.join(work, 'age.key');
  expectExit(await runCli(['keygen', '--age', '--out', keyFile]), 0);
  identity = readFileSync(keyFile, 'utf8').split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!;
  const recipient = (await import('age-encryption')).identityToRecipient(identity);
  for (const [kind, extra] of [['zstd', []], ['age', ['--recipient', await recipient]]] as const) {
    const stash = path.join(work, `stash-${kind}`);
    const id = await backupId(file, stash, ...extra);
    const dir = seriesDir(stash, 'notes');
    const manifest = JSON.parse(readFileSync(path.join(dir, `${id}.manifest.json`), 'utf8')) as Manifest;
    const artifact = path.join(dir, manifest.artifacts.find((a) => a.role === 'main')!.file);
    subjects[kind] = { stash, id, manifest, artifact, original: readFileSync(artifact) };
  }
  assert.ok(subjects.zstd.original.length > 400_000, `the artifact spans many reads: ${subjects.zstd.original.length} bytes`);
});

describe('one flipped byte', () => {
  test('in a zstd artifact: the checksum differs, and no place is claimed that does not hold the flip', async () => {
    const { original } = subjects.zstd;
    for (const how of ['stream', 'draw'] as const) {
      for (const at of positions(original.length)) {
        const err = await readBack(subjects.zstd, flipped(original, at), how);
        assert.ok(err instanceof IntegrityError, `${how}, flip at ${at}: ${String(err)}`);
        assertTrueReport(err.message, at);
      }
    }
  });

  test('in a zstd + age artifact: an integrity failure (never "wrong key"), with ranges that hold the flip', async () => {
    const { original } = subjects.age;
    const header = ageHeaderLength(original);
    const chunk0 = header + 16;
    const inHeader = [20, 45, 60, header - 30, header - 2];
    const nonceAndChunks = [header, header + 8, chunk0, chunk0 + 65_551, chunk0 + 65_552, chunk0 + 3 * 65_552 + 17];
    for (const how of ['stream', 'draw'] as const) {
      const seen = new Set<string>();
      for (const at of positions(original.length, [...inHeader, ...nonceAndChunks])) {
        const err = await readBack(subjects.age, flipped(original, at), how);
        assert.ok(err instanceof IntegrityError, `${how}, flip at ${at}: ${(err as DbstashError).name}: ${err.message}`);
        assertTrueReport(err.message, at);
        if (claimedRanges(err.message).length > 0) seen.add(/decoding failed: (age payload chunk|the age header)/.exec(err.message)?.[1] ?? 'other');
      }
      // The age stage does name places: the header, and the chunk that failed.
      assert.deepEqual([...seen].sort(), ['age payload chunk', 'the age header'], how);
    }
  });

  test('through `dbstash verify`: exit 7, a failed record, and the same true report', async () => {
    for (const kind of ['zstd', 'age'] as const) {
      const subject = subjects[kind];
      const copy = tempDir(`dbstash-flipped-${kind}`);
      cpSync(subject.stash, copy, { recursive: true });
      const file = path.join(seriesDir(copy, 'notes'), path.basename(subject.artifact));
      for (const at of [30, Math.floor(subject.original.length / 3), subject.original.length - 10]) {
        writeFileSync(file, flipped(subject.original, at));
        const r = await runCli(['verify', subject.id, '--output-dir', copy, '--identity', keyFile]);
        expectExit(r, 7);
        const error = /^error: (.*)$/m.exec(r.stderr)?.[1] ?? '';
        assertTrueReport(error, at);
        const records = readdirSync(path.dirname(file)).filter((f) => f.startsWith(`${subject.id}.verify-`));
        const last = JSON.parse(readFileSync(path.join(path.dirname(file), records.sort().at(-1)!), 'utf8'));
        assert.equal(last.result, 'failed');
        assert.equal(last.error, error);
        for (const f of records) rmSync(path.join(path.dirname(file), f));
      }
    }
  });
});
