// Measurements that are not a command in the alternated rounds, contributed by the owners of a
// feature as a module beside this one and loaded only when present:
//   bench/encryption.ts  export measureEncryption(bytes): Promise<{ encryptMBps; decryptMBps }>
//                        (age payload encryption on one core, MB/s of CPU time; target ≥ 1 GB/s)
// A missing module is reported as skipped with the reason.

import { median } from './measure.js';
import type { Target } from './report.js';

export interface ExtensionResult {
  id: string;
  text: string;
  data: unknown;
  targets: Target[];
}

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

const ENCRYPTION_BYTES = 256 * 1024 * 1024;
const ENCRYPTION_REPEATS = 3;

async function encryptionThroughput(log: (m: string) => void): Promise<ExtensionResult> {
  const mod = await optionalModule('./encryption.js');
  const measureEncryption = mod?.measureEncryption as ((bytes: number) => Promise<{ encryptMBps: number; decryptMBps: number }>) | undefined;
  if (!measureEncryption) {
    const reason = 'bench/encryption.ts (measureEncryption) is not on main yet';
    return { id: 'encryption', text: `encryption throughput: skipped: ${reason}`, data: { skipped: reason }, targets: [] };
  }
  log(`measuring age encryption throughput, ${ENCRYPTION_REPEATS} × ${ENCRYPTION_BYTES / 2 ** 20} MiB`);
  const runs = [];
  for (let i = 0; i < ENCRYPTION_REPEATS; i++) runs.push(await measureEncryption(ENCRYPTION_BYTES));
  const gbps = (mbps: number[]) => ({ median: median(mbps) / 1000, min: Math.min(...mbps) / 1000, max: Math.max(...mbps) / 1000 });
  const encrypt = gbps(runs.map((r) => r.encryptMBps));
  const decrypt = gbps(runs.map((r) => r.decryptMBps));
  const show = (g: typeof encrypt) => `${g.median.toFixed(2)} GB/s (${g.min.toFixed(2)}–${g.max.toFixed(2)})`;
  return {
    id: 'encryption',
    text: `age payload throughput on one core, per second of CPU time, median of ${ENCRYPTION_REPEATS}: encryption ${show(encrypt)}, decryption ${show(decrypt)}`,
    data: { bytes: ENCRYPTION_BYTES, runs },
    targets: [{ name: 'age encryption throughput (one core)', value: `${encrypt.median.toFixed(2)} GB/s`, limit: '≥ 1.00 GB/s', pass: encrypt.median >= 1 }],
  };
}

export async function runExtensions(log: (m: string) => void): Promise<ExtensionResult[]> {
  return [await encryptionThroughput(log)];
}
