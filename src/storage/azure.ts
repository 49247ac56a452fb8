// Azure Blob Storage driver: azure://container/prefix. Loaded lazily by storage/index.ts, so a
// local backup never imports the SDK. See docs/storage.md ("Azure Blob Storage") for the options.
//
// - Credentials: a connection string, an account name with its key, or a SAS token, from the
//   storage's config entry or else the environment (AZURE_STORAGE_CONNECTION_STRING,
//   AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN). None of them ever
//   reaches a message, a hint or the `url` property: every text taken from the SDK is redacted.
// - Streamed puts stage blocks (Put Block) from at most parallelBlocks + 1 block buffers, reused
//   for the whole upload, and publish with one Put Block List: until it succeeds, nothing is
//   visible under the key. An object smaller than one block goes as one Put Blob. The block size
//   comes from the size hint so 50,000 blocks always suffice; every writer's block ids carry its
//   own random token and all have the same length (Azure requires it per blob). A source that can
//   be drawn (a local stash's artifact, storage/drawable.ts) is read straight into those buffers.
// - Exclusive puts publish with If-None-Match: * (Put Blob or Put Block List): Azure decides
//   atomically, and the losers get 'exists'. A publish whose answer was lost and that the SDK sent
//   again finds the blob: the token in its metadata tells our own blob apart.
// - Uncommitted blocks cannot be deleted one by one. A put that fails or is aborted after it
//   staged blocks discards them the only way Azure offers: it commits an empty block list with
//   If-None-Match: * (which drops every uncommitted block of a blob that was never committed, and
//   fails without touching a committed one), then deletes that empty blob if it is still the one
//   it made (If-Match). The same sweep serves prune (listIncompleteUploads/abortIncompleteUpload)
//   for writers killed before they could clean up; an empty blob that could not be deleted (a SAS
//   without d) is marked, hidden from list() and stat(), and swept by prune (listTemporaries).
// - The access tier (`tier`) applies to streamed writes, i.e. the artifacts; manifests, signatures,
//   locks and records stay in the account's default tier, so listing and planning never meet an
//   archived manifest. Reading an archived artifact fails with how to rehydrate it.

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { pipeline, Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { finished, pipeline as pipelineAsync } from 'node:stream/promises';
import {
  AnonymousCredential,
  ContainerClient,
  newPipeline,
  StorageSharedKeyCredential,
  type BlobItem,
  type BlockBlobClient,
  type RequestPolicy,
  type RequestPolicyFactory,
  type WebResource,
} from '@azure/storage-blob';
import { z } from 'zod';
import { ConfigError, StorageError, type StorageErrorReason } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/format.js';
import { isDrawable, type Drawable } from './drawable.js';
import { retryTransient } from './retry.js';
import { byKey, parseDriverOptions, type IncompleteUpload, type ObjectInfo, type PutOptions, type PutResult, type Storage } from './storage.js';

const MiB = 1024 * 1024;
/** Azure's limits for one block blob (service version 2019-12-12 and later). */
export const MAX_BLOCKS = 50_000;
export const MAX_BLOCK_SIZE = 4000 * MiB;
/** Blocks that keep the initial size; from here on the size doubles every GROWTH_STEP blocks. */
const STEADY_BLOCKS = 25_000;
const GROWTH_STEP = 5_000;
/**
 * Blocks of 2 MiB, 4 in flight: 10 MiB of block buffers per streamed put. Measured on a 1 GiB
 * upload to Azurite (npm run bench -- --only upload_azure): 2 in flight reached 0.87x of rclone's
 * throughput (which keeps 16 in flight); 4 of 2 MiB reached 0.94x with a peak RSS of 137 MB; 8 of
 * 4 MiB 0.98x but 164 MB, over the 150 MB target of a backup. With 8 MiB blocks the contract's
 * 192 MiB upload grew the process by 62-70 MiB (docs/storage.md).
 */
const DEFAULT_BLOCK_MIB = 2;
const DEFAULT_PARALLEL_BLOCKS = 4;

/** Blob metadata (names must be C# identifiers: no hyphens) of a streamed blob: the token of the put that wrote it. */
const UPLOAD_TOKEN = 'dbstash_upload';
/** Marks the empty blob that discarding uncommitted blocks makes for an instant; list and stat never show it. */
const DISCARD_MARK = 'dbstash_discard';
/** The emulator's documented account and key (Azurite, UseDevelopmentStorage=true); not a secret. */
const DEV_ACCOUNT = 'devstoreaccount1';
const DEV_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
export const TIERS = ['Hot', 'Cool', 'Cold', 'Archive'] as const;

const duration = (example: string) => z.string().refine((v) => parseDuration(v) !== undefined, `a duration such as ${example}`);

export const azureOptionsSchema = z
  .object({
    /** Blob service endpoint (Azurite, sovereign clouds, private endpoints); default https://<account>.blob.core.windows.net. */
    endpoint: z.string().url().optional(),
    /** Storage account; default AZURE_STORAGE_ACCOUNT or the connection string's AccountName. */
    accountName: z.string().regex(/^[a-z0-9]{3,24}$/, '3 to 24 lower-case letters and digits').optional(),
    /** Account key, normally "${VAR}"; default AZURE_STORAGE_KEY. */
    accountKey: z.string().min(1).optional(),
    /** SAS token (with or without the leading "?"), normally "${VAR}"; default AZURE_STORAGE_SAS_TOKEN. */
    sasToken: z.string().min(1).optional(),
    /** A whole connection string, normally "${VAR}"; default AZURE_STORAGE_CONNECTION_STRING. */
    connectionString: z.string().min(1).optional(),
    /** Access tier of artifacts: Hot, Cool, Cold or Archive; default the account's. */
    tier: z
      .string()
      .transform((v) => TIERS.find((t) => t.toLowerCase() === v.toLowerCase()) ?? v)
      .pipe(z.enum(TIERS))
      .optional(),
    /** Smallest block size in MiB; grows with the artifact's expected size. */
    blockSizeMiB: z.number().int().min(1).max(4000).optional(),
    /** Blocks uploaded in parallel; memory: (parallelBlocks + 1) × block size per streamed put. */
    parallelBlocks: z.number().int().min(1).max(32).optional(),
    /** Tries per request by the SDK, with exponential backoff, before a transient error is reported. */
    maxAttempts: z.number().int().min(1).max(20).optional(),
    /** Longest wait for a connection to the endpoint; default 10s. */
    connectTimeout: duration('10s').optional(),
    /** Longest silence of a connection in the middle of a request or answer; default 30s. */
    idleTimeout: duration('30s').optional(),
    /** Belongs to retention, not to the driver. */
    retention: z.unknown().optional(),
  })
  .strict();

export type AzureOptions = z.infer<typeof azureOptionsSchema>;

export interface AzureLocation {
  container: string;
  /** Blob name prefix without leading or trailing slashes; "" for the container root. */
  prefix: string;
}

export function parseAzureUrl(url: string): AzureLocation {
  const m = /^azure:\/\/([^/?#]*)\/?([^?#]*)$/i.exec(url);
  if (!m || !m[1]) {
    throw new ConfigError(`[azure] "${url.replace(/\?.*$/, '?…')}" is not an azure://container/prefix URL`, { hint: 'e.g. --storage azure://backups/dbstash' });
  }
  if (m[1].includes('@') || m[1].includes(':') || /[?&]sig=/i.test(url)) {
    throw new ConfigError('[azure] credentials do not belong in the storage URL', {
      hint: 'set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or accountKey/sasToken: ${VAR} in the config storage entry',
    });
  }
  if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(m[1])) {
    throw new ConfigError(`[azure] "${m[1]}" is not a valid container name`, {
      hint: 'azure://<container>/<prefix>: the container name has 3 to 63 lower-case letters, digits and single hyphens (the account comes from the credentials or accountName)',
    });
  }
  return { container: m[1], prefix: m[2].replace(/^\/+|\/+$/g, '') };
}

export function parseAzureOptions(options: Record<string, unknown>): AzureOptions {
  const data = parseDriverOptions('azure', azureOptionsSchema, options);
  const o = data;
  if (o.connectionString && (o.accountKey || o.sasToken)) {
    throw new ConfigError('[azure] option "connectionString" replaces "accountKey" and "sasToken"', { hint: 'give the connection string, or the account with its key or a SAS token' });
  }
  if (o.accountKey && o.sasToken) throw new ConfigError('[azure] options "accountKey" and "sasToken" exclude each other', { hint: 'give one of them' });
  if (o.endpoint && (!/^https?:$/.test(new URL(o.endpoint).protocol) || new URL(o.endpoint).search)) {
    throw new ConfigError('[azure] option "endpoint": an http(s) URL without a query', { hint: 'a SAS token goes in sasToken, not in the endpoint' });
  }
  return o;
}

/** What a connection string holds (Azure's documented keys); unknown keys are ignored. */
interface ConnectionParts {
  accountName?: string;
  accountKey?: string;
  sasToken?: string;
  endpoint?: string;
}

export function parseConnectionString(text: string): ConnectionParts {
  const fields = new Map<string, string>();
  for (const part of text.split(';')) {
    const at = part.indexOf('=');
    if (at > 0) fields.set(part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).trim());
  }
  if (fields.get('usedevelopmentstorage')?.toLowerCase() === 'true') {
    return { accountName: DEV_ACCOUNT, accountKey: DEV_KEY, endpoint: `http://127.0.0.1:10000/${DEV_ACCOUNT}` };
  }
  const accountName = fields.get('accountname');
  const suffix = fields.get('endpointsuffix') ?? 'core.windows.net';
  const protocol = fields.get('defaultendpointsprotocol') ?? 'https';
  const endpoint = fields.get('blobendpoint') ?? (accountName ? `${protocol}://${accountName}.blob.${suffix}` : undefined);
  if (!endpoint || !(fields.get('accountkey') || fields.get('sharedaccesssignature'))) {
    // Never echo the string itself: it holds the key.
    throw new StorageError('permanent', '[azure] the connection string names no account (AccountName or BlobEndpoint) or no credential (AccountKey or SharedAccessSignature)', {
      hint: 'copy it again from the portal (Storage account → Access keys → Connection string)',
    });
  }
  return { accountName, accountKey: fields.get('accountkey'), sasToken: fields.get('sharedaccesssignature'), endpoint };
}

/** How requests are authorised, and where they go. */
interface Access {
  endpoint: string;
  accountName?: string;
  accountKey?: string;
  sasToken?: string;
  /** Where the credential came from, for hints. */
  from: string;
}

/** Config entry first, then the environment; an error (never thrown here) when nothing authorises requests. */
function resolveAccess(o: AzureOptions, env: NodeJS.ProcessEnv): Access | StorageError {
  const noCredentials = () =>
    new StorageError('permanent', '[azure] no Azure Storage credentials found', {
      hint: 'set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or connectionString / accountName with accountKey or sasToken: ${VAR} in the storage\'s config entry',
    });
  let parts: ConnectionParts;
  let from: string;
  try {
    if (o.connectionString) [parts, from] = [parseConnectionString(o.connectionString), 'the connectionString option'];
    else if (o.accountKey || o.sasToken) [parts, from] = [{ accountKey: o.accountKey, sasToken: o.sasToken }, o.accountKey ? 'the accountKey option' : 'the sasToken option'];
    else if (env.AZURE_STORAGE_CONNECTION_STRING) [parts, from] = [parseConnectionString(env.AZURE_STORAGE_CONNECTION_STRING), 'AZURE_STORAGE_CONNECTION_STRING'];
    else if (env.AZURE_STORAGE_KEY) [parts, from] = [{ accountKey: env.AZURE_STORAGE_KEY }, 'AZURE_STORAGE_KEY'];
    else if (env.AZURE_STORAGE_SAS_TOKEN) [parts, from] = [{ sasToken: env.AZURE_STORAGE_SAS_TOKEN }, 'AZURE_STORAGE_SAS_TOKEN'];
    else return noCredentials();
  } catch (err) {
    return err as StorageError;
  }
  const accountName = o.accountName ?? parts.accountName ?? env.AZURE_STORAGE_ACCOUNT;
  const endpoint = o.endpoint ?? parts.endpoint ?? (accountName ? `https://${accountName}.blob.core.windows.net` : undefined);
  if (!endpoint || (parts.accountKey && !accountName)) {
    return new StorageError('permanent', `[azure] no storage account given for the key in ${from}`, {
      hint: 'set AZURE_STORAGE_ACCOUNT, or accountName (or endpoint) in the storage\'s config entry',
    });
  }
  const sasToken = parts.sasToken?.replace(/^\?/, '');
  return { endpoint: endpoint.replace(/\/+$/, ''), accountName, accountKey: parts.accountKey, sasToken, from };
}

/** Replaces every credential in a text taken from the SDK or the network with "***". */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 8) out = out.split(s).join('***');
  return out
    .replace(/([?&]sig=)[^&\s"']+/gi, '$1***')
    .replace(/(AccountKey=|SharedAccessSignature=)[^;\s"']+/gi, '$1***');
}

export interface AzureErrorContext {
  loc: AzureLocation;
  /** The endpoint, safe to print (no query). */
  endpoint: string;
  accountName?: string;
  secrets: readonly string[];
  timeouts?: { connectMs: number; idleMs: number };
  /** Where the credential came from ("AZURE_STORAGE_KEY"), for the hint of an authorisation failure. */
  credentialFrom?: string;
}

export interface ClassifyOptions {
  /** A write: a missing container is a configuration error, not a missing object. */
  writing?: boolean;
  /** A conditional publish (If-None-Match: *): any 409 or 412 means the blob exists. */
  conditional?: boolean;
  /** The blob concerned, for the rehydration hint. */
  blob?: string;
}

interface RestErrorLike {
  name?: string;
  code?: string;
  statusCode?: number;
  message?: string;
  details?: { errorCode?: string };
}

const TRANSIENT_CODES = new Set([
  'ServerBusy',
  'OperationTimedOut',
  'InternalError',
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'REQUEST_SEND_ERROR',
  'ERR_STREAM_PREMATURE_CLOSE',
]);
const AUTH_CODES = new Set([
  'AuthenticationFailed',
  'AuthorizationFailure',
  'AuthorizationPermissionMismatch',
  'AuthorizationResourceTypeMismatch',
  'AuthorizationServiceMismatch',
  'AuthorizationProtocolMismatch',
  'AuthorizationSourceIPMismatch',
  'InsufficientAccountPermissions',
  'NoAuthenticationInformation',
  'InvalidAuthenticationInfo',
  'KeyBasedAuthenticationNotPermitted',
]);

/** Maps an SDK or network error to a StorageError whose hint names the fix; no credential survives in it. */
export function classifyAzureError(err: unknown, what: string, ctx: AzureErrorContext, opts: ClassifyOptions = {}): StorageError {
  if (err instanceof StorageError) return err;
  const e = (err ?? {}) as RestErrorLike;
  const status = e.statusCode;
  const code = e.code ?? e.details?.errorCode;
  const where = ` at ${ctx.endpoint}`;
  const location = `azure://${ctx.loc.container}/${ctx.loc.prefix}`;
  const firstLine = redact(String(e.message ?? '').split('\n')[0].trim(), ctx.secrets);
  let reason: StorageErrorReason = 'permanent';
  let detail = firstLine || code || (status ? `HTTP ${status}` : e.name ?? 'unknown error');
  let hint: string | undefined;
  const credentials = `check ${ctx.credentialFrom ?? 'the credentials'} (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or connectionString/accountKey/sasToken in the storage's config entry)`;
  if (code === 'ContainerNotFound') {
    detail = `container "${ctx.loc.container}" does not exist${where}`;
    if (opts.writing) {
      hint = `create it (az storage container create --name ${ctx.loc.container}${ctx.accountName ? ` --account-name ${ctx.accountName}` : ''}) or fix the container in the storage URL`;
    } else reason = 'not-found';
  } else if (code === 'BlobNotFound' || code === 'ResourceNotFound' || status === 404) {
    reason = 'not-found';
    detail = 'no such blob';
  } else if (code === 'BlobArchived') {
    detail = 'it is in the Archive tier and must be rehydrated before it can be read';
    hint =
      `rehydrate it to Hot or Cool (az storage blob set-tier --container-name ${ctx.loc.container} --name ${opts.blob ? fullName(ctx.loc, opts.blob) : '<blob>'} ` +
      `--tier Hot --rehydrate-priority Standard${ctx.accountName ? ` --account-name ${ctx.accountName}` : ''}, or Change tier in the Azure portal); ` +
      'Standard takes up to 15 hours, High under an hour for blobs below 10 GiB; then run the command again';
  } else if (code === 'BlobBeingRehydrated') {
    detail = 'it is being rehydrated from the Archive tier';
    hint = 'wait until its rehydration is done (az storage blob show … --query properties.rehydrationStatus), then run the command again';
  } else if (code === 'BlobAlreadyExists' || code === 'ConditionNotMet' || status === 412 || (opts.conditional && status === 409)) {
    reason = 'exists';
    detail = 'the blob already exists';
  } else if (code === 'InvalidBlockList') {
    detail = 'its staged blocks are gone: another writer of the same key committed or discarded them meanwhile';
    hint = 'run it again; two writers of one key (a concurrent put, or prune sweeping a live upload) do not mix';
  } else if ((code && AUTH_CODES.has(code)) || status === 401 || status === 403) {
    detail =
      code === 'AuthenticationFailed' || code === 'AuthorizationFailure'
        ? `the credentials were refused${where} (${code}): a wrong key, a wrong or expired SAS token, or a clock far off`
        : code === 'AuthorizationSourceIPMismatch'
          ? `requests from this host's address are not allowed${where} (the SAS's sip= or the account's firewall)`
          : `access denied to ${location}${where} (${code ?? `HTTP ${status}`})`;
    hint = `${credentials}; a SAS needs permissions r, w and l on the container (and d where prune runs) and an expiry (se=) in the future; a user delegation SAS also needs its signer to hold Storage Blob Data Contributor on the container`;
  } else if (code === 'ENOTFOUND' || /ENOTFOUND/.test(firstLine)) {
    detail = `cannot resolve the host of ${ctx.endpoint}`;
    hint = 'check the account name (AZURE_STORAGE_ACCOUNT, accountName) or the endpoint';
  } else if ((code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT') && ctx.timeouts && /connectTimeout|idleTimeout/.test(firstLine)) {
    reason = 'transient';
    hint = 'the store is unreachable or hung; if it is only slow, raise connectTimeout/idleTimeout in the storage\'s config entry';
  } else if (
    (code && TRANSIENT_CODES.has(code)) ||
    status === 408 ||
    status === 429 ||
    (status !== undefined && status >= 500) ||
    /socket hang up|ECONNRESET/i.test(firstLine)
  ) {
    reason = 'transient';
    if (code && /^E[A-Z]+$/.test(code)) detail = `${code}: cannot reach ${ctx.endpoint}`;
    hint = 'the store is unreachable or overloaded; retry later';
  } else if (e.name === 'AbortError') {
    reason = 'transient';
    detail = 'the request was cancelled before it completed';
  }
  return new StorageError(reason, `[azure] ${what}: ${detail}`, { cause: err, hint: hint && redact(hint, ctx.secrets) });
}

function fullName(loc: AzureLocation, key: string): string {
  return loc.prefix ? `${loc.prefix}/${key}` : key;
}

/**
 * Size of the first blocks: the configured minimum, or enough for 25,000 blocks to hold the
 * expected size (50,000 blocks: twice the expected size), rounded up to a MiB.
 */
export function chooseBlockSize(sizeHint: number | undefined, minBlockSize: number): number {
  const needed = sizeHint ? Math.ceil(sizeHint / STEADY_BLOCKS) : 0;
  return Math.min(MAX_BLOCK_SIZE, Math.ceil(Math.max(minBlockSize, needed, 1) / MiB) * MiB);
}

/**
 * Size of block `n` (1-based) of an upload whose first blocks have `initial` bytes: `initial` up
 * to block 25,000, then doubling every 5,000 blocks (×32 for 45,001–50,000), capped at Azure's
 * 4,000 MiB: 335,000 × `initial` in all, 655 GiB with 2 MiB blocks. Memory grows with the block
 * size only for an artifact larger than its estimate.
 */
export function blockSizeFor(n: number, initial: number): number {
  const steps = n <= STEADY_BLOCKS ? 0 : Math.ceil((n - STEADY_BLOCKS) / GROWTH_STEP);
  return Math.min(MAX_BLOCK_SIZE, initial * 2 ** steps);
}

/** Block id `n` of the writer `token`: base64 of a fixed-length text, so every id of a blob has one length. */
export function blockId(token: string, n: number): string {
  return Buffer.from(`${token}${String(n).padStart(6, '0')}`).toString('base64');
}

interface Block {
  number: number;
  id: string;
  /** The whole buffer, returned to the free list once the block's request has settled. */
  buffer: Buffer;
  body: Buffer;
}

interface BlockUploadOptions {
  label: string;
  token: string;
  /** Size of the first blocks (chooseBlockSize()). */
  blockSize: number;
  parallel: number;
  /** Stages one block; `body` makes a fresh stream of it for each try. */
  stage(id: string, body: () => Readable, length: number, signal: AbortSignal): Promise<unknown>;
  /** Publishes the staged blocks (Put Block List); resolves to the blob's ETag. Never cancelled. */
  commit(ids: string[]): Promise<string | undefined>;
  /** Publishes an object smaller than one block (Put Blob). Never cancelled. */
  putWhole(body: Buffer): Promise<string | undefined>;
  /** Removes the uncommitted blocks of a blob that was never committed. */
  discard(): Promise<void>;
  classify(err: unknown, what: string): StorageError;
  /** Attempts per block after the SDK's own retries, for transient errors (default 3). */
  attempts?: number;
}

/**
 * A block's bytes as a stream of 64 KiB views (no copy), paced by the connection; `onSent` runs
 * once the connection has taken the last of them. (A Buffer body would count as sent at once.)
 */
function bodyStream(body: Buffer, onSent: () => void): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= body.length) {
        onSent();
        this.push(null);
        return;
      }
      const end = Math.min(body.length, offset + 64 * 1024);
      this.push(body.subarray(offset, end));
      offset = end;
    },
  });
}

