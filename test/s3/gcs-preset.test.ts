/**
 * The `gcs` preset of the S3 driver: Google Cloud Storage's XML API ignores If-None-Match on
 * writes, so an exclusive put must carry x-goog-if-generation-match: 0 instead, and GCS's 412
 * must read as "exists". Checked against a loopback HTTP server that records what the driver
 * sends and answers as GCS does (there is no GCS emulator for the XML API here).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, it } from 'node:test';
import { StorageError } from '../../src/core/errors.js';
import { openStorage } from '../../src/storage/index.js';

const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
const stored = new Map<string, number>();
const server = createServer((req, res) => {
  let size = 0;
  req.on('data', (c: Buffer) => (size += c.length));
  req.on('end', () => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    const key = req.url!.split('?')[0];
    if (req.method === 'PUT') {
      // GCS: a write with x-goog-if-generation-match: 0 fails when a live version exists.
      if (req.headers['x-goog-if-generation-match'] === '0' && stored.has(key)) {
        res.writeHead(412, { 'content-type': 'application/xml' });
        return res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold.</Message></Error>');
      }
      stored.set(key, size);
      res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"' });
      return res.end();
    }
    if (req.method === 'HEAD' && stored.has(key)) {
      res.writeHead(200, { 'content-length': String(stored.get(key)), etag: '"0123456789abcdef0123456789abcdef"', 'last-modified': new Date().toUTCString() });
      return res.end();
    }
    res.writeHead(404, { 'content-type': 'application/xml' });
    res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>No such object.</Message></Error>');
  });
});
let endpoint: string;

before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

it('gcs preset: an exclusive put sends x-goog-if-generation-match: 0 (not If-None-Match), and a second one is refused as "exists"', async () => {
  const storage = await openStorage('s3://backups/dbstash', { preset: 'gcs', endpoint, accessKeyId: 'GOOG1EXAMPLE', secretAccessKey: 'hmac-secret-for-the-test', maxAttempts: 1 });
  await storage.put('db/lock', Buffer.from('mine'), { exclusive: true });
  const first = seen.filter((r) => r.method === 'PUT').at(-1)!;
  assert.equal(first.url.split('?')[0], '/backups/dbstash/db/lock', 'path-style: bucket in the path');
  assert.equal(first.headers['x-goog-if-generation-match'], '0');
  assert.equal(first.headers['if-none-match'], undefined);
  assert.match(String(first.headers.authorization), /x-goog-if-generation-match/, 'the precondition is signed');
  await assert.rejects(storage.put('db/lock', Buffer.from('theirs'), { exclusive: true }), (err: unknown) => err instanceof StorageError && err.reason === 'exists');
  // A plain put carries no precondition.
  await storage.put('db/plain', Buffer.from('x'));
  const plain = seen.filter((r) => r.method === 'PUT').at(-1)!;
  assert.equal(plain.headers['x-goog-if-generation-match'], undefined);
  await storage.close?.();
});

it('gcs preset: an unknown preset is refused with the valid one', async () => {
  await assert.rejects(openStorage('s3://backups/dbstash', { preset: 'azure' }), /option "preset".*gcs/);
});
