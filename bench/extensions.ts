// Measurements that are not a command in the alternated rounds, contributed by the owners of a
// feature as a module beside this one and loaded only when present:
//   bench/encryption.ts  export measureEncryption(bytes): Promise<{ encryptMBps; decryptMBps }>
//                        (age payload encryption on one core, MB/s of CPU time; target ≥ 1 GB/s)
// A missing module is reported as skipped with the reason.

import type { Target } from './report.js';

export interface ExtensionResult {
  id: string;
  text: string;
  data: unknown;
  targets: Target[];
}

const GB = 1e9;

async function optionalModule(file: string): Promise<Record<string, unknown> | undefined> {
  const url = new URL(file, import.meta.url);
  try {
    return (await import(url.href)) as Record<string, unknown>;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { url?: string };
    if (e.code === 'ERR_MODULE_NOT_FOUND' && (e.url === url.href || e.message.includes(url.pathname))) return undefined;
    throw err;
  }
}

const ENCRYPTION_BYTES = 512 * 1024 * 1024;

async function encryptionThroughput(log: (m: string) => void): Promise<ExtensionResult> {
  const mod = await optionalModule('./encryption.js');
  const measureEncryption = mod?.measureEncryption as ((bytes: number) => Promise<{ encryptMBps: number; decryptMBps: number }>) | undefined;
  if (!measureEncryption) {
    const reason = 'bench/encryption.ts (measureEncryption) is not on main yet';
    return { id: 'encryption', text: `encryption throughput: skipped: ${reason}`, data: { skipped: reason }, targets: [] };
  }
  log(`measuring age encryption throughput over ${ENCRYPTION_BYTES / 2 ** 20} MiB`);
  const r = await measureEncryption(ENCRYPTION_BYTES);
  const encrypt = (r.encryptMBps * 1e6) / GB;
  const decrypt = (r.decryptMBps * 1e6) / GB;
  return {
    id: 'encryption',
    text: `age payload throughput on one core (bytes per second of CPU time): encryption ${encrypt.toFixed(2)} GB/s, decryption ${decrypt.toFixed(2)} GB/s`,
    data: { bytes: ENCRYPTION_BYTES, ...r },
    targets: [{ name: 'age encryption throughput (one core)', value: `${encrypt.toFixed(2)} GB/s`, limit: '≥ 1.00 GB/s', pass: encrypt >= 1 }],
  };
}

export async function runExtensions(log: (m: string) => void): Promise<ExtensionResult[]> {
  return [await encryptionThroughput(log)];
}
