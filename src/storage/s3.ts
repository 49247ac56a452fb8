// S3-compatible storage driver (AWS S3, MinIO, Cloudflare R2, Backblaze B2, Wasabi, Supabase
// Storage): s3://bucket/prefix. Loaded lazily by storage/index.ts, so a local backup never imports
// the SDK. See docs/storage.md for the options, provider presets and the choices made here.
//
// - Credentials, region and endpoint follow the SDK's default chain and environment
//   (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL), each
//   overridable from the storage's config entry. For a non-AWS endpoint, integrity checksums are
//   sent only when required and path-style addressing is the default.
// - Streamed puts go through our own multipart upload (s3-multipart.ts): memory is bounded by
//   (parallelParts + 1) part buffers reused for the whole upload, the part size comes from the size
//   hint so 10,000 parts are never exceeded, each part is retried with backoff, and on failure or
//   abort the multipart upload is aborted: an object only becomes visible when
//   CompleteMultipartUpload (or, below one part, the single PutObject) succeeds.
// - The SHA-256 of a streamed artifact is only known at its end, after S3 has fixed the object's
//   metadata; it lives in the manifest and every reader checks it. Buffered puts (manifests, locks,
//   records) carry their SHA-256 as metadata, and get() checks it. After every put, the stored size
//   is read back and compared with what was sent.
// - Exclusive puts send If-None-Match: * with PutObject or CompleteMultipartUpload (atomic on AWS,
//   R2, MinIO); each is also preceded by an existence check, the only protection on stores that
//   ignore the header.

import { createHash, randomBytes } from 'node:crypto';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ObjectCannedACL,
  type PutObjectCommandInput,
  type S3ClientConfig,
  type ServerSideEncryption,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { z } from 'zod';
import { ConfigError, StorageError, type StorageErrorReason } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/format.js';
import { choosePartSize, MultipartUpload, type ObjectParams } from './s3-multipart.js';
import { byKey, parseDriverOptions, type IncompleteUpload, type ObjectInfo, type PutOptions, type PutResult, type Storage } from './storage.js';

const MiB = 1024 * 1024;
/**
 * Parts in flight per streamed put by default: 3 buffers of 5 MiB. Two requests in flight keep up
 * with what one dump produces; each more costs a part size of memory, and with 4 the process
 * peaked at ~151 MB at pgbench scale 50, over the 150 MB target (docs/storage.md).
 */
const DEFAULT_PARALLEL_PARTS = 2;

/** User metadata of a streamed object: a random token of the put that wrote it. */
const UPLOAD_TOKEN = 'dbstash-upload';

/**
 * Google Cloud Storage through its S3-interoperable XML API, with HMAC keys: the endpoint, and its
 * create-only precondition. GCS applies If-None-Match to reads only; on a write it takes
 * x-goog-if-generation-match: 0 ("only if no live version exists") and answers 412 otherwise.
 */
const GCS_ENDPOINT = 'https://storage.googleapis.com';

