/**
 * Throwaway S3 endpoints for tests: s3rver (a filesystem-backed fake S3) on a
 * free port of 127.0.0.1, storing objects in its own temp dir. Clients must use
 * path-style addressing (`forcePathStyle: true`) and the fixed S3RVER credentials.
 * The server does not keep the process alive, so a forgotten stop() cannot hang a test run.
 *
 * s3rver 3.x predates the SDK's default upload checksums: it would store a
 * streamed PutObject body with its aws-chunked framing. The server here decodes
 * that framing first, as S3 does, so clients can keep the SDK defaults.
 *
 * s3rver 3.x implements neither ListMultipartUploads nor AbortMultipartUpload (it answers
 * NotImplemented and MethodNotAllowed). The server here answers both from s3rver's own record of
 * pending uploads (a directory per upload id), so tests can see incomplete uploads and the
 * drivers' aborts take effect. The listing is never truncated.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
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
  /**
   * Answers the requests `when` matches with an S3 error (`status`, `code`) instead of serving
   * them, for the first `times` matches (default: every one). Returns how many it answered.
   */
  failRequests(rule: FailRule): () => number;
  /** Makes a pending multipart upload look started at `initiated` (as ListMultipartUploads reports it). */
  backdateUpload(bucket: string, uploadId: string, initiated: Date): Promise<void>;
  /**
   * Object Lock as S3 keeps it, which s3rver 3.x does not: the mode and retain-until date sent
   * with a PutObject or CreateMultipartUpload are kept per key, HEAD reports them, and a DELETE of
   * a key still retained is refused with AccessDenied. Returns every write that carried them.
   */
  objectLocks(): { method: string; key: string; mode: string; until: string }[];
  /** Closes the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

export interface FailRule {
  when: (req: { method: string; path: string; query: Record<string, string> }) => boolean;
  status: number;
  code: string;
  times?: number;
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
  const locks = emulateObjectLock(s3rver);
  emulatePendingUploads(s3rver, directory);
  const rules = injectFailures(s3rver);
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
    failRequests(rule) {
      const entry = { rule, hits: 0 };
      rules.push(entry);
      return () => entry.hits;
    },
    objectLocks: () => [...locks.seen],
    async backdateUpload(bucket, uploadId, initiated) {
      await utimes(path.join(uploadsDir(directory, bucket), uploadId, 'key'), initiated, initiated);
    },
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

function emulateObjectLock(s3rver: S3rver): { seen: { method: string; key: string; mode: string; until: string }[] } {
  const retained = new Map<string, { mode: string; until: string }>();
  const seen: { method: string; key: string; mode: string; until: string }[] = [];
  s3rver.middleware.unshift(async (ctx, next) => {
    const [, bucket = '', ...rest] = ctx.path.split('/');
    const key = decodeURIComponent(rest.join('/'));
    const id = `${decodeURIComponent(bucket)}/${key}`;
    const mode = ctx.get('x-amz-object-lock-mode');
    const until = ctx.get('x-amz-object-lock-retain-until-date');
    const held = retained.get(id);
    if (ctx.method === 'DELETE' && ctx.query.uploadId === undefined && held && Date.parse(held.until) > Date.now()) {
      const bypass = held.mode === 'GOVERNANCE' && ctx.get('x-amz-bypass-governance-retention') === 'true';
      if (!bypass) {
        ctx.req.resume();
        ctx.status = 403;
        ctx.set('Content-Type', 'application/xml');
        ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied because object protected by object lock.</Message></Error>';
        return;
      }
    }
    await next();
    const creating = (ctx.method === 'PUT' && !ctx.query.partNumber) || (ctx.method === 'POST' && ctx.query.uploads !== undefined);
    if (creating && mode && until && ctx.status < 300) {
      retained.set(id, { mode, until });
      seen.push({ method: ctx.method, key, mode, until });
    }
    if (ctx.method === 'HEAD' && ctx.status === 200 && held) {
      ctx.set('x-amz-object-lock-mode', held.mode);
      ctx.set('x-amz-object-lock-retain-until-date', held.until);
    }
    if (ctx.method === 'DELETE' && ctx.status < 300 && ctx.query.uploadId === undefined) retained.delete(id);
  });
  return { seen };
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

/** Where s3rver 3.x keeps a bucket's pending multipart uploads: one directory per upload id, holding `key` and the parts. */
function uploadsDir(directory: string, bucket: string): string {
  return path.join(directory, bucket, '._S3rver_uploads');
}

