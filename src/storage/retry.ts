// Retry wrapper for any Storage: an operation that fails with a *transient* StorageError is tried
// again after an exponential, jittered delay. It relies on the drivers' error classification only,
// so one wrapper serves every driver. What can be retried safely:
// - stat, list, delete, listing and aborting incomplete uploads (idempotent), and opening a get
//   (the stream itself is not resumed);
// - put of a buffer (the bytes are still at hand); a streamed put cannot be replayed, so it is
//   passed through: drivers retry its individual requests themselves, with retryTransient() (the
//   S3 driver's multipart parts, each re-sent from the buffer it still holds).

import { StorageError } from '../core/errors.js';
import type { PutOptions, Storage } from './storage.js';

export interface RetryOptions {
  /** Total attempts per operation (first try included). */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  onRetry?: (info: { operation: string; attempt: number; delayMs: number; error: StorageError }) => void;
}

function isTransient(err: unknown): err is StorageError {
  return err instanceof StorageError && err.reason === 'transient';
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `run` until it succeeds, fails with anything but a transient StorageError, or has been
 * tried `attempts` times; waits an exponential, jittered delay between attempts. `run` MUST be
 * safe to call again (idempotent, or re-sending bytes it still holds). An aborted `signal` stops
 * the waiting and the retrying.
 */
export async function retryTransient<T>(operation: string, run: () => Promise<T>, opts: RetryOptions & { signal?: AbortSignal } = {}): Promise<T> {
  const attempts = opts.attempts ?? 3;
  const base = opts.baseDelayMs ?? 500;
  const max = opts.maxDelayMs ?? 8_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (err) {
      if (!isTransient(err) || attempt >= attempts || opts.signal?.aborted) throw err;
      const delayMs = Math.round(Math.min(max, base * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2));
      opts.onRetry?.({ operation, attempt, delayMs, error: err });
      await sleep(delayMs, opts.signal);
    }
  }
}

export function withRetry(storage: Storage, opts: RetryOptions = {}): Storage {
  const retrying = <T>(operation: string, run: () => Promise<T>, signal?: AbortSignal) => retryTransient(operation, run, { ...opts, signal });

  return {
    ...storage,
    url: storage.url,
    properties: storage.properties,
    put: (key, data, putOpts: PutOptions = {}) =>
      data instanceof Uint8Array ? retrying(`put ${key}`, () => storage.put(key, data, putOpts), putOpts.signal) : storage.put(key, data, putOpts),
    get: (key, getOpts) => retrying(`get ${key}`, () => storage.get(key, getOpts), getOpts?.signal),
    stat: (key, o) => retrying(`stat ${key}`, () => storage.stat(key, o), o?.signal),
    list: (prefix, o) => retrying(`list ${prefix}`, () => storage.list(prefix, o), o?.signal),
    delete: (key) => retrying(`delete ${key}`, () => storage.delete(key)),
    ...(storage.listIncompleteUploads && storage.abortIncompleteUpload
      ? {
          listIncompleteUploads: (prefix: string) => retrying(`list incomplete uploads ${prefix}`, () => storage.listIncompleteUploads!(prefix)),
          abortIncompleteUpload: (upload) => retrying(`abort upload ${upload.uploadId}`, () => storage.abortIncompleteUpload!(upload)),
        }
      : {}),
  };
}