function destroyedError(): Error {
  return Object.assign(new Error('the upload was cancelled before it completed'), { name: 'AbortError' });
}

/**
 * A Writable that stages what is written into it as blocks and publishes them when it finishes.
 * At most `parallel + 1` block buffers exist, allocated when first needed and reused: one is being
 * filled, the others are in flight; while all are busy the write callback is held, so the store
 * paces the stream. On failure or destroy(), the block requests still sending are cancelled, all
 * are awaited, then the staged blocks are discarded; the publishing request is never cancelled (its
 * outcome must be known) and `published` tells the caller to remove a blob published all the same.
 */
export class BlockUpload extends Writable {
  bytes = 0;
  /** The blob's ETag once published. */
  etag: string | undefined;
  published = false;
  readonly stats = { peakBuffers: 0, blocks: 0, peakInFlight: 0 };

  private readonly o: BlockUploadOptions;
  private readonly maxBuffers: number;
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private blockNumber = 0;
  private current: Block | undefined;
  private filled = 0;
  private ready: Block | undefined;
  private inFlight = 0;
  private readonly tasks = new Set<Promise<void>>();
  private readonly ids: string[] = [];
  /** A Put Block was sent: the blob may hold uncommitted blocks of ours. */
  private staged = false;
  /** Stops the retries once the upload has failed. */
  private readonly requests = new AbortController();
  /** Block requests in flight; `sent` once their whole body was handed to the connection. */
  private readonly live = new Set<{ controller: AbortController; sent: boolean }>();
  private failure: Error | undefined;
  private resume: (() => void) | undefined;
  /** drawFrom() waiting for a free buffer (or for the end). */
  private wake: (() => void) | undefined;
  private drained: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private publishing: Promise<unknown> | undefined;