export const s3OptionsSchema = z
  .object({
    /** A provider's settings in one word: "gcs" (Google Cloud Storage with HMAC keys). */
    preset: z.enum(['gcs']).optional(),
    /** Endpoint of an S3-compatible store; default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS. */
    endpoint: z.string().url().optional(),
    /** Default AWS_REGION / AWS_DEFAULT_REGION / the profile's region; "us-east-1" for custom endpoints. */
    region: z.string().min(1).optional(),
    /** Path-style URLs (endpoint/bucket/key); default true for custom endpoints, false for AWS. */
    forcePathStyle: z.boolean().optional(),
    /** STANDARD, STANDARD_IA, GLACIER_IR, … (AWS names; other stores accept a subset). */
    storageClass: z.string().min(1).optional(),
    /** Server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS, with kmsKeyId). */
    sse: z.enum(['AES256', 'aws:kms']).optional(),
    kmsKeyId: z.string().min(1).optional(),
    /** Static credentials, normally "${VAR}" references; default: the SDK's credential chain. */
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    sessionToken: z.string().min(1).optional(),
    /** Smallest multipart part size in MiB (≥ 5); grows with the artifact's expected size. */
    partSizeMiB: z.number().int().min(5).max(5 * 1024).optional(),
    /** Parts uploaded in parallel; memory: (parallelParts + 1) × part size per streamed put. */
    parallelParts: z.number().int().min(1).max(32).optional(),
    /** The former name of parallelParts, still accepted. */
    queueSize: z.number().int().min(1).max(32).optional(),
    /** Attempts per request, with exponential backoff, before a transient error is reported. */
    maxAttempts: z.number().int().min(1).max(20).optional(),
    /** Longest wait for a connection to the endpoint (a duration: "10s"); default 10s. */
    connectTimeout: z.string().refine((v) => parseDuration(v) !== undefined, 'a duration such as 10s').optional(),
    /** Longest silence of a connection in the middle of a request or answer; default 30s. */
    idleTimeout: z.string().refine((v) => parseDuration(v) !== undefined, 'a duration such as 30s').optional(),
    /**
     * S3 Object Lock on every object a backup writes (artifacts, signatures, manifests; never
     * locks or records): the store refuses to delete or overwrite it for `days`. The bucket must
     * have Object Lock enabled. governance: users with s3:BypassGovernanceRetention may still
     * remove it; compliance: nobody, not even the account's root user.
     */
    objectLock: z.object({ mode: z.enum(['governance', 'compliance']), days: z.number().int().positive().max(36500) }).strict().optional(),
    /** Send If-None-Match: * on exclusive puts (set false for a store that rejects the header). */
    conditionalWrites: z.boolean().optional(),
    acl: z.string().min(1).optional(),
    /** Belongs to retention, not to the driver. */
    retention: z.unknown().optional(),
  })
  .strict();

export type S3Options = z.infer<typeof s3OptionsSchema>;

export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing slashes; "" for the bucket root. */
  prefix: string;
}

export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/?#]*)\/?([^?#]*)$/i.exec(url);
  if (!m || !m[1]) {
    throw new ConfigError(`[s3] "${url}" is not an s3://bucket/prefix URL`, { hint: 'e.g. --storage s3://my-backups/dbstash' });
  }
  if (m[1].includes('@') || m[1].includes(':')) {
    throw new ConfigError('[s3] credentials do not belong in the storage URL', {
      hint: 'set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or accessKeyId/secretAccessKey: ${VAR} in the config storage entry',
    });
  }
  return { bucket: m[1], prefix: m[2].replace(/^\/+|\/+$/g, '') };
}

export function parseS3Options(options: Record<string, unknown>): S3Options {
  const data = parseDriverOptions('s3', s3OptionsSchema, options);
  const o = data;
  if (o.kmsKeyId && o.sse !== 'aws:kms') throw new ConfigError('[s3] option "kmsKeyId" needs sse: aws:kms');
  if (!!o.accessKeyId !== !!o.secretAccessKey) {
    throw new ConfigError('[s3] options "accessKeyId" and "secretAccessKey" go together', { hint: 'set both, or neither to use the SDK credential chain' });
  }
  return o;
}

/** True for endpoints that are not AWS's own (they get checksums only when required). */
export function isCustomEndpoint(endpoint: string | undefined): boolean {
  if (!endpoint) return false;
  try {
    return !/(^|\.)amazonaws\.com(\.cn)?$/i.test(new URL(endpoint).hostname);
  } catch {
    return true;
  }
}

const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'ConditionalRequestConflict',
  'TimeoutError',
]);
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED']);

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
}

function errorCode(err: SdkError): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e; depth++) {
    const code = (e as SdkError).code;
    if (code) return code;
    e = (e as { cause?: unknown }).cause ?? (e as { errors?: unknown[] }).errors?.[0];
  }
  return undefined;
}

