// Fault injection for tests: wraps any Storage so that chosen calls fail — "the Nth call of
// method X fails with error E", or "this put's stream breaks after N bytes" — and counts the calls.
// With it, retries, degraded backups and cleanup paths are tested against the real drivers'
// semantics instead of hand-written fakes.

import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Storage } from './storage.js';

type Method = 'put' | 'get' | 'stat' | 'list' | 'delete';

export interface Fault {
  method: Method;
  /** Only calls whose key (or prefix) matches. */
  key?: RegExp;
  /** 1-based number of the first (matching) call that fails; default 1. */
  from?: number;
  /** How many calls fail from there on; default: all of them. */
  times?: number;
  /** For a streamed put: let this many bytes through, then break the stream. */
  afterBytes?: number;
  error: () => Error;
}

export interface FaultyStorage extends Storage {
  /** Calls per method so far. */
  readonly calls: Record<Method, number>;
}

class BreakAfter extends Transform {
  private seen = 0;
  constructor(
    private readonly limit: number,
    private readonly error: () => Error,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) return done(this.error());
    done(null, chunk);
  }
}

export function withFaults(storage: Storage, faults: Fault[]): FaultyStorage {
  const calls: Record<Method, number> = { put: 0, get: 0, stat: 0, list: 0, delete: 0 };
  const matched = new Map<Fault, number>();

  /** The fault that applies to this call, if any. */
  function due(method: Method, key: string): Fault | undefined {
    calls[method]++;
    for (const fault of faults) {
      if (fault.method !== method || (fault.key && !fault.key.test(key))) continue;
      const n = (matched.get(fault) ?? 0) + 1;
      matched.set(fault, n);
      const from = fault.from ?? 1;
      if (n >= from && (fault.times === undefined || n < from + fault.times)) return fault;
    }
    return undefined;
  }

  return {
    ...storage,
    url: storage.url,
    properties: storage.properties,
    calls,
    async put(key, data, opts) {
      const fault = due('put', key);
      if (!fault) return storage.put(key, data, opts);
      if (fault.afterBytes === undefined || data instanceof Uint8Array) throw fault.error();
      const broken = new BreakAfter(fault.afterBytes, fault.error);
      (data as Readable).on('error', (err) => broken.destroy(err));
      return storage.put(key, (data as Readable).pipe(broken), opts);
    },
    async get(key, opts) {
      const fault = due('get', key);
      if (fault) throw fault.error();
      return storage.get(key, opts);
    },
    async stat(key) {
      const fault = due('stat', key);
      if (fault) throw fault.error();
      return storage.stat(key);
    },
    async list(prefix) {
      const fault = due('list', prefix);
      if (fault) throw fault.error();
      return storage.list(prefix);
    },
    async delete(key) {
      const fault = due('delete', key);
      if (fault) throw fault.error();
      return storage.delete(key);
    },
  };
}