  constructor(options: BlockUploadOptions) {
    super({ highWaterMark: 64 * 1024 });
    this.o = options;
    this.maxBuffers = options.parallel + 1;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.fill(chunk, 0, done);
  }

  private fill(chunk: Buffer, offset: number, done: (err?: Error | null) => void): void {
    while (offset < chunk.length) {
      if (this.failure) return done(this.failure);
      if (!this.current) {
        const opened = this.openBlock();
        if (opened instanceof Error) return done(opened);
        if (!opened) {
          this.resume = () => this.fill(chunk, offset, done);
          return;
        }
      }
      const block = this.current!;
      const n = chunk.copy(block.buffer, this.filled, offset, Math.min(chunk.length, offset + block.body.length - this.filled));
      this.added(n);
      offset += n;
    }
    done();
  }

  /**
   * Fills the block buffers straight from `source` (no chunk of its own in between), then
   * publishes: the same blocks, requests and clean-up as a stream written into the upload. Rejects
   * when the source, a block or the publish fails; the upload is destroyed then, and the caller
   * waits for its 'close' as for a failed pipeline. `source` is destroyed either way.
   */
  async drawFrom(source: Drawable, signal?: AbortSignal): Promise<void> {
    const onAbort = () => this.destroy(abortError(signal!));
    signal?.addEventListener('abort', onAbort, { once: true });
    // Listens from the start: an error the upload emits (a block failed, an abort) is this call's.
    // A failed upload also ends a read still under way.
    const settled = finished(this);
    settled.catch(() => source.destroy());
    try {
      if (signal?.aborted) onAbort();
      for (;;) {
        if (this.failure) throw this.failure;
        if (!this.current) {
          const opened = this.openBlock();
          if (opened instanceof Error) throw opened;
          if (!opened) {
            // A buffer comes free when a block's request settles; destroy() wakes us too.
            await new Promise<void>((resolve) => (this.wake = resolve));
            continue;
          }
        }
        const block = this.current!;
        const n = await source.draw(block.buffer, this.filled, block.body.length - this.filled);
        if (this.failure) throw this.failure;
        if (n === 0) break;
        this.added(n);
      }
      this.end();
      await settled;
    } catch (err) {
      this.destroy(this.failure ?? (err as Error));
      throw this.failure ?? err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      source.destroy();
    }
  }

