// The storage interface: opaque keys ("<database>/<file>") mapped to immutable byte streams.
// It knows nothing of databases, compression or manifests.
//
// Contract every driver MUST keep (checked by test/contract/storage.contract.ts):
// - put() publishes atomically: until it resolves, get/stat/list see nothing under the key, and
//   when it rejects (or its signal aborts) nothing is left under the key nor as a visible temp.
// - put() with `exclusive: true` fails with StorageError('exists') when the key already exists,
//   and of two concurrent exclusive puts at most one succeeds (used for locks and to keep
//   backups immutable).
// - get() of a missing key rejects with StorageError('not-found'); a short read MUST surface as a
//   stream error, never as a clean end.
// - list(prefix) returns every published key that starts with prefix, temporaries excluded.
// - delete() of a missing key succeeds (idempotent: it may be called again on retry).
// - Every failure is a StorageError classified as not-found / exists / transient / permanent.

import type { Readable } from 'node:stream';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.js';

export interface ObjectInfo {
  key: string;
  size: number;
  modifiedAt: Date;
  /** Driver metadata (S3 user metadata, e.g. sha256); may be empty. */
  metadata?: Record<string, string>;
  /** Until when the store refuses to delete or overwrite it (S3 Object Lock), when stat() knows. */
  retainUntil?: Date;
  /** The kind of that retention ("governance", "compliance"). */
  retentionMode?: string;
}

export interface PutOptions {
  signal?: AbortSignal;
  /** Refuse to replace an existing key. */
  exclusive?: boolean;
  /** Expected size, when known, so a driver can size multipart parts. */
  sizeHint?: number;
  metadata?: Record<string, string>;
  /**
   * A part of a backup (artifact, signature, manifest): a driver that can make objects immutable
   * (S3 Object Lock) does so for these, never for locks, leases or records.
   */
  retain?: boolean;
}

/** A multipart upload that was started and neither completed nor aborted (S3). */
export interface IncompleteUpload {
  key: string;
  uploadId: string;
  startedAt: Date;
}

export interface PutResult {
  size: number;
}

export interface StorageProperties {
  /** Human-readable kind: "local", "s3", "memory". */
  kind: string;
  /** Objects written for backups are made immutable for a while (S3 Object Lock): "governance, 30 days". */
  immutable?: string;
  /** A local file system: free space can be checked before a backup. */
  local: boolean;
  /** Concurrent puts the driver copes with well. */
  maxParallelism: number;
}

export interface Storage {
  /** The location as given, without secrets: safe to print and store. */
  readonly url: string;
  readonly properties: StorageProperties;
  put(key: string, data: Readable | Uint8Array, opts?: PutOptions): Promise<PutResult>;
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Readable>;
  /** An abort of `signal` ends a request in flight at once (drivers that make requests). */
  stat(key: string, opts?: { signal?: AbortSignal }): Promise<ObjectInfo | undefined>;
  list(prefix: string, opts?: { signal?: AbortSignal }): Promise<ObjectInfo[]>;
  delete(key: string): Promise<void>;
  /** Temporaries left behind by interrupted puts (never listed by list()), so prune can sweep them with delete(). */
  listTemporaries?(prefix: string): Promise<ObjectInfo[]>;
  /**
   * Multipart uploads started under prefix and never completed nor aborted (a process killed
   * mid-upload, or an abort that could not reach the store): invisible to list(), yet stored and
   * billed. Prune aborts the old ones.
   */
  listIncompleteUploads?(prefix: string): Promise<IncompleteUpload[]>;
  /** Aborts one, discarding its parts; an upload that no longer exists is not an error (idempotent). */
  abortIncompleteUpload?(upload: IncompleteUpload): Promise<void>;
  /** Bytes free at the destination, where the driver can tell. */
  freeSpace?(): Promise<number | undefined>;
  /**
   * Files and folders of the stash (of one folder, or all) that others may read although the
   * stash's modes say they may not, each with the command that fixes it (local storage).
   */
  permissionProblems?(folder?: string): Promise<string[]>;
  /** Checks that the destination exists and is writable (preflight); an abort of `signal` ends it at once. */
  check?(signal?: AbortSignal): Promise<void>;
  close?(): Promise<void>;
}

export type StorageFactory = (url: string, options: Record<string, unknown>) => Promise<Storage> | Storage;

const registry = new Map<string, StorageFactory>();

/** Drivers register themselves by URL scheme ("file", "s3", "memory"). */
export function registerStorage(scheme: string, factory: StorageFactory): void {
  registry.set(scheme, factory);
}

export function storageSchemes(): string[] {
  return [...registry.keys()];
}

export function storageFactory(scheme: string): StorageFactory | undefined {
  return registry.get(scheme);
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(chunks);
}

export async function getBytes(storage: Storage, key: string): Promise<Buffer> {
  return readAll(await storage.get(key));
}

/**
 * Orders keys by UTF-16 code units, the same on every machine. (localeCompare would depend on
 * the locale, and its collator costs ~10 ms to set up on the first call of a short-lived run.)
 */
export function byKey(a: { key: string }, b: { key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/**
 * An exclusive put of a small object that recognises its own write: when the key already holds
 * exactly these bytes, the put succeeded before (a retry after a lost answer, on S3 inside the SDK
 * or in the retry wrapper) and this is not a conflict. Anything else under the key is 'exists'.
 */
export async function putOwnBytes(storage: Storage, key: string, bytes: Uint8Array, opts: Omit<PutOptions, 'exclusive'> = {}): Promise<void> {
  try {
    await storage.put(key, bytes, { ...opts, exclusive: true });
  } catch (err) {
    if ((err as { reason?: string }).reason !== 'exists') throw err;
    const stored = await getBytes(storage, key).catch(() => undefined);
    if (!stored || !stored.equals(Buffer.from(bytes))) throw err;
  }
}

/**
 * A driver's options from its storage entry, checked by its schema: the first problem as one
 * line naming the option, with every valid option in the hint (retention belongs to prune).
 */
export function parseDriverOptions<S extends z.ZodObject>(driver: string, schema: S, options: Record<string, unknown>): z.infer<S> {
  const parsed = schema.safeParse(options);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0] as { path: PropertyKey[]; message: string; keys?: string[] };
  const key = issue.keys?.length ? issue.keys.join(', ') : issue.path.map(String).join('.');
  throw new ConfigError(`[${driver}] option "${key}": ${issue.message}`, {
    hint: `valid options: ${Object.keys(schema.shape).filter((k) => k !== 'retention').join(', ')} (docs/storage.md)`,
  });
}
