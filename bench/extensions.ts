// Measurements that are not a command in the alternated rounds, contributed by the owners of a
// feature as a module beside this one and loaded only when present:
//   bench/encryption.ts  export measureEncryption(): Promise<{ bytes: number; seconds: number }>
//                        (age payload encryption on one core; target ≥ 1 GB/s)
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

async function encryptionThroughput(log: (m: string) => void): Promise<ExtensionResult> {
  const mod = await optionalModule('./encryption.js');
  const measureEncryption = mod?.measureEncryption as (() => Promise<{ bytes: number; seconds: number }>) | undefined;
  if (!measureEncryption) {
    const reason = 'bench/encryption.ts (measureEncryption) is not on main yet';
    return { id: 'encryption', text: `encryption throughput: skipped: ${reason}`, data: { skipped: reason }, targets: [] };
  }
  log('measuring encryption throughput');
  const r = await measureEncryption();
  const rate = r.bytes / r.seconds;
  return {
    id: 'encryption',
    text: `encryption throughput (age payload, one core): ${(rate / GB).toFixed(2)} GB/s (${(r.bytes / GB).toFixed(2)} GB in ${r.seconds.toFixed(2)} s)`,
    data: { ...r, bytesPerSecond: rate },
    targets: [{ name: 'encryption throughput', value: `${(rate / GB).toFixed(2)} GB/s`, limit: '≥ 1.00 GB/s', pass: rate >= GB }],
  };
}

export async function runExtensions(log: (m: string) => void): Promise<ExtensionResult[]> {
  return [await encryptionThroughput(log)];
}
