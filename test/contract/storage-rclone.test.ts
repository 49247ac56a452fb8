// The storage contract against the rclone driver, through the real rclone binary and a `local`-type
// remote from a generated rclone.conf. Each test gets its own folder; allKeys() lists every file
// under it on disk, so temporaries and claims left by aborted, failed or losing puts would show
// up. The storage is opened by URL, as the CLI does, so the lazy registration and the retry
// wrapper are part of what is tested.

import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import { openStorage } from '../../src/storage/index.js';
import { makeRcloneRemotes, type RcloneRemotes } from '../harness/rclone.js';
import { storageContract } from './storage.js';

let remotes: RcloneRemotes;

before(async () => {
  remotes = await makeRcloneRemotes();
});
after(async () => {
  await remotes?.remove();
});

storageContract('rclone', async () => {
  const sub = `t-${randomBytes(4).toString('hex')}`;
  const storage = await openStorage(remotes.url(sub), { config: remotes.config });
  return { storage, allKeys: () => remotes.files(sub) };
});
