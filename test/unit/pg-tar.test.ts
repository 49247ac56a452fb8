/**
 * The ustar writer/reader behind `backup --jobs N` (pg_dump directory format in one stream),
 * checked byte for byte against GNU tar in both directions, plus the damage it must refuse.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { BackupError, IntegrityError } from '../../src/core/errors.js';
import { renameEntry } from '../../src/engines/postgres/base-stream.js';
import { packDirectory, tarHeader, unpackTar } from '../../src/engines/postgres/tar.js';
import { tempDir } from '../harness/tmp.js';

function sampleDirectory(): string {
  const dir = tempDir('dbstash-tar-src');
  writeFileSync(path.join(dir, 'toc.dat'), 'toc');
  writeFileSync(path.join(dir, 'empty.dat'), '');
  writeFileSync(path.join(dir, 'block.dat'), Buffer.alloc(512, 0xab));
  writeFileSync(path.join(dir, 'every-byte.dat'), Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
  const big = Buffer.alloc(3 * 1024 * 1024 + 7);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
  writeFileSync(path.join(dir, '3001.dat'), big);
  writeFileSync(path.join(dir, `${'n'.repeat(99)}`), 'long name');
  return dir;
}

function assertSameFiles(a: string, b: string): void {
  const names = readdirSync(a).sort();
  assert.deepEqual(readdirSync(b).sort(), names);
  for (const n of names) assert.ok(readFileSync(path.join(a, n)).equals(readFileSync(path.join(b, n))), `${n} is byte-identical`);
}

test('GNU tar extracts what packDirectory writes, byte for byte', async () => {
  const src = sampleDirectory();
  const archive = path.join(tempDir('dbstash-tar-out'), 'x.tar');
  await pipeline(packDirectory(src), createWriteStream(archive));
  const out = tempDir('dbstash-tar-gnu');
  execFileSync('tar', ['-x', '-f', archive, '-C', out]);
  assertSameFiles(src, out);
  const listing = execFileSync('tar', ['-t', '-v', '-f', archive], { encoding: 'utf8' });
  assert.match(listing, /3145735 .* 3001\.dat/);
});

test('unpackTar reads what GNU tar writes (ustar), byte for byte', async () => {
  const src = sampleDirectory();
  const archive = path.join(tempDir('dbstash-tar-gnu-out'), 'gnu.tar');
  execFileSync('tar', ['--format=ustar', '-c', '-f', archive, '-C', src, ...readdirSync(src)]);
  const out = tempDir('dbstash-tar-ours');
  const result = await unpackTar(createReadStream(archive), out);
  assert.equal(result.files, readdirSync(src).length);
  assertSameFiles(src, out);
});

test('sizes of 8 GiB and more use the base-256 field GNU tar reads', () => {
  const header = tarHeader('huge.dat', 9 * 1024 ** 3, 0);
  assert.equal(header[124], 0x80);
  assert.equal(header.readBigUInt64BE(128), 9n * 1024n ** 3n);
  // GNU tar accepts the header (its size makes the archive "unexpectedly" end, which it says).
  const file = path.join(tempDir('dbstash-tar-huge'), 'h.tar');
  writeFileSync(file, header);
  let listing = '';
  try {
    execFileSync('tar', ['-t', '-v', '-f', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    listing = String((err as { stdout: string }).stdout);
  }
  assert.match(listing, /9663676416 .* huge\.dat/);
});

test('a truncated archive, a damaged header and a path outside the directory are refused', async () => {
  const src = sampleDirectory();
  const archive = path.join(tempDir('dbstash-tar-bad'), 'x.tar');
  await pipeline(packDirectory(src), createWriteStream(archive));
  const bytes = readFileSync(archive);

  const cut = tempDir('dbstash-tar-cut');
  await assert.rejects(unpackTar(Readable.from([bytes.subarray(0, bytes.length - 2048)]), cut), (e: Error) => e instanceof IntegrityError && /truncated/.test(e.message));

  const flipped = Buffer.from(bytes);
  flipped[10] ^= 0x01;
  await assert.rejects(unpackTar(Readable.from([flipped]), tempDir('dbstash-tar-flip')), (e: Error) => e instanceof IntegrityError && /checksum mismatch/.test(e.message));

  const evil = Buffer.concat([tarHeader('../escape.dat', 1, 0), Buffer.alloc(512), Buffer.alloc(1024)]);
  const target = tempDir('dbstash-tar-evil');
  mkdirSync(path.join(target, 'inside'));
  await assert.rejects(unpackTar(Readable.from([evil]), path.join(target, 'inside')), (e: Error) => e instanceof IntegrityError && /not a plain file name/.test(e.message));
  assert.deepEqual(readdirSync(target), ['inside']);
});

test('renameEntry moves an entry under pg_tblspc/<oid>/, into the ustar prefix field when the name outgrows 100 bytes; GNU tar reads both', () => {
  const dir = tempDir('dbstash-tar-rename');
  const long = `PG_15_202209061/16384/${'f'.repeat(70)}`;
  const entries: [string, string][] = [
    ['PG_15_202209061/16384/16385', 'short'],
    [long, 'long'],
  ];
  const parts: Buffer[] = [];
  for (const [name, body] of entries) {
    const header = tarHeader(name, body.length, 1_700_000_000);
    renameEntry(header, 'pg_tblspc/16390/');
    parts.push(header, Buffer.from(body), Buffer.alloc(512 - body.length));
  }
  parts.push(Buffer.alloc(1024));
  const archive = path.join(dir, 'x.tar');
  writeFileSync(archive, Buffer.concat(parts));
  assert.ok(`pg_tblspc/16390/${long}`.length > 100, 'the long one needs the prefix field');
  assert.deepEqual(execFileSync('tar', ['-t', '-f', archive], { encoding: 'utf8' }).trim().split('\n'), entries.map(([n]) => `pg_tblspc/16390/${n}`));
  const out = path.join(dir, 'out');
  mkdirSync(out);
  execFileSync('tar', ['-x', '-f', archive, '-C', out]);
  for (const [name, body] of entries) assert.equal(readFileSync(path.join(out, 'pg_tblspc/16390', name), 'utf8'), body);
  // 200 bytes cut at their one slash, 100 and 99: it fits. A directory name longer than the
  // prefix field (155) leaves no place to cut.
  const fits = tarHeader('x'.repeat(99), 0, 0);
  renameEntry(fits, `pg_tblspc/${'9'.repeat(90)}/`);
  assert.equal(fits.toString('latin1', 345, 500).replace(/\0.*$/s, ''), `pg_tblspc/${'9'.repeat(90)}`);
  assert.throws(() => renameEntry(tarHeader('x'.repeat(99), 0, 0), `${'p'.repeat(160)}/`), BackupError);
});
