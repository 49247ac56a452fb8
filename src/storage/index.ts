// Opens a storage from a URL or path: "file:///abs", "/abs", "./rel" and bare paths are local
// directories; "memory://name" is the in-memory driver; other schemes come from drivers that
// register themselves (s3). SDKs are imported lazily so a local backup never loads them.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../core/errors.js';
import { createLocalStorage, localOptions } from './local.js';
import { createMemoryStorage } from './memory.js';
import { registerStorage, storageFactory, storageSchemes, type Storage } from './storage.js';
import { withRetry } from './retry.js';

export type { Storage } from './storage.js';

registerStorage('s3', async (url, options) => withRetry((await import('./s3.js')).createS3Storage(url, options)));
registerStorage('azure', async (url, options) => withRetry((await import('./azure.js')).createAzureStorage(url, options)));
registerStorage('sftp', async (url, options) => withRetry((await import('./sftp.js')).createSftpStorage(url, options)));
registerStorage('rclone', async (url, options) => withRetry((await import('./rclone.js')).createRcloneStorage(url, options)));

const SCHEME_RE = /^([a-z][a-z0-9+.-]*):\/\//i;

export function storageScheme(url: string): string {
  // rclone's own form, rclone:<remote>:<path>, has no "//".
  if (/^rclone:/i.test(url)) return 'rclone';
  const m = SCHEME_RE.exec(url);
  return m ? m[1].toLowerCase() : 'file';
}

export async function openStorage(url: string, options: Record<string, unknown> = {}): Promise<Storage> {
  const scheme = storageScheme(url);
  switch (scheme) {
    case 'file':
      return createLocalStorage(localOptions(url.startsWith('file://') ? fileURLToPath(url) : path.resolve(url), options));
    case 'memory':
      return createMemoryStorage(url.slice('memory://'.length) || 'default');
    default: {
      const factory = storageFactory(scheme);
      if (!factory) {
        throw new ConfigError(`unsupported storage URL scheme "${scheme}://"`, {
          hint: `valid: a directory path, file://, memory://${storageSchemes().map((s) => (s === 'rclone' ? ', rclone:<remote>:<path>' : `, ${s}://`)).join('')}`,
        });
      }
      return factory(url, options);
    }
  }
}
