// The dashboard on a big stash: DATABASES configured SQLite databases with BACKUPS manifests each
// (copies of one real manifest with their own ids and times; listing reads manifests only), the
// overview and a database page asked in-process through the app (no network), as a bearer token.
// Server time per request: the first ever (the index built), after a restart (the index kept),
// after a new backup (one folder scanned), then warm.
// Target: under 200 ms for the overview and a database page.

import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { tempDir } from '../test/harness/tmp.js';
import { parseConfig } from '../src/config/parse.js';
import { seriesOfEntry } from '../src/retention/config.js';
import { createCatalog } from '../src/web/data.js';
import { CatalogIndex } from '../src/web/index-store.js';
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

  const indexFile = path.join(root, 'dashboard-index.sqlite');
  const jobs = new WebJobs(async () => undefined, new AbortController().signal, () => {});
  const { dashboardSchema } = await import('../src/config/schema.js');
  const settings = dashboardSchema.parse(config.dashboard);
  const open = () => {
    const catalog = createCatalog(config, { index: CatalogIndex.open(indexFile) });
    const app = createApp({ config, settings, catalog, jobs }, { secure: false });
    catalog.start();
    return { catalog, app };
  };
  let current = open();
  const ask = async (route: string) => {
    const started = performance.now();
    const res = await current.app.fetch(new Request(`http://127.0.0.1${route}`, { headers: { Authorization: `Bearer ${token.token}` } }));
    await res.text();
    if (res.status !== 200) throw new Error(`${route} answered ${res.status}`);
    return performance.now() - started;
  };
  // The first start ever: the index is built (every manifest read once).
  const built = await ask('/');
  // A restart: the index is kept; the pages answer from it at once while the stash is scanned
  // again in the background.
  current.catalog.close();
  current = open();
  const restarted = await ask('/');
  // That background scan of the whole stash, with nothing new (the keys listed, no manifest read):
  // the one the restart began is let end first, then one more is timed.
  await current.catalog.rescan();
  const t = performance.now();
  await current.catalog.rescan();
  const rescanMs = performance.now() - t;
  // One new backup of db0, as a job of the dashboard makes it: its folder is scanned (its keys
  // listed, one manifest read) before the next page.
  {
    const entry = config.databases.db0;
    const series = seriesOfEntry(entry)!;
    const at = new Date(Date.UTC(2027, 0, 1));
    const id = `${series.key}_dev_${at.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}`;
    writeFileSync(path.join(stash, series.key, `${id}.manifest.json`), JSON.stringify({ ...template, id, series: { ...series, name: 'db0' }, startedAt: at.toISOString(), finishedAt: at.toISOString() }));
  }
  current.catalog.changed('db0');
  const oneNew = await ask('/databases/db0');
  const overview: number[] = [];
  const page: number[] = [];
  for (let i = 0; i < 5; i++) {
    overview.push(await ask('/'));
    page.push(await ask(`/databases/db${i * 7}`));
  }
  current.catalog.close();
  const target = 200;
  const warmOverview = median(overview);
  const warmPage = median(page);
  const text = [
    `dashboard on a stash of ${databases} databases × ${backups} backups (in-process, server time)`,
    `  first overview ever (the index built: the stash listed, every manifest read): ${built.toFixed(0)} ms`,
    `  first overview after a restart (the index kept): ${restarted.toFixed(0)} ms`,
    `  a rescan of the whole stash with nothing new (in the background; keys listed, no manifest read): ${rescanMs.toFixed(0)} ms`,
    `  database page after a job's new backup (its folder scanned, one manifest read): ${oneNew.toFixed(0)} ms`,
    `  overview, warm: ${warmOverview.toFixed(0)} ms (median of 5; ${Math.min(...overview).toFixed(0)}–${Math.max(...overview).toFixed(0)})`,
    `  database page, warm: ${warmPage.toFixed(0)} ms (median of 5; ${Math.min(...page).toFixed(0)}–${Math.max(...page).toFixed(0)})`,
  ].join('\n');
  return {
    id: 'dashboard',
    text,
    data: { databases, backups, builtMs: built, restartedMs: restarted, rescanMs, oneNewMs: oneNew, overviewMs: overview, pageMs: page },
    targets: [
      { name: `dashboard overview, ${databases}×${backups} backups, warm`, value: `${warmOverview.toFixed(0)} ms`, limit: `< ${target} ms`, pass: warmOverview < target },
      { name: `dashboard database page, ${databases}×${backups} backups, warm`, value: `${warmPage.toFixed(0)} ms`, limit: `< ${target} ms`, pass: warmPage < target },
      { name: `dashboard first overview after a restart, ${databases}×${backups} backups (index kept)`, value: `${restarted.toFixed(0)} ms`, limit: `< ${target} ms`, pass: restarted < target },
      { name: `dashboard database page after a job's new backup, ${databases}×${backups} backups`, value: `${oneNew.toFixed(0)} ms`, limit: `< ${target} ms`, pass: oneNew < target },
    ],
  };
}
