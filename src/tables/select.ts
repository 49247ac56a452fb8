// Naming tables on the command line and finding them in a backup. "--table orders" finds the one
// table of that name in any schema (refused when two schemas hold one); "--table sales.orders" a
// table in one schema; "--schema sales" every table of a schema. A name the backup does not hold
// is refused with the closest names it does hold. A partitioned table brings its partitions (and
// theirs), so its rows come back whole.

import { UsageError } from '../core/errors.js';
import type { DumpTable, TableRef } from '../engines/engine.js';

export const qualified = (t: TableRef): string => `${t.schema}.${t.name}`;

/** "schema.table" or "table"; a name holding dots is written with double quotes ("my.table"). */
export function parseTableSpec(spec: string): { schema?: string; name: string } {
  const parts: string[] = [];
  let rest = spec.trim();
  while (rest.length > 0) {
    if (rest.startsWith('"')) {
      const end = rest.indexOf('"', 1);
      if (end < 0) throw new UsageError(`--table "${spec}": a quote is not closed`);
      parts.push(rest.slice(1, end));
      rest = rest.slice(end + 1);
    } else {
      const dot = rest.indexOf('.');
      parts.push(dot < 0 ? rest : rest.slice(0, dot));
      rest = dot < 0 ? '' : rest.slice(dot);
    }
    if (rest.startsWith('.')) {
      rest = rest.slice(1);
      if (rest.length === 0) parts.push('');
    } else if (rest.length > 0) throw new UsageError(`--table "${spec}" is not a table name`, { hint: 'write schema.table, or table' });
  }
  if (parts.length === 0 || parts.length > 2 || parts.some((p) => p.length === 0)) {
    throw new UsageError(`--table "${spec}" is not a table name`, { hint: 'write schema.table, or table (quote a name holding a dot: "my.table")' });
  }
  return parts.length === 2 ? { schema: parts[0], name: parts[1] } : { name: parts[0] };
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = next;
    }
  }
  return row[b.length];
}

export function closeNames(wanted: string, names: string[], max = 5): string[] {
  const w = wanted.toLowerCase();
  return names
    .map((n) => {
      const full = n.toLowerCase();
      const bare = full.slice(full.lastIndexOf('.') + 1);
      return { n, d: Math.min(distance(w, full), distance(w, bare), full.includes(w) || w.includes(bare) ? 1 : Infinity) };
    })
    .filter((x) => x.d <= Math.max(2, Math.floor(w.length / 3)))
    .sort((a, b) => a.d - b.d || a.n.localeCompare(b.n))
    .slice(0, max)
    .map((x) => x.n);
}

export interface Selection {
  /** The tables asked for (partitioned ones included). */
  asked: DumpTable[];
  /** Every table whose rows come back: the ones asked for and all their partitions, each once. */
  all: DumpTable[];
}

/**
 * Finds the tables named by `specs` and `schemas` among `tables` (what the backup holds) and adds
 * their partitions. Throws a UsageError naming the closest tables for a name that is not there.
 */
export function selectTables(tables: DumpTable[], specs: string[], schemas: string[], backupId: string): Selection {
  if (specs.length === 0 && schemas.length === 0) throw new UsageError('say which tables: --table <schema.table> (repeatable) or --schema <name>');
  const asked = new Map<string, DumpTable>();
  const defaultSchema = tables.every((t) => t.schema === 'main');
  for (const spec of specs) {
    const { schema, name } = parseTableSpec(spec);
    const hits = tables.filter((t) => t.name === name && (schema === undefined || t.schema === schema));
    if (hits.length === 1) {
      asked.set(qualified(hits[0]), hits[0]);
      continue;
    }
    if (hits.length > 1) {
      throw new UsageError(`--table ${spec}: ${backupId} holds several tables named "${name}" (${hits.map(qualified).join(', ')})`, { hint: `name one with its schema, e.g. --table ${qualified(hits[0])}` });
    }
    const names = tables.map((t) => (defaultSchema ? t.name : qualified(t)));
    const close = closeNames(schema !== undefined && !defaultSchema ? `${schema}.${name}` : name, names);
    throw new UsageError(`${backupId} holds no table ${spec}`, {
      hint: close.length > 0 ? `close names it holds: ${close.join(', ')}` : `it holds ${tables.length} tables; \`dbstash show ${backupId}\` lists them`,
    });
  }
  for (const schema of schemas) {
    const hits = tables.filter((t) => t.schema === schema);
    if (hits.length === 0) {
      const close = closeNames(schema, [...new Set(tables.map((t) => t.schema))]);
      throw new UsageError(`${backupId} holds no table in schema ${schema}`, { hint: close.length > 0 ? `schemas it holds: ${close.join(', ')}` : undefined });
    }
    for (const t of hits) asked.set(qualified(t), t);
  }
  const byName = new Map(tables.map((t) => [qualified(t), t]));
  const all = new Map<string, DumpTable>();
  const add = (t: DumpTable) => {
    if (all.has(qualified(t))) return;
    all.set(qualified(t), t);
    for (const c of t.children) {
      const child = byName.get(qualified(c));
      if (child) add(child);
    }
  };
  for (const t of asked.values()) add(t);
  return { asked: [...asked.values()], all: [...all.values()] };
}

/** The manifest's tables as a dump's tables (engines whose dump has no table of contents to read). */
export function manifestTables(tables: TableRef[]): DumpTable[] {
  return tables.map((t) => ({ schema: t.schema, name: t.name, children: [] }));
}
