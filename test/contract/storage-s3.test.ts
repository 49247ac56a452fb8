// The storage contract against the S3 driver, talking to a real S3 HTTP server (s3rver) on
// loopback. Each test gets its own prefix in one bucket; allKeys() lists the bucket's objects and
// pending multipart uploads with a plain SDK client, independently of the driver under test. The storage is opened by URL, as the CLI
// does, so the lazy registration and the retry wrapper are part of what is tested.

import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import { ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { openStorage } from '../../src/storage/index.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { storageContract } from './storage.js';

const BUCKET = 'contract';
let server: S3Server;
let raw: S3Client;

before(async () => {
  server = await startS3({ buckets: [BUCKET] });
  raw = new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
  });
});
after(async () => {
  raw?.destroy();
  await server?.stop();
});

storageContract('s3', async () => {
  const prefix = `t-${randomBytes(4).toString('hex')}`;
  const storage = await openStorage(`s3://${BUCKET}/${prefix}`, {
    endpoint: server.endpoint,
    region: server.region,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    // A streamed put holds (parallelParts + 1) part buffers; the contract's bound (a third of a
    // 192 MiB object, s3rver's own buffers included) holds for 3 buffers of 5 MiB.
    partSizeMiB: 5,
    parallelParts: 2,
  });
  return {
    storage,
    allKeys: async () => {
      const objects = await raw.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/` }));
      const uploads = await raw.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${prefix}/` }));
      return [
        ...(objects.Contents ?? []).map((o) => o.Key!.slice(prefix.length + 1)),
        ...(uploads.Uploads ?? []).map((u) => `${u.Key!.slice(prefix.length + 1)} (pending multipart upload ${u.UploadId})`),
      ].sort();
    },
    cleanup: async () => storage.close?.(),
  };
});