const xmlEscape = (text: string) => text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

function s3ErrorBody(code: string, message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error>`;
}

/**
 * ListMultipartUploads (GET /bucket?uploads, with prefix) and AbortMultipartUpload
 * (DELETE /bucket/key?uploadId=…), answered from s3rver's uploads directory. An upload's
 * Initiated time is the modification time of its `key` file, written once when it started.
 */
function emulatePendingUploads(s3rver: S3rver, directory: string): void {
  s3rver.middleware.unshift(async (ctx, next) => {
    const [, bucket = '', ...rest] = ctx.path.split('/');
    const key = decodeURIComponent(rest.join('/'));
    const dir = uploadsDir(directory, decodeURIComponent(bucket));
    if (ctx.method === 'GET' && !key && ctx.query.uploads !== undefined) {
      const prefix = String(ctx.query.prefix ?? '');
      const uploads: { key: string; id: string; initiated: Date }[] = [];
      for (const id of existsSync(dir) ? await readdir(dir) : []) {
        const file = path.join(dir, id, 'key');
        if (!existsSync(file)) continue;
        const uploadKey = await readFile(file, 'utf8');
        if (uploadKey.startsWith(prefix)) uploads.push({ key: uploadKey, id, initiated: (await stat(file)).mtime });
      }
      uploads.sort((a, b) => a.key.localeCompare(b.key) || a.initiated.getTime() - b.initiated.getTime());
      ctx.status = 200;
      ctx.set('Content-Type', 'application/xml');
      ctx.body =
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
        `<Bucket>${xmlEscape(bucket)}</Bucket><Prefix>${xmlEscape(prefix)}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>` +
        uploads
          .map(
            (u) =>
              `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${u.id}</UploadId><Initiated>${u.initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`,
          )
          .join('') +
        '</ListMultipartUploadsResult>';
      return;
    }
    if (ctx.method === 'DELETE' && key && ctx.query.uploadId !== undefined) {
      const id = String(ctx.query.uploadId);
      const file = path.join(dir, path.basename(id), 'key');
      if (!existsSync(file) || (await readFile(file, 'utf8')) !== key) {
        ctx.status = 404;
        ctx.set('Content-Type', 'application/xml');
        ctx.body = s3ErrorBody('NoSuchUpload', 'The specified multipart upload does not exist.');
        return;
      }
      await rm(path.join(dir, path.basename(id)), { recursive: true, force: true });
      ctx.status = 204;
      return;
    }
    await next();
  });
}

/** The rules of failRequests(), checked before anything else. */
function injectFailures(s3rver: S3rver): { rule: FailRule; hits: number }[] {
  const rules: { rule: FailRule; hits: number }[] = [];
  s3rver.middleware.unshift(async (ctx, next) => {
    const req = { method: ctx.method, path: decodeURIComponent(ctx.path), query: Object.fromEntries(Object.entries(ctx.query).map(([k, v]) => [k, String(v ?? '')])) };
    const entry = rules.find((e) => (e.rule.times === undefined || e.hits < e.rule.times) && e.rule.when(req));
    if (!entry) return next();
    entry.hits++;
    ctx.req.resume();
    ctx.status = entry.rule.status;
    ctx.set('Content-Type', 'application/xml');
    ctx.body = s3ErrorBody(entry.rule.code, `injected by the test harness (${entry.rule.code})`);
  });
  return rules;
}