/** Maps an SDK or network error to a StorageError whose hint names the fix. */
export function classifyS3Error(err: unknown, what: string, loc: S3Location, endpoint: string | undefined, timeouts?: { connectMs: number; idleMs: number }): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as SdkError;
  const name = e.name ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  const code = errorCode(e);
  const where = endpoint ? ` at ${endpoint}` : '';
  const credentials =
    'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or accessKeyId/secretAccessKey in the storage\'s config entry';
  let reason: StorageErrorReason = 'permanent';
  let detail = e.message && e.message !== 'UnknownError' ? e.message : name;
  let hint: string | undefined;
  if (name === 'NoSuchUpload') {
    reason = 'not-found';
    detail = 'no such multipart upload';
  } else if (name === 'NoSuchKey' || name === 'NotFound' || (status === 404 && name !== 'NoSuchBucket')) {
    reason = 'not-found';
    detail = 'no such object';
  } else if (name === 'PreconditionFailed' || status === 412) {
    reason = 'exists';
    detail = 'the object already exists';
  } else if (name === 'NoSuchBucket') {
    detail = `bucket "${loc.bucket}" does not exist${where}`;
    hint = `create the bucket (e.g. aws s3 mb s3://${loc.bucket}) or fix the bucket name in the storage URL`;
  } else if (name === 'InvalidAccessKeyId') {
    detail = `the access key is not known${where} (InvalidAccessKeyId)`;
    hint = credentials;
  } else if (name === 'SignatureDoesNotMatch') {
    detail = `the secret key does not match the access key${where} (SignatureDoesNotMatch)`;
    hint = credentials;
  } else if (name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
    detail = `access denied to s3://${loc.bucket}/${loc.prefix}${where}`;
    hint = `${credentials}; the key needs s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket`;
  } else if (name === 'CredentialsProviderError' || /credential/i.test(detail) && !status) {
    detail = `no S3 credentials found (${detail})`;
    hint = 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or accessKeyId/secretAccessKey: ${VAR} in the config';
  } else if (/region is missing/i.test(detail)) {
    detail = 'no S3 region configured';
    hint = 'set AWS_REGION, or region: in the storage\'s config entry';
  } else if (code === 'ENOTFOUND') {
    detail = `cannot resolve the S3 endpoint host${where}`;
    hint = 'check the endpoint (AWS_ENDPOINT_URL_S3 or endpoint: in the config) and the bucket name';
  } else if (name === 'TimeoutError' && timeouts) {
    // Already tried as often as the store allows (maxAttempts): more retries would only multiply the wait.
    detail = /connect/i.test(e.message ?? '')
      ? `could not connect${where} within ${formatDuration(timeouts.connectMs)} (connectTimeout)`
      : `no answer${where} for ${formatDuration(timeouts.idleMs)} (idleTimeout)`;
    hint = 'the store is unreachable or hung; if it is only slow, raise connectTimeout/idleTimeout in the storage\'s config entry';
  } else if (TRANSIENT_NAMES.has(name) || (status !== undefined && status >= 500) || (code && TRANSIENT_CODES.has(code)) || e.$fault === 'server') {
    reason = 'transient';
    if (code && TRANSIENT_CODES.has(code)) detail = `${code}: cannot reach the S3 endpoint${where}`;
    hint = 'the store is unreachable or overloaded; retry later';
  } else if (name === 'NotImplemented' || status === 501) {
    detail = `the store does not support this request (${detail})`;
    hint = 'for exclusive puts, set conditionalWrites: false in the storage\'s config entry';
  }
  return new StorageError(reason, `[s3] ${what}: ${detail}`, { cause: err, hint });
}

/** Counts (and for small objects hashes) what a GET delivers; a short or altered body is an error. */
class ReadCheck extends Transform {
  private bytes = 0;
  private readonly hash;

  constructor(
    private readonly expectedSize: number | undefined,
    private readonly expectedSha256: string | undefined,
    private readonly label: string,
  ) {
    super({ highWaterMark: MiB });
    this.hash = expectedSha256 ? createHash('sha256') : undefined;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash?.update(chunk);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.expectedSize !== undefined && this.bytes !== this.expectedSize) {
      return done(new StorageError('transient', `[s3] ${this.label}: body ended after ${this.bytes} of ${this.expectedSize} bytes`));
    }
    if (this.hash && this.hash.digest('hex') !== this.expectedSha256) {
      return done(new StorageError('permanent', `[s3] ${this.label}: SHA-256 differs from the one stored at upload; the store altered the object`));
    }
    done();
  }
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  return reason instanceof Error ? reason : Object.assign(new Error('the operation was aborted'), { name: 'AbortError' });
}

