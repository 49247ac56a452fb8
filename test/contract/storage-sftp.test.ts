// The storage contract against the SFTP driver, talking to a real OpenSSH sshd (internal-sftp) on
// loopback. Each test gets its own directory under the server's data directory; the server is on
// this machine, so allKeys() reads that directory from the file system, independently of the
// driver, temporaries included. The storage is opened by URL, as the CLI does, so the lazy
// registration and the retry wrapper are part of what is tested.

import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before } from 'node:test';
import { openStorage } from '../../src/storage/index.js';
import { startSshd, type SshServer } from '../harness/sshd.js';
import { storageContract } from './storage.js';

let server: SshServer;

before(async () => {
  server = await startSshd();
});
after(async () => {
  await server?.stop();
});

/** Every file under dir, as keys relative to it. */
async function filesUnder(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(path.join(dir, rel), { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const e of entries) {
    const key = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await filesUnder(dir, key)));
    else out.push(key);
  }
  return out.sort();
}

storageContract('sftp', async () => {
  const sub = `t-${randomBytes(4).toString('hex')}`;
  const storage = await openStorage(server.url(sub), { privateKey: server.userKey, knownHosts: server.knownHosts });
  return {
    storage,
    allKeys: () => filesUnder(path.join(server.dataDir, sub)),
    cleanup: async () => storage.close?.(),
  };
});
