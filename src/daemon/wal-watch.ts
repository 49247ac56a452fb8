// The daemon's watch over WAL archiving, for every database with physical backups: every
// daemon.walCheck it asks the server (pg_stat_archiver, archive_status) whether archive_command
// fails, stalls or falls behind, and at start and after each of the database's jobs it reads the
// recoverable window and any gap from the stash. The results go to /metrics and /healthz; a problem
// sends one "archive" notification when it starts and a log line when it clears, so a failing
// push cannot fill the server's disk unnoticed.

import type { Context } from '../cli/common.js';
import type { DatabaseConfig } from '../config/schema.js';
import { parseDuration } from '../core/format.js';
import { resolveDestinations } from '../config/resolve.js';
import { listBackups } from '../catalog/catalog.js';
import { isSafetyBackup } from '../catalog/series.js';
import { seriesOfEntry } from '../retention/config.js';
import { parseTarget } from '../engines/target.js';
import { makeMessage } from '../notify/message.js';
import type { Notifier } from '../notify/notifier.js';
import { archiveHealth, archiverProblems, archiverStats } from '../wal/health.js';
import type { DaemonMetrics } from './metrics.js';

/** Where a fleet agent sends each database's archive state (docs/fleet.md). */
export type WalReporter = (key: string, state: { healthy: boolean; problems: string[]; lastArchivedAt?: string; windowFrom?: string }) => Promise<void>;

interface Watched {
  key: string;
  entry: DatabaseConfig;
  maxDelayMs?: number;
  lastArchivedAt?: string;
  windowFrom?: string;
  /** What the server said at the last check, and from the stash: gaps. */
  serverProblems: string[];
  stashProblems: string[];
  notified: boolean;
}

export class WalWatch {
  private readonly watched = new Map<string, Watched>();
  private timer?: NodeJS.Timeout;
  private checking?: Promise<void>;

  constructor(
    private readonly ctx: Context,
    private readonly metrics: DaemonMetrics,
    private readonly notifier: Notifier,
    private readonly reporter?: WalReporter,
  ) {
    for (const [key, entry] of Object.entries(ctx.loaded.config.databases)) {
      if (!entry.physical) continue;
      const maxDelayMs = entry.walMaxDelay !== undefined ? parseDuration(entry.walMaxDelay) : undefined;
      this.watched.set(key, { key, entry, maxDelayMs, serverProblems: [], stashProblems: [], notified: false });
    }
  }

  get size(): number {
    return this.watched.size;
  }

  /** Checks now and then every everyMs, until stop(). */
  start(everyMs: number, signal: AbortSignal): void {
    if (this.watched.size === 0) return;
    for (const key of this.watched.keys()) void this.readStash(key, signal);
    const run = () => {
      if (!this.checking) this.checking = this.checkServers(signal).finally(() => (this.checking = undefined));
    };
    run();
    this.timer = setInterval(run, everyMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.checking;
  }

  /** The problems of every watched database now, for /healthz. */
  problems(): string[] {
    return [...this.watched.values()].flatMap((w) => [...w.serverProblems, ...w.stashProblems].map((p) => `${w.key}: ${p}`));
  }

  /** After a job of the database (a backup or prune moves the window's start). */
  jobEnded(key: string, signal: AbortSignal): void {
    if (this.watched.has(key)) void this.readStash(key, signal);
  }

  private async checkServers(signal: AbortSignal): Promise<void> {
    for (const w of this.watched.values()) {
      if (signal.aborted) return;
      try {
        const stats = await archiverStats(parseTarget(w.entry.url, { binDir: w.entry.binDir }), signal);
        w.serverProblems = archiverProblems(stats, new Date(), w.maxDelayMs);
        w.lastArchivedAt = stats.lastArchivedAt;
        this.metrics.archiverChecked(w.key, stats);
      } catch (err) {
        if (signal.aborted) return;
        // The server down is the backup's business (preflight, status); the archive's state is unknown.
        this.ctx.out.warn(`[${w.key}] could not read pg_stat_archiver: ${(err as Error).message}`);
        continue;
      }
      await this.report(w);
    }
  }

  private async readStash(key: string, signal: AbortSignal): Promise<void> {
    const w = this.watched.get(key)!;
    try {
      const series = seriesOfEntry(w.entry);
      if (!series) return;
      const [primary] = await resolveDestinations({}, this.ctx.loaded.config, w.entry);
      const listing = await listBackups(primary.storage, series.key, { signal });
      const bases = listing.entries.filter((e) => e.series.identity === series.identity && !isSafetyBackup(e.manifest)).map((e) => e.manifest);
      const health = archiveHealth(listing.objects, series.key, bases);
      w.stashProblems = health?.gaps.length ? [`the WAL archive in ${primary.name} has gaps (${health.gaps.join(', ')}): recovery cannot pass them; take a new base backup`] : [];
      this.metrics.archiveWindow(key, health?.window?.from);
      w.windowFrom = health?.window?.from;
    } catch (err) {
      if (signal.aborted) return;
      this.ctx.out.warn(`[${key}] could not read the WAL archive in the stash: ${(err as Error).message}`);
      return;
    }
    await this.report(w);
  }

  private async report(w: Watched): Promise<void> {
    const problems = [...w.serverProblems, ...w.stashProblems];
    this.metrics.archiveChecked(w.key, problems.length === 0);
    await this.reporter?.(w.key, { healthy: problems.length === 0, problems, lastArchivedAt: w.lastArchivedAt, windowFrom: w.windowFrom }).catch((err: Error) => this.ctx.out.warn(`[${w.key}] could not report WAL archiving to the fleet: ${err.message}`));
    if (problems.length === 0) {
      if (w.notified) this.ctx.out.info(`[${w.key}] WAL archiving is healthy again`);
      w.notified = false;
      return;
    }
    if (w.notified) return;
    w.notified = true;
    const detail = problems.join('; ');
    this.ctx.out.warn(`[${w.key}] ${detail}`);
    await this.notifier.notify(
      makeMessage({ event: 'archive', database: w.key, detail, hint: 'run `dbstash status` and look at the server log; until archiving works, point-in-time recovery stops at the last archived segment' }),
    );
  }
}