export function createS3Storage(url: string, rawOptions: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): Storage {
  const loc = parseS3Url(url);
  const o = parseS3Options(rawOptions);
  const gcs = o.preset === 'gcs';
  const endpoint = o.endpoint ?? (gcs ? GCS_ENDPOINT : undefined) ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  const custom = isCustomEndpoint(endpoint);
  const timeouts = {
    connectMs: parseDuration(o.connectTimeout ?? '10s')!,
    idleMs: parseDuration(o.idleTimeout ?? '30s')!,
  };
  const config: S3ClientConfig = {
    maxAttempts: o.maxAttempts ?? 3,
    // Every request has a connect and an idle timeout: an endpoint that accepts and never answers
    // fails the request instead of holding the backup (and a Ctrl-C) for ever.
    requestHandler: { connectionTimeout: timeouts.connectMs, socketTimeout: timeouts.idleMs },
    forcePathStyle: o.forcePathStyle ?? custom,
  };
  if (o.endpoint || gcs) config.endpoint = endpoint;
  if (o.region) config.region = o.region;
  else if (gcs) config.region = 'auto';
  else if (custom && !env.AWS_REGION && !env.AWS_DEFAULT_REGION) config.region = 'us-east-1';
  if (custom && !o.objectLock) {
    // With Object Lock, S3 requires a checksum on every write: keep the SDK's default then.
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
  }
  if (o.accessKeyId && o.secretAccessKey) {
    config.credentials = { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey, sessionToken: o.sessionToken };
  }
  // The SDK's notice about future Node.js versions is not something a backup run can act on.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new S3Client(config);
  if (gcs) {
    // Before signing, so the precondition is part of the signed request.
    client.middlewareStack.add(
      (next) => async (args) => {
        const headers = (args.request as { headers?: Record<string, string> }).headers;
        if (headers) {
          for (const name of Object.keys(headers)) {
            if (name.toLowerCase() === 'if-none-match' && headers[name] === '*') {
              delete headers[name];
              headers['x-goog-if-generation-match'] = '0';
            }
          }
        }
        return next(args);
      },
      { step: 'build', name: 'dbstashGcsCreateOnly' },
    );
  }
  const minPartSize = (o.partSizeMiB ?? 5) * MiB;
  const parallelParts = o.parallelParts ?? o.queueSize ?? DEFAULT_PARALLEL_PARTS;
  const conditionalWrites = o.conditionalWrites ?? true;
  const Bucket = loc.bucket;
  const fullKey = (key: string) => (loc.prefix ? `${loc.prefix}/${key}` : key);
  const classify = (err: unknown, what: string) => classifyS3Error(err, what, loc, endpoint, timeouts);
  const objectParams: Partial<PutObjectCommandInput> = {
    ...(o.storageClass ? { StorageClass: o.storageClass as StorageClass } : {}),
    ...(o.sse ? { ServerSideEncryption: o.sse as ServerSideEncryption } : {}),
    ...(o.kmsKeyId ? { SSEKMSKeyId: o.kmsKeyId } : {}),
    ...(o.acl ? { ACL: o.acl as ObjectCannedACL } : {}),
  };

  async function head(key: string, opts: { signal?: AbortSignal } = {}): Promise<ObjectInfo | undefined> {
    try {
      const res = await client.send(new HeadObjectCommand({ Bucket, Key: fullKey(key) }), { abortSignal: opts.signal as never });
      return {
        key,
        size: res.ContentLength ?? 0,
        modifiedAt: res.LastModified ?? new Date(0),
        metadata: res.Metadata ?? {},
        ...(res.ObjectLockRetainUntilDate ? { retainUntil: new Date(res.ObjectLockRetainUntilDate), retentionMode: String(res.ObjectLockMode ?? '').toLowerCase() } : {}),
      };
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const e = classify(err, `cannot stat ${key}`);
      if (e.reason === 'not-found') return undefined;
      throw e;
    }
  }

  /**
   * Streams into a multipart upload (s3-multipart.ts) and returns the bytes stored. On failure or
   * abort the upload is aborted; if the object was published all the same (an abort that came
   * while the last request was under way), it is deleted before the put rejects.
   */
  async function uploadStream(source: Readable, object: ObjectParams, opts: PutOptions): Promise<number> {
    // A publish whose answer is lost is sent again by the SDK; with If-None-Match the second try
    // finds the object and fails. The token in the object's metadata tells our own object apart.
    const token = randomBytes(12).toString('hex');
    object = { ...object, Metadata: { ...object.Metadata, [UPLOAD_TOKEN]: token } };
    const upload = new MultipartUpload({
      client,
      object,
      ifNoneMatch: opts.exclusive && conditionalWrites,
      partSize: choosePartSize(opts.sizeHint, minPartSize),
      parallelParts,
      classify,
    });
    try {
      await pipelineAsync(source, upload, opts.signal ? { signal: opts.signal } : {});
      if (opts.signal?.aborted) throw abortError(opts.signal);
    } catch (err) {
      // The pipeline settles as soon as a stream fails, before the upload's own cleanup (the
      // multipart abort) has run: the put rejects only once that is done.
      upload.destroy();
      if (!upload.closed) await new Promise((resolve) => upload.once('close', resolve));
      if (upload.published) await client.send(new DeleteObjectCommand({ Bucket, Key: object.Key })).catch(() => {});
      if (!opts.signal?.aborted && err instanceof StorageError && err.reason === 'exists') {
        const stored = await head(object.Key!.slice(loc.prefix ? loc.prefix.length + 1 : 0)).catch(() => undefined);
        if (stored?.metadata?.[UPLOAD_TOKEN] === token) return upload.bytes;
      }
      throw opts.signal?.aborted ? abortError(opts.signal) : err;
    }
    return upload.bytes;
  }

  /** Object Lock headers for a part of a backup (retain), when the storage has objectLock. */
  const lockParams = (opts: PutOptions): Partial<ObjectParams> =>
    o.objectLock && opts.retain
      ? { ObjectLockMode: o.objectLock.mode.toUpperCase() as 'GOVERNANCE', ObjectLockRetainUntilDate: new Date(Date.now() + o.objectLock.days * 86400_000) }
      : {};

  async function put(key: string, data: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    const Key = fullKey(key);
    const what = `cannot write ${key} to s3://${Bucket}/${loc.prefix}`;
    if (opts.exclusive && (await head(key))) throw new StorageError('exists', `[s3] ${key} already exists`);
    let size: number;
    try {
      if (data instanceof Uint8Array) {
        const sha256 = createHash('sha256').update(data).digest('hex');
        await client.send(
          new PutObjectCommand({
            ...objectParams,
            ...lockParams(opts),
            Bucket,
            Key,
            Body: data,
            Metadata: { ...opts.metadata, sha256 },
            ...(opts.exclusive && conditionalWrites ? { IfNoneMatch: '*' } : {}),
          }),
          { abortSignal: opts.signal as never },
        );
        size = data.length;
      } else {
        size = await uploadStream(data, { ...objectParams, ...lockParams(opts), Bucket, Key, Metadata: opts.metadata }, opts);
      }
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      throw classify(err, what);
    }
    const stored = await head(key);
    if (!stored || stored.size !== size) {
      await del(key).catch(() => {});
      throw new StorageError('permanent', `[s3] ${what}: the store holds ${stored ? `${stored.size} bytes` : 'nothing'} after ${size} bytes were uploaded`);
    }
    return { size };
  }

  async function get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    try {
      const res = await client.send(new GetObjectCommand({ Bucket, Key: fullKey(key) }), { abortSignal: opts.signal as never });
      const check = new ReadCheck(res.ContentLength, res.Metadata?.sha256, `reading ${key}`);
      pipeline(res.Body as Readable, check, (err) => {
        if (err && !check.destroyed) check.destroy(classify(err, `reading ${key}`));
      });
      return check;
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      throw classify(err, `cannot read ${key}`);
    }
  }

  async function list(prefix: string, opts: { signal?: AbortSignal } = {}): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const strip = loc.prefix ? loc.prefix.length + 1 : 0;
    let ContinuationToken: string | undefined;
    try {
      do {
        const res = await client.send(new ListObjectsV2Command({ Bucket, Prefix: fullKey(prefix), ContinuationToken }), { abortSignal: opts.signal as never });
        for (const obj of res.Contents ?? []) {
          if (!obj.Key) continue;
          out.push({ key: obj.Key.slice(strip), size: obj.Size ?? 0, modifiedAt: obj.LastModified ?? new Date(0) });
        }
        ContinuationToken = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (ContinuationToken);
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      throw classify(err, `cannot list s3://${Bucket}/${fullKey(prefix)}`);
    }
    return out.sort(byKey);
  }

  async function listIncompleteUploads(prefix: string): Promise<IncompleteUpload[]> {
    const out: IncompleteUpload[] = [];
    const strip = loc.prefix ? loc.prefix.length + 1 : 0;
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    try {
      do {
        const res = await client.send(new ListMultipartUploadsCommand({ Bucket, Prefix: fullKey(prefix), KeyMarker, UploadIdMarker }));
        for (const u of res.Uploads ?? []) {
          if (u.Key && u.UploadId) out.push({ key: u.Key.slice(strip), uploadId: u.UploadId, startedAt: u.Initiated ?? new Date(0) });
        }
        [KeyMarker, UploadIdMarker] = res.IsTruncated ? [res.NextKeyMarker, res.NextUploadIdMarker] : [undefined, undefined];
      } while (KeyMarker);
    } catch (err) {
      throw classify(err, `cannot list the incomplete multipart uploads under s3://${Bucket}/${fullKey(prefix)}`);
    }
    return out.sort((a, b) => byKey(a, b) || a.startedAt.getTime() - b.startedAt.getTime());
  }

  async function abortIncompleteUpload(upload: IncompleteUpload): Promise<void> {
    try {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: fullKey(upload.key), UploadId: upload.uploadId }));
    } catch (err) {
      const e = classify(err, `cannot abort the multipart upload ${upload.uploadId} of ${upload.key}`);
      if (e.reason !== 'not-found') throw e;
    }
  }

  async function del(key: string): Promise<void> {
    try {
      await client.send(new DeleteObjectCommand({ Bucket, Key: fullKey(key) }));
    } catch (err) {
      const e = classify(err, `cannot delete ${key}`);
      if (e.reason !== 'not-found') throw e;
    }
  }

  return {
    url: `s3://${Bucket}${loc.prefix ? `/${loc.prefix}` : ''}`,
    properties: { kind: 's3', local: false, maxParallelism: 8, ...(o.objectLock ? { immutable: `S3 Object Lock, ${o.objectLock.mode}, ${o.objectLock.days} days` } : {}) },
    put,
    get,
    stat: head,
    list,
    delete: del,
    listIncompleteUploads,
    abortIncompleteUpload,
    async check(signal?: AbortSignal) {
      const deadline = AbortSignal.timeout(timeouts.connectMs + timeouts.idleMs);
      try {
        // A prefix that matches nothing: proves bucket, credentials and list permission in one
        // small request, whatever the bucket holds. Bounded as a whole: a preflight that waited
        // out every retry of a hung endpoint would hold up the backup it is meant to protect.
        await client.send(new ListObjectsV2Command({ Bucket, Prefix: fullKey('.dbstash-check/'), MaxKeys: 1 }), { abortSignal: (signal ? AbortSignal.any([deadline, signal]) : deadline) as never });
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (deadline.aborted) {
          throw new StorageError('permanent', `[s3] no answer${endpoint ? ` at ${endpoint}` : ''} for s3://${Bucket}/${loc.prefix} within ${formatDuration(timeouts.connectMs + timeouts.idleMs)}`, {
            cause: err,
            hint: 'the store is unreachable or hung; if it is only slow, raise connectTimeout/idleTimeout in the storage\'s config entry',
          });
        }
        throw classify(err, `cannot use s3://${Bucket}/${loc.prefix}`);
      }
    },
    async close() {
      client.destroy();
    },
  };
}
