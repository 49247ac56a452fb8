// The restore's row counts (src/restore/counts.ts) against an in-memory engine: tables are counted
// as soon as the engine says their data is in, an early count that does not match the manifest is
// taken again after the restore (never reported from the early count alone), tables the engine
// said nothing of are counted after, and the final counts are spread over connections by size.
// The real thing runs in test/restore and test/postgres against PostgreSQL.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { balance, FINAL_COUNT_CONNECTIONS, RowCounter } from '../../src/restore/counts.js';
import type { Engine, TableStat, Target } from '../../src/engines/engine.js';
import type { TableEntry } from '../../src/catalog/manifest.js';

const into = { engine: 'postgres', database: 'x_restoring', displayUrl: 'postgres://h/x_restoring' } as unknown as Target;

/**
 * A database whose rows change as the test says; every countRows call is logged. `hook` runs first
 * on each call: it may throw (a count that failed or gave way), wait, or return the counts itself.
 */
function fakeEngine(rows: Map<string, number>, hook?: (names: string[], giveWay: boolean) => Promise<TableStat[] | void> | void) {
  const calls: { tables: string[]; giveWay: boolean }[] = [];
  const engine = {
    id: 'postgres',
    async listTables() {
      return [...rows.keys()].map((q) => ({ schema: q.split('.')[0], name: q.split('.')[1] }));
    },
    async countRows(_t: Target, tables: { schema: string; name: string }[], _s?: AbortSignal, opts?: { giveWay?: boolean }): Promise<TableStat[]> {
      const names = tables.map((t) => `${t.schema}.${t.name}`);
      calls.push({ tables: names, giveWay: !!opts?.giveWay });
      const counted = await hook?.(names, !!opts?.giveWay);
      return counted ?? tables.map((t) => ({ ...t, rows: rows.get(`${t.schema}.${t.name}`) ?? 0 }));
    },
  } as unknown as Engine;
  return { engine, calls };
}

const entry = (q: string, rows: number) => ({ schema: q.split('.')[0], name: q.split('.')[1], rows }) as TableEntry;

