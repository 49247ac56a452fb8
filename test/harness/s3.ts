/**
 * Throwaway S3 endpoints for tests: s3rver (a filesystem-backed fake S3) on a
 * free port of 127.0.0.1, storing objects in its own temp dir. Clients must use
 * path-style addressing (`forcePathStyle: true`) and the fixed S3RVER credentials.
 * The server does not keep the process alive, so a forgotten stop() cannot hang a test run.
 *
 * s3rver 3.x predates the SDK's default upload checksums: it would store a
 * streamed PutObject body with its aws-chunked framing. The server here decodes
 * that framing first, as S3 does, so clients can keep the SDK defaults.
 */
import type { IncomingMessage } from 'node:http';
import S3rver from 's3rver';
import { AwsChunkedDecoder } from './aws-chunked.js';
import { removeTempDir, tempDir } from './tmp.js';

export interface S3Server {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  accessKeyId: 'S3RVER';
  secretAccessKey: 'S3RVER';
  region: 'us-east-1';
  /** Where s3rver keeps buckets and objects on disk. */
  directory: string;
  /** Closes the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

export async function startS3(opts: { buckets?: string[] } = {}): Promise<S3Server> {
  const directory = tempDir('dbstash-s3');
  const s3rver = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: (opts.buckets ?? []).map((name) => ({ name })),
  });
  decodeAwsChunkedUploads(s3rver);
  emulateConditionalWrites(s3rver);
  let port: number;
  try {
    ({ port } = await s3rver.run());
    s3rver.httpServer.unref();
  } catch (err) {
    await removeTempDir(directory);
    throw new Error(`[harness/s3] s3rver failed to start: ${(err as Error).message}`);
  }
  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    region: 'us-east-1',
    directory,
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = s3rver.close();
      s3rver.httpServer.closeAllConnections(); // close() alone waits for in-flight requests
      await closed;
      await removeTempDir(directory);
    },
  };
}

/**
 * If-None-Match: * on PutObject and CompleteMultipartUpload, as AWS S3, R2 and MinIO honour it:
 * 412 PreconditionFailed when the key exists. s3rver 3.x ignores the header; without this, the
 * drivers' exclusive puts could not be tested for atomicity. Writes of one key are serialized
 * while the check and the store happen, so two concurrent conditional writes cannot both win.
 */
function emulateConditionalWrites(s3rver: S3rver): void {
  const busy = new Map<string, Promise<void>>();
  s3rver.middleware.unshift(async (ctx, next) => {
    const conditional = ctx.get('if-none-match') === '*';
    const isPut = ctx.method === 'PUT' && !ctx.query.partNumber && !ctx.get('x-amz-copy-source');
    const isComplete = ctx.method === 'POST' && ctx.query.uploadId !== undefined;
    if (!conditional || !(isPut || isComplete)) return next();
    const [, bucket = '', ...rest] = ctx.path.split('/');
    const key = decodeURIComponent(rest.join('/'));
    const id = `${bucket}/${key}`;
    const before = busy.get(id) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const chained = before.then(() => mine);
    busy.set(id, chained);
    await before;
    try {
      if (await s3rver.store.existsObject(decodeURIComponent(bucket), key)) {
        ctx.req.resume();
        ctx.status = 412;
        ctx.set('Content-Type', 'application/xml');
        ctx.body =
          '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>' +
          '<Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>';
        return;
      }
      await next();
    } finally {
      release();
      if (busy.get(id) === chained) busy.delete(id);
    }
  });
}

/** Stores aws-chunked uploads decoded and never reports `aws-chunked` as an object's Content-Encoding. */
function decodeAwsChunkedUploads(s3rver: S3rver): void {
  s3rver.middleware.unshift(async (ctx, next) => {
    if (ctx.get('content-encoding').includes('aws-chunked')) {
      const request = ctx.req as IncomingMessage;
      // s3rver does not listen for errors on the body stream: a malformed body resets the connection.
      ctx.req = request.pipe(new AwsChunkedDecoder()).on('error', () => request.socket.destroy());
    }
    await next();
    const encodings = ctx.response.get('content-encoding').split(',').map((e) => e.trim());
    if (encodings.includes('aws-chunked')) {
      const rest = encodings.filter((e) => e && e !== 'aws-chunked');
      if (rest.length) ctx.response.set('content-encoding', rest.join(', '));
      else ctx.response.remove('content-encoding');
    }
  });
}