  /** Makes the next block current: undefined while every buffer is in use, an error past Azure's block limit. */
  private openBlock(): Block | StorageError | undefined {
    if (this.blockNumber === MAX_BLOCKS) {
      return new StorageError('permanent', `[azure] ${this.o.label}: the artifact outgrew ${MAX_BLOCKS} blocks (${this.bytes} bytes so far)`, {
        hint: 'set a larger blockSizeMiB in the storage\'s config entry',
      });
    }
    const block = this.nextBlock();
    if (block) {
      this.current = block;
      this.filled = 0;
    }
    return block;
  }

  /** `n` more bytes are in the current block; a full block goes out. */
  private added(n: number): void {
    this.filled += n;
    this.bytes += n;
    if (this.filled === this.current!.body.length) this.seal();
  }

  private nextBlock(): Block | undefined {
    const size = blockSizeFor(this.blockNumber + 1, this.o.blockSize);
    let buffer = this.free.pop();
    if (buffer && buffer.length < size) {
      buffer = undefined; // outgrown: replaced by a larger one, so the count stays bounded
      this.allocated--;
    }
    if (!buffer) {
      if (this.allocated >= this.maxBuffers) return undefined;
      buffer = Buffer.allocUnsafeSlow(size);
      this.allocated++;
      this.stats.peakBuffers = Math.max(this.stats.peakBuffers, this.allocated);
    }
    this.blockNumber++;
    const id = blockId(this.o.token, this.blockNumber);
    this.ids.push(id);
    return { number: this.blockNumber, id, buffer, body: buffer.subarray(0, size) };
  }