describe('restore row counts', () => {
  it('counts a table when its data is in, recounts one whose early count is short, and counts the rest after', async () => {
    const rows = new Map([
      ['public.orders', 500],
      ['public.items', 3],
      ['audit.orders', 7],
      ['public.empty', 0],
    ]);
    const { engine, calls } = fakeEngine(rows);
    const manifest = [entry('public.orders', 900), entry('public.items', 3), entry('audit.orders', 7), entry('public.empty', 0)];
    const counter = new RowCounter(engine, into, manifest, new AbortController().signal);
    counter.loaded({ qualified: 'public.orders', name: 'orders' }); // told too early: 500 of 900 rows
    counter.loaded({ name: 'items' }); // a name alone: unique in the manifest
    counter.loaded({ name: 'orders' }); // a name alone, but two schemas have it: ignored
    counter.loaded({ qualified: 'public.items', name: 'items' }); // already queued: not counted twice
    await new Promise((r) => setImmediate(r));
    rows.set('public.orders', 900); // the rest of its data lands
    const stats = await counter.finish();
    assert.deepEqual(
      stats.map((s) => `${s.schema}.${s.name}=${s.rows}`),
      ['public.orders=900', 'public.items=3', 'audit.orders=7', 'public.empty=0'],
    );
    const tables = calls.map((c) => c.tables);
    const early = tables.slice(0, tables.length - 2).flat();
    assert.deepEqual(early.sort(), ['public.items', 'public.orders']);
    // After the restore: orders again (its early count was short), and the two never counted; not items.
    const after = tables.slice(-2);
    assert.deepEqual(after.flat().sort(), ['audit.orders', 'public.empty', 'public.orders']);
    assert.equal(after.length, FINAL_COUNT_CONNECTIONS);
  });

  it('balance: the largest tables first, spread so that each connection counts about as many rows', () => {
    const t = (name: string, rows: number) => ({ schema: 's', name, rows });
    const lists = balance([t('a', 10), t('b', 1000), t('c', 600), t('d', 500), t('e', 1)], (x) => x.rows, 2);
    assert.deepEqual(
      lists.map((l) => l.map((x) => x.name)),
      [['b', 'a', 'e'], ['c', 'd']],
    );
    assert.deepEqual(balance([t('a', 1)], (x) => x.rows, 2), [[t('a', 1)]]);
    assert.deepEqual(balance([], (x: { rows: number }) => x.rows, 2), []);
  });

  it('an engine that cannot count chosen tables counts them all after the restore', async () => {
    const engine = {
      id: 'sqlite',
      async tableStats() {
        return [{ schema: 'main', name: 't', rows: 2 }];
      },
    } as unknown as Engine;
    const counter = new RowCounter(engine, into, [entry('main.t', 2)], new AbortController().signal);
    counter.loaded({ name: 't' });
    assert.deepEqual(await counter.finish(), [{ schema: 'main', name: 't', rows: 2 }]);
  });

  it('an early count that fails (one that gave way to the restore) is tried once more at once, then left for after', async () => {
    const rows = new Map([
      ['public.big', 10],
      ['public.stubborn', 4],
    ]);
    const failures = new Map([
      ['public.big', 1],
      ['public.stubborn', 5],
    ]);
    const { engine, calls } = fakeEngine(rows, (names, giveWay) => {
      for (const n of names) {
        const left = failures.get(n) ?? 0;
        if (giveWay && left > 0) {
          failures.set(n, left - 1);
          throw new Error('canceling statement due to user request');
        }
      }
    });
    const counter = new RowCounter(engine, into, [entry('public.big', 10), entry('public.stubborn', 4)], new AbortController().signal);
    counter.loaded({ qualified: 'public.big', name: 'big' });
    await new Promise((r) => setImmediate(r));
    counter.loaded({ qualified: 'public.stubborn', name: 'stubborn' });
    // The restore ends after both tries (an early count takes no new batch once it has ended).
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    const stats = await counter.finish();
    assert.deepEqual(
      stats.map((s) => `${s.schema}.${s.name}=${s.rows}`),
      ['public.big=10', 'public.stubborn=4'],
    );
    const early = calls.filter((c) => c.giveWay).map((c) => c.tables.join(','));
    assert.deepEqual(early, ['public.big', 'public.big', 'public.stubborn', 'public.stubborn'], 'each failed early count tried once more, no more');
    const after = calls.filter((c) => !c.giveWay).flatMap((c) => c.tables);
    assert.deepEqual(after, ['public.stubborn'], 'big was counted early on its second try; stubborn after the restore');
  });

  it('after the restore, the tables the early count is not counting are counted at once beside it; its own table after it, if it is short', async () => {
    const rows = new Map([
      ['public.big', 900],
      ['public.a', 1],
      ['public.b', 2],
    ]);
    const log: string[] = [];
    let release!: () => void;
    const bigCounted = new Promise<void>((r) => (release = r));
    const { engine } = fakeEngine(rows, async (names, giveWay) => {
      log.push(`${giveWay ? 'early' : 'final'} ${names.join(',')}`);
      // The early count of big sees 500 rows and ends only when the test says so.
      if (giveWay && names.includes('public.big')) {
        await bigCounted;
        log.push('early public.big ended');
        return [{ schema: 'public', name: 'big', rows: 500 }];
      }
    });
    const counter = new RowCounter(engine, into, [entry('public.big', 900), entry('public.a', 1), entry('public.b', 2)], new AbortController().signal);
    counter.loaded({ qualified: 'public.big', name: 'big' });
    await new Promise((r) => setImmediate(r));
    counter.loaded({ qualified: 'public.a', name: 'a' }); // waits behind big's early count
    const finished = counter.finish();
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(log.slice(0, 1), ['early public.big']);
    assert.deepEqual(log.slice(1).sort(), ['final public.a', 'final public.b'], 'a and b counted while big is still being counted early');
    release();
    const stats = await finished;
    assert.deepEqual(
      stats.map((s) => `${s.schema}.${s.name}=${s.rows}`),
      ['public.big=900', 'public.a=1', 'public.b=2'],
    );
    assert.deepEqual(log.slice(3), ['early public.big ended', 'final public.big'], 'big, short early, counted again after its early count ended');
  });

  it('a final count that fails is reported only once the early count still running has ended (the new database is dropped next)', async () => {
    const rows = new Map([
      ['public.big', 900],
      ['public.a', 1],
    ]);
    const log: string[] = [];
    let release!: () => void;
    const bigCounted = new Promise<void>((r) => (release = r));
    const { engine } = fakeEngine(rows, async (names, giveWay) => {
      if (giveWay) {
        await bigCounted;
        log.push('early count ended');
        return;
      }
      throw new Error('connection lost');
    });
    const counter = new RowCounter(engine, into, [entry('public.big', 900), entry('public.a', 1)], new AbortController().signal);
    counter.loaded({ qualified: 'public.big', name: 'big' });
    await new Promise((r) => setImmediate(r));
    const finished = counter.finish().then(
      () => log.push('finished'),
      (err: Error) => log.push(`failed: ${err.message}`),
    );
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(log, [], 'not reported while the early count runs');
    release();
    await finished;
    assert.deepEqual(log, ['early count ended', 'failed: connection lost']);
  });
});
