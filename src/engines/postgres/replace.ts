// --replace for PostgreSQL: a restored table (placed beside the live one in the schema
// dbstash_restored_<stamp>) takes the live table's place in ONE transaction. The live table, its
// partitions, indexes and owned sequences are renamed "<name>__before_<stamp>" and kept; the
// restored ones move into the live schema; then what depends on the live table is carried over,
// as the live database defines it (read with search_path = pg_catalog, so every name is
// qualified): views are re-pointed (CREATE OR REPLACE VIEW with their definition), triggers and
// the foreign keys out of the table re-created, with --cascade-plan the foreign keys of other
// tables pointing at it re-created against the restored table, and each owned sequence set to the
// higher of its live and restored values (no id is handed out twice). Every foreign key is
// checked as it is re-created: restored rows that break one fail the whole swap, and nothing
// changed. Row-level security policies and grants are the backup's (restored with the table).

import { RestoreError, UsageError } from '../../core/errors.js';
import { replacedName, type PlacedTable, type ReplaceImpact, type TableRef, type Target } from '../engine.js';
import { onDatabase, quoteIdent, quoteLiteral, type PgClient } from './connection.js';

const rel = (t: TableRef) => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;

async function oidOf(c: PgClient, t: TableRef): Promise<number> {
  const r = await c.query<{ oid: number | null }>('SELECT to_regclass($1)::oid AS oid', [rel(t)]);
  const oid = r.rows[0]?.oid;
  if (!oid) throw new UsageError(`${t.schema}.${t.name} does not exist in the target: there is nothing to replace`, { hint: 'restore it beside the live tables (without --replace)' });
  return oid;
}

interface Dependents {
  views: { name: string; def: string }[];
  matviews: string[];
  triggers: { name: string; def: string }[];
  fksOut: { name: string; def: string }[];
  fksIn: { table: string; name: string; def: string }[];
  sequences: { column: string; seq: string }[];
  policies: string[];
}

/** What depends on one live table, every name qualified (search_path is pg_catalog here). */
async function dependents(c: PgClient, oid: number, set: number[]): Promise<Dependents> {
  const views = await c.query<{ name: string; def: string; kind: string }>(
    `SELECT DISTINCT v.oid::regclass::text AS name, v.relkind AS kind, CASE WHEN v.relkind = 'v' THEN pg_get_viewdef(v.oid) END AS def
     FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND v.oid <> $1 AND v.relkind IN ('v', 'm')`,
    [oid],
  );
  const triggers = await c.query<{ name: string; def: string }>(`SELECT tgname AS name, pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0`, [oid]);
  const fksOut = await c.query<{ name: string; def: string }>(`SELECT conname AS name, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = $1 AND contype = 'f' AND conparentid = 0`, [oid]);
  const fksIn = await c.query<{ table: string; name: string; def: string }>(
    `SELECT conrelid::regclass::text AS table, conname AS name, pg_get_constraintdef(oid) AS def FROM pg_constraint
     WHERE confrelid = $1 AND contype = 'f' AND conparentid = 0 AND NOT (conrelid = ANY($2::oid[]))`,
    [oid, set],
  );
  const sequences = await c.query<{ column: string; seq: string }>(
    `SELECT a.attname AS column, pg_get_serial_sequence($2, a.attname) AS seq FROM pg_attribute a
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND pg_get_serial_sequence($2, a.attname) IS NOT NULL`,
    [oid, (await c.query<{ r: string }>('SELECT $1::oid::regclass::text AS r', [oid])).rows[0].r],
  );
  const policies = await c.query<{ name: string }>(`SELECT polname AS name FROM pg_policy WHERE polrelid = $1`, [oid]);
  return {
    views: views.rows.filter((v) => v.kind === 'v').map((v) => ({ name: v.name, def: v.def })),
    matviews: views.rows.filter((v) => v.kind === 'm').map((v) => v.name),
    triggers: triggers.rows,
    fksOut: fksOut.rows,
    fksIn: fksIn.rows,
    sequences: sequences.rows,
    policies: policies.rows.map((p) => p.name),
  };
}

