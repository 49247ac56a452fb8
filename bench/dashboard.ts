// The dashboard on a big stash: DATABASES configured SQLite databases with BACKUPS manifests each
// (copies of one real manifest with their own ids and times; listing reads manifests only), the
// overview and a database page asked in-process through the app (no network), as a bearer token.
// Server time per request: the first (the stash listed and every manifest read), then warm.
// Target: under 200 ms for the overview and a database page.

import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { tempDir } from '../test/harness/tmp.js';
import { parseConfig } from '../src/config/parse.js';
import { seriesOfEntry } from '../src/retention/config.js';
import { createCatalog } from '../src/web/data.js';
import { WebJobs } from '../src/web/jobs.js';
import { createApp } from '../src/web/server.js';
import { newToken } from '../src/web/auth.js';
import type { ExtensionResult } from './extensions.js';
import { median } from './measure.js';

export const DASHBOARD_IDS = ['dashboard_big'];

export async function runDashboardBench(ctx: { cliPath: string; log(m: string): void; databases?: number; backups?: number }): Promise<ExtensionResult> {
  const databases = ctx.databases ?? 50;
  const backups = ctx.backups ?? 1000;
  const root = tempDir('dbstash-bench-dashboard');
  const stash = path.join(root, 'stash');
  // One real backup gives the manifest every copy is made from.
  const sample = path.join(root, 'sample.db');
  const db = new Database(sample);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES (1), (2), (3)');
  db.close();
  const made = spawnSync(process.execPath, [ctx.cliPath, 'backup', sample, '--output-dir', path.join(root, 'sample-stash'), '--json', '--quiet'], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`sample backup failed: ${made.stderr}`);
  const sampleDir = path.join(root, 'sample-stash');
  const folder = readdirSync(sampleDir).find((d) => !d.startsWith('.'))!;
  const manifestFile = readdirSync(path.join(sampleDir, folder)).find((f) => f.endsWith('.manifest.json'))!;
  const template = JSON.parse(readFileSync(path.join(sampleDir, folder, manifestFile), 'utf8')) as Record<string, unknown> & { id: string; series: { key: string; name: string; identity: string }; startedAt: string; finishedAt: string };

  const token = newToken();
  const yaml = [`stash: ${stash}`, 'encryption: none', 'dashboard:', '  tokens:', `    - { name: bench, role: viewer, hash: "${token.hash}" }`, 'databases:'];
  for (let i = 0; i < databases; i++) yaml.push(`  db${i}:`, `    url: sqlite://${path.join(root, `db${i}.sqlite`)}`, '    maxAge: 26h');
  const config = parseConfig(yaml.join('\n') + '\n', 'bench.yaml');
  ctx.log(`dashboard: writing ${databases} × ${backups} manifests`);
  const t0 = Date.now();
  for (const [key, entry] of Object.entries(config.databases)) {
    const series = seriesOfEntry(entry)!;
    mkdirSync(path.join(stash, series.key), { recursive: true });
    for (let j = 0; j < backups; j++) {
      const at = new Date(Date.UTC(2026, 0, 1) + j * 3600_000);
      const stamp = at.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
      const id = `${series.key}_dev_${stamp}`;
      const m = { ...template, id, series: { ...series, name: key }, startedAt: at.toISOString(), finishedAt: new Date(at.getTime() + 1000).toISOString() };
      writeFileSync(path.join(stash, series.key, `${id}.manifest.json`), JSON.stringify(m));
    }
  }
  ctx.log(`dashboard: ${databases * backups} manifests written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const catalog = createCatalog(config);
  const jobs = new WebJobs(async () => undefined, new AbortController().signal, () => {});
  const { dashboardSchema } = await import('../src/config/schema.js');
  const app = createApp({ config, settings: dashboardSchema.parse(config.dashboard), catalog, jobs }, { secure: false });
  const ask = async (route: string) => {
    const started = performance.now();
    const res = await app.fetch(new Request(`http://127.0.0.1${route}`, { headers: { Authorization: `Bearer ${token.token}` } }));
    await res.text();
    if (res.status !== 200) throw new Error(`${route} answered ${res.status}`);
    return performance.now() - started;
  };
  const first = await ask('/');
  // A refresh with nothing new: the keys listed again, no manifest read (what runs every few
  // seconds in the background while the pages answer from the last listing).
  catalog.invalidate();
  const refreshed = await ask('/');
  // One new backup of db0 is then read alone.
  {
    const entry = config.databases.db0;
    const series = seriesOfEntry(entry)!;
    const at = new Date(Date.UTC(2027, 0, 1));
    const id = `${series.key}_dev_${at.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}`;
    writeFileSync(path.join(stash, series.key, `${id}.manifest.json`), JSON.stringify({ ...template, id, series: { ...series, name: 'db0' }, startedAt: at.toISOString(), finishedAt: at.toISOString() }));
  }
  catalog.invalidate();
  const oneNew = await ask('/databases/db0');
  const overview: number[] = [];
  const page: number[] = [];
  for (let i = 0; i < 5; i++) {
    overview.push(await ask('/'));
    page.push(await ask(`/databases/db${i * 7}`));
  }
  const target = 200;
  const warmOverview = median(overview);
  const warmPage = median(page);
  const text = [
    `dashboard on a stash of ${databases} databases × ${backups} backups (in-process, server time)`,
    `  first overview (the stash listed, every manifest read): ${first.toFixed(0)} ms`,
    `  overview after a refresh with nothing new (keys listed, no manifest read): ${refreshed.toFixed(0)} ms`,
    `  database page after one new backup (keys listed, one manifest read): ${oneNew.toFixed(0)} ms`,
    `  overview, warm: ${warmOverview.toFixed(0)} ms (median of 5; ${Math.min(...overview).toFixed(0)}–${Math.max(...overview).toFixed(0)})`,
    `  database page, warm: ${warmPage.toFixed(0)} ms (median of 5; ${Math.min(...page).toFixed(0)}–${Math.max(...page).toFixed(0)})`,
  ].join('\n');
  return {
    id: 'dashboard',
    text,
    data: { databases, backups, firstMs: first, refreshedMs: refreshed, oneNewMs: oneNew, overviewMs: overview, pageMs: page },
    targets: [
      { name: `dashboard overview, ${databases}×${backups} backups, warm`, value: `${warmOverview.toFixed(0)} ms`, limit: `< ${target} ms`, pass: warmOverview < target },
      { name: `dashboard database page, ${databases}×${backups} backups, warm`, value: `${warmPage.toFixed(0)} ms`, limit: `< ${target} ms`, pass: warmPage < target },
      { name: `dashboard first overview after start, ${databases}×${backups} backups (every manifest read once)`, value: `${first.toFixed(0)} ms`, limit: `< ${target} ms`, pass: first < target },
    ],
  };
}
