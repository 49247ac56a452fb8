// The storage contract against the Azure Blob driver, talking to Azurite's blob service on
// loopback. Each test gets its own prefix in one container. allKeys() uses a plain SDK client,
// independently of the driver: it lists committed blobs, blobs that hold only uncommitted blocks
// (what an interrupted block upload leaves), and committed blobs that still carry uncommitted
// blocks, so the suite proves that failed or aborted puts leave no blocks behind. The storage is
// opened by URL, as the CLI does, so the lazy registration and the retry wrapper are tested too.

import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import type { ContainerClient } from '@azure/storage-blob';
import { openStorage } from '../../src/storage/index.js';
import { startAzurite, type AzuriteServer } from '../harness/azurite.js';
import { storageContract } from './storage.js';

const CONTAINER = 'contract';
let server: AzuriteServer;
let raw: ContainerClient;

before(async () => {
  server = await startAzurite({ containers: [CONTAINER] });
  raw = server.container(CONTAINER);
});
after(async () => {
  await server?.stop();
});

/** Every blob under prefix/, as the store holds it, uncommitted blocks included. */
async function everything(prefix: string): Promise<string[]> {
  const committed = new Set<string>();
  for await (const b of raw.listBlobsFlat({ prefix: `${prefix}/` })) committed.add(b.name);
  const out: string[] = [];
  for await (const b of raw.listBlobsFlat({ prefix: `${prefix}/`, includeUncommitedBlobs: true })) {
    const key = b.name.slice(prefix.length + 1);
    const pending = (await raw.getBlockBlobClient(b.name).getBlockList('uncommitted')).uncommittedBlocks?.length ?? 0;
    if (!committed.has(b.name)) out.push(`${key} (only uncommitted blocks: ${pending})`);
    else out.push(pending ? `${key} (plus ${pending} uncommitted blocks)` : key);
  }
  return out.sort();
}

storageContract('azure', async () => {
  const prefix = `t-${randomBytes(4).toString('hex')}`;
  const storage = await openStorage(`azure://${CONTAINER}/${prefix}`, {
    endpoint: server.endpoint,
    accountName: server.accountName,
    accountKey: server.accountKey,
  });
  return {
    storage,
    allKeys: () => everything(prefix),
    cleanup: async () => storage.close?.(),
  };
});
