// The storage contract against the in-memory driver used by unit tests of the upper layers.

import { randomBytes } from 'node:crypto';
import { createMemoryStorage, resetMemoryStorage } from '../../src/storage/memory.js';
import { storageContract } from './storage.js';

storageContract('memory', async () => {
  const name = `contract-${randomBytes(4).toString('hex')}`;
  return {
    storage: createMemoryStorage(name),
    buffersObjects: true,
    cleanup: async () => resetMemoryStorage(name),
  };
});
