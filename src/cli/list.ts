// `dbstash list`: the backups a stash holds, newest first, with their latest verification.

import type { Command } from 'commander';
import { formatBytes, formatDuration, renderTable } from '../core/format.js';
import type { CatalogEntry } from '../catalog/catalog.js';
import { findSeries, seriesLabels } from '../catalog/find.js';
import { isSafetyBackup } from '../catalog/series.js';
import { configEntryNamed, configKeys, configuredSeries } from '../retention/config.js';
import { mainArtifact, totalRows } from '../catalog/manifest.js';
import { latestRecord, type VerifyRecord } from '../catalog/records.js';
import { resolveDestinations } from '../config/resolve.js';
import { commonOptions, runCommand, stashOptions, type CommonOptions } from './common.js';

function verificationLabel(v: VerifyRecord | undefined): string {
  if (!v) return '-';
  return `${v.result} (${v.level}, ${v.at.slice(0, 10)})`;
}

export function registerList(program: Command): void {
  const cmd = program
    .command('list')
    .description('list backups, newest first')
    .argument('[database]', 'only this database (its name as listed, its real name, or its config key)');
  stashOptions(cmd);
  commonOptions(cmd, { codes: [11] });
  cmd.addHelpText('after', `\nExamples:\n  dbstash list\n  dbstash list shop --output-dir /var/backups/dbstash --json`);
  cmd.action((database: string | undefined, opts: CommonOptions) =>
    runCommand(opts, async (ctx) => {
      const { config } = ctx.loaded;
      const destinations = await resolveDestinations(opts, config, configEntryNamed(config, database));
      const configured = [...configuredSeries(config).values()].map((c) => c.match);
      const found = await findSeries(destinations, { name: database, configKeys: configKeys(config), configured });
      if (database && !found.match) ctx.out.warn(`no backups of "${database}"${found.known.length ? `; the stash holds ${[...seriesLabels(found.known).values()].join(', ')}` : ''}`);
      else if (database && found.by !== 'name' && found.by !== 'folder') ctx.out.info(`"${database}" is the ${found.by} of ${found.match!.series.name} (${found.match!.series.identity})`);
      const labels = seriesLabels(found.known);
      const rows: { storage: string; entry: CatalogEntry; verification?: VerifyRecord }[] = [];
      const problems: { storage: string; key: string; message: string }[] = [];
      for (const dest of destinations) {
        const listing = found.listings.get(dest)!;
        for (const p of listing.problems) {
          problems.push({ storage: dest.name, ...p });
          ctx.out.warn(`${dest.storage.url}: ${p.message}`);
        }
        for (const entry of listing.entries) {
          if (database && entry.series.identity !== found.match?.series.identity) continue;
          rows.push({ storage: dest.name, entry, verification: await latestRecord<VerifyRecord>(dest.storage, entry.records, 'verify') });
        }
      }
      rows.sort((a, b) => b.entry.manifest.startedAt.localeCompare(a.entry.manifest.startedAt));
      const json = rows.map(({ storage, entry, verification }) => {
        const m = entry.manifest;
        const main = mainArtifact(m);
        return {
          id: m.id,
          storage,
          database: labels.get(entry.series.identity) ?? entry.series.name,
          series: entry.series,
          kind: isSafetyBackup(m) ? 'safety' : 'backup',
          engine: m.engine,
          environment: m.environment,
          takenAt: m.startedAt,
          durationMs: m.durationMs,
          rawSize: main.rawSize,
          storedSize: m.artifacts.reduce((s, a) => s + a.size, 0),
          tables: m.tables.length,
          rows: totalRows(m),
          degraded: Boolean(m.extra.degraded),
          anomaly: m.extra.anomaly ?? null,
          verification: verification ? { result: verification.result, level: verification.level, at: verification.at } : null,
        };
      });
      ctx.out.result({ backups: json, problems }, () => {
        if (json.length === 0) return 'no backups found';
        const multi = destinations.length > 1;
        return renderTable(
          ['ID', ...(multi ? ['STORAGE'] : []), 'DATABASE', 'ENV', 'TAKEN AT (UTC)', 'DURATION', 'RAW', 'STORED', 'TABLES', 'VERIFIED'],
          rows.map(({ storage, entry, verification }, i) => {
            const j = json[i];
            return [
              j.id + (j.kind === 'safety' ? ' (safety backup)' : '') + (j.degraded ? ' (degraded)' : '') + (j.anomaly ? ' (anomaly)' : ''),
              ...(multi ? [storage] : []),
              j.database,
              j.environment,
              j.takenAt.slice(0, 19).replace('T', ' '),
              formatDuration(j.durationMs),
              formatBytes(j.rawSize),
              formatBytes(j.storedSize),
              String(entry.manifest.tables.length),
              verificationLabel(verification),
            ];
          }),
        );
      });
    }),
  );
}