  private seal(): void {
    const block = this.current!;
    block.body = block.buffer.subarray(0, this.filled);
    this.current = undefined;
    this.filled = 0;
    this.stats.blocks++;
    if (this.inFlight < this.o.parallel) this.send(block);
    else this.ready = block;
  }

  private send(block: Block): void {
    this.inFlight++;
    this.stats.peakInFlight = Math.max(this.stats.peakInFlight, this.inFlight);
    this.staged = true;
    const what = `cannot upload block ${block.number} of ${this.o.label}`;
    const attempt = async () => {
      const request = { controller: new AbortController(), sent: false };
      this.live.add(request);
      try {
        await this.o.stage(block.id, () => bodyStream(block.body, () => (request.sent = true)), block.body.length, request.controller.signal);
      } catch (err) {
        throw this.o.classify(err, what);
      } finally {
        this.live.delete(request);
      }
    };
    const task = retryTransient(what, attempt, { attempts: this.o.attempts, signal: this.requests.signal }).then(
      () => this.blockDone(block),
      (err: unknown) => {
        this.inFlight--;
        this.fail(err);
      },
    );
    this.tasks.add(task);
    void task.finally(() => this.tasks.delete(task));
  }

  private blockDone(block: Block): void {
    this.inFlight--;
    this.free.push(block.buffer);
    if (this.failure) return;
    if (this.ready) {
      const next = this.ready;
      this.ready = undefined;
      this.send(next);
    }
    if (this.resume) {
      const resume = this.resume;
      this.resume = undefined;
      resume();
    }
    this.wakeUp();
    if (this.inFlight === 0 && !this.ready) this.drained?.resolve();
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private fail(err: unknown): void {
    if (this.failure) return;
    this.failure = err instanceof Error ? err : new Error(String(err));
    this.drained?.reject(this.failure);
    this.destroy(this.failure);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.finish().then(
      () => done(),
      (err: Error) => done(err),
    );
  }

  private async finish(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.stats.blocks === 0) {
      const body = this.current ? this.current.buffer.subarray(0, this.filled) : Buffer.alloc(0);
      await this.publish(this.o.putWhole(body));
      return;
    }
    if (this.current) this.seal();
    if (this.inFlight > 0 || this.ready) await new Promise<void>((resolve, reject) => (this.drained = { resolve, reject }));
    if (this.failure) throw this.failure;
    await this.publish(this.o.commit(this.ids));
  }

