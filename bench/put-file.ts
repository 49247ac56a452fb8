// One storage put of one file, as its own process, for bench/storage.ts: the storage is opened by
// URL as the CLI opens it (lazy driver loading, the retry wrapper), the file is streamed into
// put() with its size as the hint, and the process exits. Its wall time and peak RSS are what the
// bench measures; it prints its own view on stdout as JSON.
//
//   node dist/bench/put-file.js --url URL --options FILE.json --file FILE --key KEY [--read-kib N]
//
// The file is handed over as the local storage's get() hands an artifact to `dbstash copy`: a
// Drawable, which a driver that can (Azure) draws into its own block buffers and any other reads
// as a stream of 256 KiB chunks; --read-kib reads other sizes, to tell the driver's own cost from
// the source's.
//
// The driver options come from a file, not the command line, where a key would be visible to
// every user of the machine.

import { readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Drawable, fileSource } from '../src/storage/drawable.js';
import { openStorage } from '../src/storage/index.js';

const MB = 1024 * 1024;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { url: { type: 'string' }, options: { type: 'string' }, file: { type: 'string' }, key: { type: 'string' }, 'read-kib': { type: 'string' } } });
  if (!values.url || !values.file || !values.key) throw new Error('usage: put-file --url URL [--options FILE.json] --file FILE --key KEY');
  const options = values.options ? (JSON.parse(readFileSync(values.options, 'utf8')) as Record<string, unknown>) : {};
  const size = statSync(values.file).size;
  const readKiB = values['read-kib'] ? Number(values['read-kib']) : 256;
  if (!(Number.isInteger(readKiB) && readKiB > 0)) throw new Error(`--read-kib takes a positive whole number, got "${values['read-kib']}"`);
  const storage = await openStorage(values.url, options);
  // The driver and its SDK are loaded by now; what the put adds comes on top of this.
  const rssBeforePut = process.memoryUsage().rss;
  // Full (mark-compact) collections during the put: in a process this small V8 keeps starting them
  // as ssh2's short-lived packet buffers pile up outside the heap (docs/performance.md).
  let majorGcs = 0;
  let majorGcMs = 0;
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (((e as unknown as { detail?: { kind?: number } }).detail)?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) {
        majorGcs++;
        majorGcMs += e.duration;
      }
    }
  });
  gcs.observe({ entryTypes: ['gc'] });
  const started = performance.now();
  const source = new Drawable(fileSource(await open(values.file, 'r')), readKiB * 1024);
  const result = await storage.put(values.key, source, { sizeHint: size });
  const putMs = performance.now() - started;
  gcs.disconnect();
  await storage.close?.();
  if (result.size !== size) throw new Error(`put stored ${result.size} bytes of ${size}`);
  process.stdout.write(JSON.stringify({ size, putMs, rssBeforePutMB: rssBeforePut / MB, maxRssMB: process.resourceUsage().maxRSS / 1024, majorGcs, majorGcMs }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`put-file: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
