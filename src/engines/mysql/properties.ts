// A MySQL/MariaDB database's own properties: its default character set and collation, and
// (MariaDB 10.5+) its comment. A backup records them (the dump holds no CREATE DATABASE), a
// restore creates the new database with them, and compares them before the swap.

import { escape } from 'mysql2';
import type { DatabaseProperties } from '../engine.js';
import type { MyConnection } from './connection.js';

export interface MyDatabaseProperties extends DatabaseProperties {
  characterSet: string;
  collation: string;
  /** MariaDB's schema comment; absent where the server has none (MySQL). */
  comment?: string;
}

/** The properties of `database` as the server reports them; undefined when it does not exist. */
export async function readProperties(conn: MyConnection, database: string): Promise<MyDatabaseProperties | undefined> {
  const [rows] = await conn.query(`SELECT * FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`, [database]);
  const row = (rows as Record<string, string | null>[])[0];
  if (!row) return undefined;
  const props: MyDatabaseProperties = { characterSet: row.DEFAULT_CHARACTER_SET_NAME!, collation: row.DEFAULT_COLLATION_NAME! };
  if (typeof row.SCHEMA_COMMENT === 'string') props.comment = row.SCHEMA_COMMENT;
  return props;
}

/** The recorded properties, as far as they are MySQL's (a manifest is JSON: trust nothing). */
export function myProperties(props: DatabaseProperties | undefined): Partial<MyDatabaseProperties> {
  const out: Partial<MyDatabaseProperties> = {};
  if (typeof props?.characterSet === 'string') out.characterSet = props.characterSet;
  if (typeof props?.collation === 'string') out.collation = props.collation;
  if (typeof props?.comment === 'string') out.comment = props.comment;
  return out;
}

/** " CHARACTER SET … COLLATE … COMMENT …" for CREATE/ALTER DATABASE; a comment only where given. */
export function propertyClauses(props: Partial<MyDatabaseProperties>): string {
  const parts: string[] = [];
  if (props.characterSet) parts.push(`CHARACTER SET ${escape(props.characterSet)}`);
  if (props.collation) parts.push(`COLLATE ${escape(props.collation)}`);
  if (props.comment !== undefined) parts.push(`COMMENT ${escape(props.comment)}`);
  return parts.length > 0 ? ' ' + parts.join(' ') : '';
}

/** One line per property of `expected` that `actual` does not have. */
export function propertyDifferences(actual: Partial<MyDatabaseProperties>, expected: Partial<MyDatabaseProperties>): string[] {
  const labels: Record<keyof MyDatabaseProperties, string> = { characterSet: 'default character set', collation: 'default collation', comment: 'comment' };
  const out: string[] = [];
  for (const key of ['characterSet', 'collation', 'comment'] as const) {
    const want = expected[key];
    if (want === undefined) continue;
    // An empty comment and no comment are the same thing to the server.
    const got = actual[key] ?? (key === 'comment' ? '' : undefined);
    if (got !== want) out.push(`${labels[key]} ${JSON.stringify(got ?? null)}, the backup's ${JSON.stringify(want)}`);
  }
  return out;
}