  private async publish(request: Promise<string | undefined>): Promise<void> {
    this.publishing = request;
    this.etag = await request;
    this.published = true;
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (this.published) return done(err);
    this.failure ??= err ?? destroyedError();
    this.resume = undefined;
    this.wakeUp();
    this.ready = undefined;
    this.current = undefined;
    this.drained?.reject(this.failure);
    this.requests.abort(this.failure);
    // A request still sending its body is cancelled: the service never gets the whole block and
    // stores nothing. One whose body is all out may land even if cancelled now (after the discard
    // below, leaving a block behind), so it is let finish; only the answer is left to wait for.
    for (const request of this.live) if (!request.sent) request.controller.abort(this.failure);
    this.cleanUp().then(
      () => done(err),
      () => done(err),
    );
  }

  /** Waits for every request in flight to settle, then discards the staged blocks unless the blob was published. */
  private async cleanUp(): Promise<void> {
    await Promise.allSettled([...this.tasks, this.publishing]);
    if (this.published || !this.staged) return;
    await this.o.discard();
  }
}

/** Counts (and for buffered objects hashes) what a download delivers; a short or altered body is an error. */
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
      return done(new StorageError('transient', `[azure] ${this.label}: body ended after ${this.bytes} of ${this.expectedSize} bytes`));
    }
    if (this.hash && this.hash.digest('hex') !== this.expectedSha256) {
      return done(new StorageError('permanent', `[azure] ${this.label}: SHA-256 differs from the one stored at upload; the store altered the blob`));
    }
    done();
  }
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  return reason instanceof Error ? reason : Object.assign(new Error('the operation was aborted'), { name: 'AbortError' });
}

/**
 * An HTTP(S) agent whose sockets fail with ETIMEDOUT when they do not connect within connectMs or
 * fall silent for idleMs mid-request (the SDK has neither timeout): an endpoint that accepts and
 * never answers fails the request instead of holding the backup, and a Ctrl-C, for ever.
 */
function timeoutAgent(secure: boolean, connectMs: number, idleMs: number): http.Agent {
  const agent = secure ? new https.Agent({ keepAlive: true, timeout: idleMs }) : new http.Agent({ keepAlive: true, timeout: idleMs });
  const base = agent as unknown as { createConnection(options: object, callback?: unknown): Socket };
  const create = base.createConnection.bind(agent);
  base.createConnection = (options: object, callback?: unknown) => {
    const socket = create(options, callback);
    const timeout = (message: string) => Object.assign(new Error(message), { code: 'ETIMEDOUT' });
    const connecting = setTimeout(() => socket.destroy(timeout(`could not connect within ${formatDuration(connectMs)} (connectTimeout)`)), connectMs);
    socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(connecting));
    socket.once('close', () => clearTimeout(connecting));
    // A socket that times out between requests has no request to report to: its error goes nowhere.
    socket.on('error', () => {});
    socket.setTimeout(idleMs);
    socket.on('timeout', () => socket.destroy(timeout(`no answer for ${formatDuration(idleMs)} (idleTimeout)`)));
    return socket;
  };
  return agent;
}

/** A request policy (the SDK's public extension point) that sends every request through `agent`. */
function agentPolicy(agent: http.Agent): RequestPolicyFactory {
  return {
    create: (next: RequestPolicy): RequestPolicy => ({
      sendRequest(request: WebResource) {
        request.agent = agent;
        return next.sendRequest(request);
      },
    }),
  };
}

/** Blob metadata names are C# identifiers: stored lower-case, hyphens as underscores. */
function metadataOf(metadata: Record<string, string> | undefined, key: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(metadata ?? {})) {
    const stored = name.toLowerCase().replace(/-/g, '_');
    if (!/^[a-z_][a-z0-9_]*$/.test(stored)) {
      throw new StorageError('permanent', `[azure] cannot write ${key}: metadata name "${name}" is not valid on Azure (letters, digits and underscores)`);
    }
    out[stored] = value;
  }
  return out;
}

