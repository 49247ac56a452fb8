// The row counts that prove a restore, taken as early and as wide as the engine allows. Engines
// that say when a table's data is in (RestoreOptions.dataLoaded: PostgreSQL's pg_restore
// --verbose) have that table counted at once on a connection of its own, while the restore goes
// on with the other tables' data and the index builds (a count that holds the restore up gives
// way to it); after the restore, every table without
// an early count, or whose early count does not match the manifest, is counted on a few
// connections at once, the largest tables first, beside an early count still running (whose own
// tables wait for it). An early count is only a head start: what is
// compared with the manifest is always a count taken after that table's data was committed, and
// a mismatch is never reported from an early count alone.

import type { TableEntry } from '../catalog/manifest.js';
import type { Engine, TableStat, Target } from '../engines/engine.js';

type TableName = { schema: string; name: string };

const qualified = (t: TableName) => `${t.schema}.${t.name}`;

/** Early counts of one table, the first included. */
const EARLY_TRIES = 2;

/** Connections counting at once after the restore. */
export const FINAL_COUNT_CONNECTIONS = 2;

/** Splits tables over `n` lists of about equal expected rows, the largest tables first in each. */
export function balance<T extends TableName>(tables: T[], expectedRows: (t: T) => number, n: number): T[][] {
  const lists: { rows: number; tables: T[] }[] = Array.from({ length: Math.max(1, n) }, () => ({ rows: 0, tables: [] }));
  for (const t of [...tables].sort((a, b) => expectedRows(b) - expectedRows(a))) {
    const lightest = lists.reduce((min, l) => (l.rows < min.rows ? l : min));
    lightest.tables.push(t);
    lightest.rows += Math.max(1, expectedRows(t));
  }
  return lists.map((l) => l.tables).filter((l) => l.length > 0);
}

export class RowCounter {
  private readonly early = new Map<string, TableStat>();
  private readonly queued = new Set<string>();
  private readonly pending: TableName[] = [];
  private readonly tries = new Map<string, number>();
  private running: Promise<void> | undefined;
  /** The tables the early count is counting now. */
  private readonly inFlight = new Set<string>();
  private stopped = false;
  /** The restore has ended: the early counts take no new batch (finish() counts the rest). */
  private finishing = false;
  private readonly expected: Map<string, TableEntry>;
  private readonly byName = new Map<string, TableEntry[]>();

  constructor(
    private readonly engine: Engine,
    private readonly into: Target,
    manifestTables: TableEntry[],
    private readonly signal: AbortSignal,
  ) {
    this.expected = new Map(manifestTables.map((t) => [qualified(t), t]));
    for (const t of manifestTables) this.byName.set(t.name, [...(this.byName.get(t.name) ?? []), t]);
  }

  /** Whether the engine can count chosen tables (else: tableStats after the restore). */
  private get selective(): boolean {
    return typeof this.engine.countRows === 'function' && typeof this.engine.listTables === 'function';
  }

  /** RestoreOptions.dataLoaded: queue the table for an early count. */
  readonly loaded = (table: { qualified?: string; name: string }): void => {
    if (!this.selective) return;
    const entry = (table.qualified !== undefined ? this.expected.get(table.qualified) : undefined) ?? this.uniqueByName(table.name);
    if (!entry || this.queued.has(qualified(entry))) return;
    this.queued.add(qualified(entry));
    this.pending.push({ schema: entry.schema, name: entry.name });
    this.running ??= this.drain().finally(() => (this.running = undefined));
  };

  private uniqueByName(name: string): TableEntry | undefined {
    const found = this.byName.get(name);
    return found?.length === 1 ? found[0] : undefined;
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0 && !this.signal.aborted && !this.stopped && !this.finishing) {
      const batch = this.pending.splice(0);
      batch.forEach((t) => this.inFlight.add(qualified(t)));
      try {
        for (const stat of await this.engine.countRows!(this.into, batch, this.signal, { giveWay: true })) this.early.set(qualified(stat), stat);
      } catch {
        // An early count is a head start only. One that failed (or gave way to the restore, whose
        // next step on the table needed it: a primary key's exclusive lock) is tried once more at
        // once: it then waits for that step and runs beside the restore's next ones. Tables that
        // fail again are counted after the restore.
        for (const t of batch) {
          const key = qualified(t);
          const tries = (this.tries.get(key) ?? 1) + 1;
          if (tries > EARLY_TRIES || this.early.has(key)) continue;
          this.tries.set(key, tries);
          this.pending.push(t);
        }
      } finally {
        this.inFlight.clear();
      }
    }
  }

  /** The restore failed: no further early count, and none still connected when this resolves. */
  async stop(): Promise<void> {
    this.stopped = true;
    while (this.running) await this.running;
  }

  /**
   * After the restore: every user table of `into` with its row count, each taken after its data
   * was in. The tables an early count is not counting right now are counted at once, beside it;
   * those it is counting, once it has ended, only if it failed or does not match.
   */
  async finish(): Promise<TableStat[]> {
    if (!this.selective) return this.engine.tableStats!(this.into, { checksums: false, signal: this.signal });
    this.finishing = true;
    const listed = await this.engine.listTables!(this.into, this.signal);
    const settled = (t: TableName) => {
      const got = this.early.get(qualified(t));
      return got !== undefined && got.rows === this.expected.get(qualified(t))?.rows;
    };
    const rows = (t: TableName) => this.expected.get(qualified(t))?.rows ?? 0;
    const countAll = async (tables: TableName[]) =>
      (await Promise.all(balance(tables, rows, FINAL_COUNT_CONNECTIONS).map((list) => this.engine.countRows!(this.into, list, this.signal)))).flat();
    const beside = listed.filter((t) => !settled(t) && !this.inFlight.has(qualified(t)));
    const waiting = listed.filter((t) => this.inFlight.has(qualified(t)));
    // Whatever happens, no early count is still connected when this returns (the database may be dropped next).
    const [besideCounted] = await Promise.allSettled([countAll(beside), this.running]);
    if (besideCounted.status === 'rejected') throw besideCounted.reason;
    const counted = besideCounted.value;
    counted.push(...(await countAll(waiting.filter((t) => !settled(t)))));
    const final = new Map(counted.map((s) => [qualified(s), s]));
    return listed.map((t) => final.get(qualified(t)) ?? this.early.get(qualified(t))!);
  }
}
