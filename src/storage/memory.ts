// In-memory driver for unit tests of the layers above storage. It keeps the same contract as
// the real drivers: atomic puts, exclusive puts refuse to overwrite, missing keys are not-found.

import { addAbortSignal, Readable } from 'node:stream';
import { StorageError } from '../core/errors.js';
import type { ObjectInfo, PutOptions, PutResult, Storage } from './storage.js';
import { byKey, readAll } from './storage.js';

const stores = new Map<string, Map<string, { data: Buffer; modifiedAt: Date; metadata?: Record<string, string> }>>();

/** memory://name — every driver opened with the same name shares one map (within a process). */
export function createMemoryStorage(name = 'default'): Storage {
  let objects = stores.get(name);
  if (!objects) stores.set(name, (objects = new Map()));
  const map = objects;
  return {
    url: `memory://${name}`,
    properties: { kind: 'memory', local: false, maxParallelism: 16 },
    async put(key: string, data: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
      if (opts.exclusive && map.has(key)) throw new StorageError('exists', `[memory] ${key} already exists`);
      const source = data instanceof Uint8Array || !opts.signal ? data : addAbortSignal(opts.signal, data);
      const bytes = source instanceof Uint8Array ? Buffer.from(source) : await readAll(source);
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
      if (opts.exclusive && map.has(key)) throw new StorageError('exists', `[memory] ${key} already exists`);
      map.set(key, { data: bytes, modifiedAt: new Date(), metadata: opts.metadata });
      return { size: bytes.length };
    },
    async get(key: string): Promise<Readable> {
      const obj = map.get(key);
      if (!obj) throw new StorageError('not-found', `[memory] ${key} not found`);
      return Readable.from([obj.data]);
    },
    async stat(key: string): Promise<ObjectInfo | undefined> {
      const obj = map.get(key);
      return obj ? { key, size: obj.data.length, modifiedAt: obj.modifiedAt, metadata: obj.metadata } : undefined;
    },
    async list(prefix: string): Promise<ObjectInfo[]> {
      return [...map.entries()]
        .filter(([key]) => key.startsWith(prefix))
        .map(([key, obj]) => ({ key, size: obj.data.length, modifiedAt: obj.modifiedAt, metadata: obj.metadata }))
        .sort(byKey);
    },
    async delete(key: string): Promise<void> {
      map.delete(key);
    },
  };
}

export function resetMemoryStorage(name?: string): void {
  if (name === undefined) stores.clear();
  else stores.delete(name);
}
