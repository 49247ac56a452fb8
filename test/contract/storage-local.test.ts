// The storage contract against the local directory driver; allKeys() walks the root directly, so
// hidden temporaries left by a failed put would show up.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLocalStorage } from '../../src/storage/local.js';
import { storageContract } from './storage.js';

async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(root, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
    .sort();
}

storageContract('local', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dbstash-contract-'));
  const root = path.join(dir, 'stash');
  return {
    storage: createLocalStorage({ root }),
    allKeys: () => filesUnder(root),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
