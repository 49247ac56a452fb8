// Comparing a restored database's tables with the manifest: row counts always, content checksums
// with --deep. The first mismatch becomes the message ("table public.rental: 16040 rows, manifest
// says 16044"); every table's comparison goes into the record.

import type { TableEntry } from '../catalog/manifest.js';
import type { VerifyRecord } from '../catalog/records.js';
import type { TableStat } from '../engines/engine.js';

export type TableComparison = NonNullable<VerifyRecord['tables']>[number];

export interface Comparison {
  tables: TableComparison[];
  /** Every mismatch of a manifest table, in manifest order; empty when everything matched. */
  problems: string[];
  /** Restored tables the manifest does not list. */
  extras: string[];
}

const qualified = (t: { schema: string; name: string }) => `${t.schema}.${t.name}`;

export function compareTables(expected: TableEntry[], actual: TableStat[], opts: { checksums: boolean }): Comparison {
  const found = new Map(actual.map((t) => [qualified(t), t]));
  const problems: string[] = [];
  const tables = expected.map((want): TableComparison => {
    const name = qualified(want);
    const got = found.get(name);
    found.delete(name);
    if (!got) {
      problems.push(`table ${name}: missing after restore, manifest says ${want.rows} rows`);
      return { schema: want.schema, name: want.name, expected: want.rows, ok: false };
    }
    const row: TableComparison = { schema: want.schema, name: want.name, expected: want.rows, actual: got.rows, ok: got.rows === want.rows };
    if (!row.ok) problems.push(`table ${name}: ${got.rows} rows, manifest says ${want.rows}`);
    if (opts.checksums) {
      row.checksumMatch = got.checksum !== undefined && got.checksum === want.checksum;
      if (!row.checksumMatch) {
        row.ok = false;
        if (got.rows === want.rows) problems.push(`table ${name}: content checksum ${got.checksum ?? '-'}, manifest says ${want.checksum ?? '-'}`);
      }
    }
    return row;
  });
  const extras = [...found.values()].map((extra) => `table ${qualified(extra)}: ${extra.rows} rows restored, but the manifest does not list it`);
  return { tables, problems, extras };
}

/** "table a: …" or "table a: … (and 3 more mismatches)". */
export function summarizeProblems(problems: string[]): string {
  return problems.length > 1 ? `${problems[0]} (and ${problems.length - 1} more mismatch${problems.length > 2 ? 'es' : ''})` : problems[0];
}