/** A connection to target's database whose queries see every name qualified (search_path pg_catalog). */
function withTarget<T>(target: Target, work: (c: PgClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
  return onDatabase(
    target,
    async (c) => {
      await c.query('SET search_path = pg_catalog');
      return work(c);
    },
    signal,
  );
}

export async function replaceImpact(target: Target, table: TableRef, set: TableRef[], stamp: string): Promise<ReplaceImpact> {
  return withTarget(target, async (c) => {
    const oid = await oidOf(c, table);
    const oids = [];
    for (const t of set) oids.push(await oidOf(c, t));
    const d = await dependents(c, oid, oids);
    const kept = replacedName(table.name, stamp);
    const follow = [
      ...set.filter((t) => t.name !== table.name || t.schema !== table.schema).map((t) => `partition ${t.schema}.${t.name}: replaced by the restored one (the live one kept as ${replacedName(t.name, stamp)})`),
      ...d.views.map((v) => `view ${v.name}: re-pointed to the restored table`),
      ...d.triggers.map((t) => `trigger ${t.name}: re-created on the restored table`),
      ...d.fksOut.map((f) => `foreign key ${f.name} (${f.def}): re-created on the restored table, checked against its rows`),
      ...d.sequences.map((s) => `sequence ${s.seq} (${s.column}): the restored table's own, set to the higher of its live and backup values`),
      ...(d.policies.length ? [`row-level security policies (${d.policies.join(', ')}): as in the backup`] : []),
      'indexes, constraints, defaults and grants: as in the backup',
    ];
    const stay = [
      `the live table itself, kept as ${table.schema}.${kept} with its indexes and sequences renamed alike`,
      ...d.matviews.map((m) => `materialized view ${m}: still reads ${kept} (re-create it to read the restored table)`),
    ];
    const referencedBy = d.fksIn.map((f) => `foreign key ${f.name} of ${f.table} (${f.def})`);
    return { follow, stay, referencedBy };
  });
}

export async function replaceTables(target: Target, placed: PlacedTable[], stamp: string, opts: { cascade: boolean; signal: AbortSignal }): Promise<TableRef[]> {
  return withTarget(
    target,
    async (c) => {
      await c.query('BEGIN');
      try {
        await c.query(`SET LOCAL lock_timeout = '30s'`);
        const live = placed.map((p) => p.from);
        const oids: number[] = [];
        for (const t of live) oids.push(await oidOf(c, t));
        for (const t of live) await c.query(`LOCK TABLE ${rel(t)} IN ACCESS EXCLUSIVE MODE`);
        const deps = [];
        for (const oid of oids) deps.push(await dependents(c, oid, oids));
        const fksIn = deps.flatMap((d) => d.fksIn);
        if (fksIn.length > 0 && !opts.cascade) {
          throw new UsageError(`other tables reference ${live.map((t) => `${t.schema}.${t.name}`).join(', ')}: ${fksIn.map((f) => `${f.name} of ${f.table}`).join(', ')}`, {
            hint: 'check the plan with --dry-run and accept re-pointing those foreign keys with --cascade-plan',
          });
        }
        const liveSeq = new Map<string, { value: string; called: boolean }>();
        for (const d of deps) {
          for (const s of d.sequences) {
            const v = await c.query<{ last_value: string; is_called: boolean }>(`SELECT last_value, is_called FROM ${s.seq}`);
            liveSeq.set(s.column + '\u0000' + s.seq, { value: v.rows[0].last_value, called: v.rows[0].is_called });
          }
        }
        // The live tables step aside: the tables, their indexes and their owned sequences renamed.
        const kept: TableRef[] = [];
        for (const [i, t] of live.entries()) {
          const indexes = await c.query<{ schema: string; name: string }>(
            `SELECT n.nspname AS schema, x.relname AS name FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_namespace n ON n.oid = x.relnamespace WHERE i.indrelid = $1`,
            [oids[i]],
          );
          for (const ix of indexes.rows) await c.query(`ALTER INDEX ${rel(ix)} RENAME TO ${quoteIdent(replacedName(ix.name, stamp))}`);
          for (const s of deps[i].sequences) {
            const r = await c.query<{ schema: string; name: string }>(`SELECT n.nspname AS schema, s.relname AS name FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace WHERE s.oid = $1::regclass`, [s.seq]);
            await c.query(`ALTER SEQUENCE ${rel(r.rows[0])} RENAME TO ${quoteIdent(replacedName(r.rows[0].name, stamp))}`);
          }
          await c.query(`ALTER TABLE ${rel(t)} RENAME TO ${quoteIdent(replacedName(t.name, stamp))}`);
          kept.push({ schema: t.schema, name: replacedName(t.name, stamp) });
        }
        // The restored tables take their places.
        for (const p of placed) await c.query(`ALTER TABLE ${rel(p.to)} SET SCHEMA ${quoteIdent(p.from.schema)}`);
        for (const [i, t] of live.entries()) {
          const d = deps[i];
          for (const v of d.views) await c.query(`CREATE OR REPLACE VIEW ${v.name} AS ${v.def}`);
          for (const tg of d.triggers) await c.query(tg.def);
          const has = new Set((await c.query<{ name: string }>(`SELECT conname AS name FROM pg_constraint WHERE conrelid = $1::regclass`, [rel(t)])).rows.map((r) => r.name));
          for (const f of d.fksOut) if (!has.has(f.name)) await c.query(`ALTER TABLE ${rel(t)} ADD CONSTRAINT ${quoteIdent(f.name)} ${f.def}`);
          for (const f of d.fksIn) {
            await c.query(`ALTER TABLE ${f.table} DROP CONSTRAINT ${quoteIdent(f.name)}`);
            await c.query(`ALTER TABLE ${f.table} ADD CONSTRAINT ${quoteIdent(f.name)} ${f.def}`);
          }
          for (const s of d.sequences) {
            const before = liveSeq.get(s.column + '\u0000' + s.seq)!;
            const now = await c.query<{ seq: string | null }>('SELECT pg_get_serial_sequence($1, $2) AS seq', [rel(t), s.column]);
            const seq = now.rows[0].seq;
            if (!seq) continue;
            await c.query(
              `SELECT setval(${quoteLiteral(seq)}, greatest((SELECT last_value FROM ${seq}), ${before.value}::bigint), (SELECT is_called FROM ${seq}) OR ${before.called})`,
            );
          }
        }
        await c.query('COMMIT');
        const schema = placed[0]?.to.schema;
        if (schema) await c.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)}`).catch(() => {}); // only when nothing else is left in it
        return kept;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        if (err instanceof UsageError) throw err;
        const e = err as { message?: string };
        throw new RestoreError(`replacing ${placed.map((p) => `${p.from.schema}.${p.from.name}`).join(', ')} failed, nothing was changed: ${e.message ?? String(err)}`, {
          hint: 'the restored tables stay beside the live ones; compare them and copy rows back by hand',
          cause: err,
        });
      }
    },
    opts.signal,
  );
}
