// Helpers for the S3 and encryption tests: a SQLite database of incompressible rows (so its
// artifact spans several multipart parts), a TCP proxy that "stops the server" after a number of
// uploaded bytes, a plain SDK client to look at the bucket (objects and pending multipart uploads)
// independently of dbstash, deterministic test data, and config files.

import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { S3Server } from '../harness/s3.js';

/** A SQLite file holding `mib` MiB of random bytes in 1 MiB rows, plus a small table. */
export function makeSqliteDb(dir: string, name: string, mib: number): string {
  const file = path.join(dir, `${name}.db`);
  const db = new Database(file);
  db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL); CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  const insert = db.prepare('INSERT INTO blobs (data) VALUES (?)');
  for (let i = 0; i < mib; i++) insert.run(randomBytes(1 << 20));
  const note = db.prepare('INSERT INTO notes (body) VALUES (?)');
  for (let i = 0; i < 100; i++) note.run(`note ${i}`);
  db.close();
  return file;
}

export function rawClient(server: S3Server, endpoint = server.endpoint): S3Client {
  return new S3Client({
    endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
  });
}

export async function bucketKeys(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key!).sort();
}

/** Pending (started, neither completed nor aborted) multipart uploads under `prefix`, as "key uploadId". */
export async function pendingUploads(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const res = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
  return (res.Uploads ?? []).map((u) => `${u.Key} ${u.UploadId}`).sort();
}

/**
 * `size` deterministic pseudo-random bytes (an AES-CTR keystream of `seed`), in chunks of `chunk`
 * bytes; `pulled()` tells how many bytes the consumer has taken so far.
 */
export function pseudoRandomStream(size: number, seed = 7, chunk = 64 * 1024): Readable & { pulled(): number } {
  const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, seed), Buffer.alloc(16, 1));
  const zeros = Buffer.alloc(chunk);
  let left = size;
  let pulled = 0;
  const stream = new Readable({
    highWaterMark: chunk,
    read() {
      if (left === 0) return this.push(null);
      const n = Math.min(chunk, left);
      left -= n;
      pulled += n;
      this.push(cipher.update(zeros.subarray(0, n)));
    },
  });
  return Object.assign(stream, { pulled: () => pulled });
}

export function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function objectSha256(client: S3Client, bucket: string, key: string): Promise<{ sha256: string; size: number; etag: string }> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of res.Body as Readable) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size, etag: res.ETag ?? '' };
}

/** The environment a CLI run needs to reach the test S3 server with its credentials. */
export function s3Env(server: S3Server, overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    AWS_ACCESS_KEY_ID: server.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
    AWS_REGION: server.region,
    AWS_PROFILE: undefined,
    AWS_ENDPOINT_URL: undefined,
    AWS_ENDPOINT_URL_S3: undefined,
    ...overrides,
  };
}

export function writeConfig(dir: string, yaml: string): string {
  const file = path.join(dir, 'dbstash.yaml');
  writeFileSync(file, yaml);
  return file;
}

export interface CutProxy {
  endpoint: string;
  /** Bytes forwarded from clients to the server so far. */
  uploaded(): number;
  /** Request lines ("PUT /bucket/key?partNumber=2&… HTTP/1.1") seen so far. */
  requests(): string[];
  /** Request line and headers of each request seen so far, lower-cased header names. */
  heads(): string[];
  /** True once the proxy has cut every connection and stopped listening. */
  cut(): boolean;
  close(): Promise<void>;
}

/**
 * Forwards TCP to the S3 server until `cutAfterBytes` bytes went upstream, then drops every
 * connection and stops listening: to the client, the server went away mid-upload. With
 * `bytesPerSecond`, each connection's uploads are slowed to about that rate.
 */
export async function startCutProxy(server: S3Server, cutAfterBytes = Infinity, bytesPerSecond?: number): Promise<CutProxy> {
  const upstreamPort = Number(new URL(server.endpoint).port);
  const sockets = new Set<net.Socket>();
  let uploaded = 0;
  let isCut = false;
  const requests: string[] = [];
  const heads: string[] = [];
  const proxy = net.createServer((client) => {
    if (isCut) return client.destroy();
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.on('data', (chunk: Buffer) => {
      uploaded += chunk.length;
      const start = chunk.subarray(0, 8192).toString('latin1');
      const line = /^(GET|PUT|POST|DELETE|HEAD) \S+ HTTP\/1\.1/.exec(start);
      if (line) {
        requests.push(line[0]);
        const [head] = start.split('\r\n\r\n');
        heads.push(head.split('\r\n').map((l, i) => (i === 0 ? l : l.replace(/^[^:]+/, (name) => name.toLowerCase()))).join('\n'));
      }
      if (uploaded >= cutAfterBytes) return cutAll();
      upstream.write(chunk);
      if (bytesPerSecond) {
        client.pause();
        setTimeout(() => client.resume(), (chunk.length / bytesPerSecond) * 1000);
      }
    });
    upstream.pipe(client);
  });
  const cutAll = () => {
    if (isCut) return;
    isCut = true;
    proxy.close();
    for (const s of sockets) s.destroy();
  };
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const port = (proxy.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    uploaded: () => uploaded,
    requests: () => [...requests],
    heads: () => [...heads],
    cut: () => isCut,
    close: async () => cutAll(),
  };
}