export function createAzureStorage(url: string, rawOptions: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): Storage {
  const loc = parseAzureUrl(url);
  const o = parseAzureOptions(rawOptions);
  const access = resolveAccess(o, env);
  const timeouts = {
    connectMs: parseDuration(o.connectTimeout ?? '10s')!,
    idleMs: parseDuration(o.idleTimeout ?? '30s')!,
  };
  const endpoint = access instanceof StorageError ? (o.endpoint ?? 'Azure') : access.endpoint;
  const ctx: AzureErrorContext = {
    loc,
    endpoint,
    accountName: access instanceof StorageError ? o.accountName : access.accountName,
    secrets: [o.accountKey, o.sasToken, o.connectionString, env.AZURE_STORAGE_KEY, env.AZURE_STORAGE_SAS_TOKEN, env.AZURE_STORAGE_CONNECTION_STRING, ...(access instanceof StorageError ? [] : [access.accountKey, access.sasToken])].filter(
      (s): s is string => !!s,
    ),
    timeouts,
    credentialFrom: access instanceof StorageError ? undefined : access.from,
  };
  const classify = (err: unknown, what: string, opts?: ClassifyOptions) => classifyAzureError(err, what, ctx, opts);
  const minBlockSize = (o.blockSizeMiB ?? DEFAULT_BLOCK_MIB) * MiB;
  const parallel = o.parallelBlocks ?? DEFAULT_PARALLEL_BLOCKS;
  const location = `azure://${loc.container}${loc.prefix ? `/${loc.prefix}` : ''}`;

  let agent: http.Agent | undefined;
  let containerClient: ContainerClient | undefined;
  /** The container's client; every operation fails here, classified, when no credentials were found. */
  function container(): ContainerClient {
    if (access instanceof StorageError) throw access;
    if (!containerClient) {
      agent = timeoutAgent(access.endpoint.startsWith('https:'), timeouts.connectMs, timeouts.idleMs);
      const credential = access.accountKey ? new StorageSharedKeyCredential(access.accountName!, access.accountKey) : new AnonymousCredential();
      const pipe = newPipeline(credential, {
        retryOptions: { maxTries: o.maxAttempts ?? 3, retryDelayInMs: 500, maxRetryDelayInMs: 8_000 },
        userAgentOptions: { userAgentPrefix: 'dbstash' },
      });
      pipe.factories.push(agentPolicy(agent));
      containerClient = new ContainerClient(`${access.endpoint}/${loc.container}${access.sasToken && !access.accountKey ? `?${access.sasToken}` : ''}`, pipe);
    }
    return containerClient;
  }
  const blobClient = (key: string): BlockBlobClient => container().getBlockBlobClient(fullName(loc, key));

  async function head(key: string, opts: { signal?: AbortSignal } = {}): Promise<ObjectInfo | undefined> {
    try {
      const res = await blobClient(key).getProperties({ abortSignal: opts.signal });
      if (res.metadata?.[DISCARD_MARK]) return undefined;
      return { key, size: res.contentLength ?? 0, modifiedAt: res.lastModified ?? new Date(0), metadata: res.metadata ?? {} };
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const e = classify(err, `cannot stat ${key}`);
      if (e.reason === 'not-found') return undefined;
      throw e;
    }
  }

  /**
   * Discards the uncommitted blocks of `key` if the blob was never committed: an empty Put Block
   * List with If-None-Match: * drops them (and refuses a committed blob, which is left alone), then
   * the empty blob it made is deleted if it is still that one. Idempotent.
   */
  async function discardUncommitted(key: string): Promise<void> {
    const blob = blobClient(key);
    let etag: string | undefined;
    try {
      etag = (await blob.commitBlockList([], { conditions: { ifNoneMatch: '*' }, metadata: { [DISCARD_MARK]: '1' }, abortSignal: AbortSignal.timeout(timeouts.connectMs + timeouts.idleMs) })).etag;
    } catch (err) {
      const e = classify(err, `cannot discard the uncommitted blocks of ${key}`, { conditional: true });
      if (e.reason === 'exists' || e.reason === 'not-found') return;
      throw e;
    }
    try {
      await blob.delete({ conditions: { ifMatch: etag }, abortSignal: AbortSignal.timeout(timeouts.connectMs + timeouts.idleMs) });
    } catch (err) {
      const e = classify(err, `cannot delete the empty blob that discarded the blocks of ${key}`);
      if (e.reason !== 'not-found' && e.reason !== 'exists') throw e;
    }
  }

  /** Streams into staged blocks (BlockUpload) and returns the bytes stored. */
  async function uploadStream(key: string, source: Readable, opts: PutOptions): Promise<number> {
    const blob = blobClient(key);
    const token = randomBytes(8).toString('hex');
    const publishOptions = {
      metadata: { ...metadataOf(opts.metadata, key), [UPLOAD_TOKEN]: token },
      ...(opts.exclusive ? { conditions: { ifNoneMatch: '*' } } : {}),
      ...(o.tier ? { tier: o.tier } : {}),
    };
    const what = `cannot write ${key} to ${location}`;
    const publishError = async (err: unknown) => {
      const e = classify(err, what, { writing: true, conditional: opts.exclusive, blob: key });
      // A rival's publish drops our uncommitted blocks: for an exclusive put that is a lost race.
      if (opts.exclusive && /staged blocks are gone/.test(e.message) && (await head(key).catch(() => undefined))) {
        return new StorageError('exists', `[azure] ${key} already exists`, { cause: err });
      }
      return e;
    };
    const upload = new BlockUpload({
      label: key,
      token,
      blockSize: chooseBlockSize(opts.sizeHint, minBlockSize),
      parallel,
      stage: (id, body, length, signal) => blob.stageBlock(id, body, length, { abortSignal: signal }),
      commit: async (ids) => {
        try {
          return (await blob.commitBlockList(ids, publishOptions)).etag;
        } catch (err) {
          throw await publishError(err);
        }
      },
      putWhole: async (body) => {
        try {
          return (await blob.upload(body, body.length, publishOptions)).etag;
        } catch (err) {
          throw await publishError(err);
        }
      },
      discard: () => discardUncommitted(key),
      classify: (err, w) => classify(err, w, { writing: true }),
    });
    try {
      if (isDrawable(source)) await upload.drawFrom(source, opts.signal);
      else await pipelineAsync(source, upload, opts.signal ? { signal: opts.signal } : {});
      if (opts.signal?.aborted) throw abortError(opts.signal);
    } catch (err) {
      // The pipeline settles as soon as a stream fails, before the upload's own cleanup has run:
      // the put rejects only once the staged blocks are discarded.
      upload.destroy();
      if (!upload.closed) await once(upload, 'close');
      if (upload.published) await blob.delete({ conditions: { ifMatch: upload.etag } }).catch(() => {});
      if (!opts.signal?.aborted && err instanceof StorageError && err.reason === 'exists') {
        const stored = await head(key).catch(() => undefined);
        if (stored?.metadata?.[UPLOAD_TOKEN] === token) return upload.bytes;
      }
      throw opts.signal?.aborted ? abortError(opts.signal) : err;
    }
    return upload.bytes;
  }

  async function put(key: string, data: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    const what = `cannot write ${key} to ${location}`;
    try {
      if (data instanceof Uint8Array && data.length <= minBlockSize) {
        const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        const sha256 = createHash('sha256').update(body).digest('hex');
        await blobClient(key).upload(body, body.length, {
          metadata: { ...metadataOf(opts.metadata, key), sha256 },
          ...(opts.exclusive ? { conditions: { ifNoneMatch: '*' } } : {}),
          abortSignal: opts.signal,
        });
        return { size: body.length };
      }
      // A rival that holds the key already: fail before uploading the whole artifact.
      if (opts.exclusive && (await head(key, { signal: opts.signal }))) throw new StorageError('exists', `[azure] ${key} already exists`);
      const source = data instanceof Uint8Array ? Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)], { objectMode: false }) : data;
      return { size: await uploadStream(key, source, opts) };
    } catch (err) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      if ((err as Error).name === 'AbortError') throw err;
      throw classify(err, what, { writing: true, conditional: opts.exclusive, blob: key });
    }
  }

  async function get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    try {
      const res = await blobClient(key).download(0, undefined, { abortSignal: opts.signal, maxRetryRequests: o.maxAttempts ?? 3 });
      const body = res.readableStreamBody as Readable | undefined;
      if (!body) throw new StorageError('permanent', `[azure] cannot read ${key}: the SDK returned no body stream`);
      const check = new ReadCheck(res.contentLength, res.metadata?.sha256, `reading ${key}`);
      pipeline(body, check, (err) => {
        if (err && !check.destroyed) check.destroy(opts.signal?.aborted ? abortError(opts.signal) : classify(err, `reading ${key}`, { blob: key }));
      });
      return check;
    } catch (err) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw classify(err, `cannot read ${key}`, { blob: key });
    }
  }

  async function listBlobs(prefix: string, opts: { signal?: AbortSignal; uncommitted?: boolean } = {}): Promise<BlobItem[]> {
    const out: BlobItem[] = [];
    const pages = container()
      .listBlobsFlat({ prefix: fullName(loc, prefix), includeMetadata: true, includeUncommitedBlobs: opts.uncommitted, abortSignal: opts.signal })
      .byPage({ maxPageSize: 5000 });
    for await (const page of pages) out.push(...page.segment.blobItems);
    return out;
  }

  const strip = (name: string) => name.slice(loc.prefix ? loc.prefix.length + 1 : 0);

  async function list(prefix: string, opts: { signal?: AbortSignal; temporaries?: boolean } = {}): Promise<ObjectInfo[]> {
    try {
      return (await listBlobs(prefix, opts))
        .filter((b) => !b.metadata?.[DISCARD_MARK] === !opts.temporaries)
        .map((b) => ({ key: strip(b.name), size: b.properties.contentLength ?? 0, modifiedAt: b.properties.lastModified ?? new Date(0), metadata: b.metadata ?? {} }))
        .sort(byKey);
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const e = classify(err, `cannot list ${location}/${prefix}`);
      if (e.reason === 'not-found') return [];
      throw e;
    }
  }

  /**
   * Blobs under prefix that hold only uncommitted blocks: in the listing that includes uncommitted
   * blobs and not in the one that does not (listed in that order, so a blob committed in between
   * counts as committed). The upload id names the writers, from the tokens in the block ids.
   */
  async function listIncompleteUploads(prefix: string): Promise<IncompleteUpload[]> {
    const out: IncompleteUpload[] = [];
    try {
      const all = await listBlobs(prefix, { uncommitted: true });
      const committed = new Set((await listBlobs(prefix)).map((b) => b.name));
      for (const b of all) {
        if (committed.has(b.name)) continue;
        let ids: string[];
        try {
          ids = ((await blobClient(strip(b.name)).getBlockList('uncommitted')).uncommittedBlocks ?? []).map((x) => x.name);
        } catch (err) {
          if (classify(err, '').reason === 'not-found') continue;
          throw err;
        }
        if (ids.length === 0) continue;
        const writers = [...new Set(ids.map((id) => /^([0-9a-f]{16})\d{6}$/.exec(Buffer.from(id, 'base64').toString('latin1'))?.[1] ?? 'other'))];
        out.push({ key: strip(b.name), uploadId: `blocks:${writers.join(',')}`, startedAt: b.properties.createdOn ?? b.properties.lastModified ?? new Date(0) });
      }
    } catch (err) {
      const e = classify(err, `cannot list the uncommitted blobs under ${location}/${prefix}`);
      if (e.reason === 'not-found') return [];
      throw e;
    }
    return out.sort((a, b) => byKey(a, b) || a.startedAt.getTime() - b.startedAt.getTime());
  }

  async function del(key: string): Promise<void> {
    try {
      await blobClient(key).delete({ deleteSnapshots: 'include' });
    } catch (err) {
      const e = classify(err, `cannot delete ${key}`);
      if (e.reason !== 'not-found') throw e;
    }
  }

  /** What a SAS token says of itself (permissions, expiry): a preflight can tell before any request. */
  function checkSas(): void {
    if (access instanceof StorageError || !access.sasToken || access.accountKey) return;
    const sas = new URLSearchParams(access.sasToken);
    const expiry = sas.get('se') ? new Date(sas.get('se')!) : undefined;
    if (expiry && !Number.isNaN(expiry.getTime()) && expiry.getTime() <= Date.now()) {
      throw new StorageError('permanent', `[azure] the SAS token for ${location} expired at ${expiry.toISOString()}`, { hint: `make a new one and put it in ${access.from}` });
    }
    // d is not required: a backup host may hold a SAS that cannot delete (prune runs elsewhere).
    const granted = sas.get('sp') ?? '';
    const missing = ['r', 'w', 'l'].filter((p) => !granted.includes(p));
    if (granted && missing.length) {
      throw new StorageError('permanent', `[azure] the SAS token for ${location} lacks permission${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`, {
        hint: `dbstash needs r (read), w (write) and l (list) on the container, and d (delete) where prune runs: make a new SAS and put it in ${access.from}`,
      });
    }
  }

  return {
    url: location,
    properties: { kind: 'azure', local: false, maxParallelism: 8 },
    put,
    get,
    stat: head,
    list,
    delete: del,
    // The empty blobs of discards whose delete failed (a SAS without d): prune removes them.
    listTemporaries: (prefix) => list(prefix, { temporaries: true }),
    listIncompleteUploads,
    abortIncompleteUpload: (upload) => discardUncommitted(upload.key),
    async check(signal?: AbortSignal) {
      checkSas();
      const deadline = AbortSignal.timeout(timeouts.connectMs + timeouts.idleMs);
      try {
        // A prefix that matches nothing: proves container, credentials and list permission in one
        // small request. Bounded as a whole, so a hung endpoint cannot hold up the backup.
        const pages = container()
          .listBlobsFlat({ prefix: fullName(loc, '.dbstash-check/'), abortSignal: signal ? AbortSignal.any([deadline, signal]) : deadline })
          .byPage({ maxPageSize: 1 });
        await pages.next();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (deadline.aborted) {
          throw new StorageError('permanent', `[azure] no answer at ${endpoint} for ${location} within ${formatDuration(timeouts.connectMs + timeouts.idleMs)}`, {
            cause: err,
            hint: 'the store is unreachable or hung; if it is only slow, raise connectTimeout/idleTimeout in the storage\'s config entry',
          });
        }
        throw classify(err, `cannot use ${location}`, { writing: true });
      }
    },
    async close() {
      agent?.destroy();
    },
  };
}
