// Rows out as JSON Lines or CSV, faithfully. Each engine hands over its values as Cells (see
// engines/engine.ts): numbers as their exact text (written as JSON numbers, never through a
// float), JSON documents as their own text, binary as base64, times as ISO 8601 text with the zone
// where the type has one. JSON Lines: one object per row, keys in column order. CSV (RFC 4180):
// a header line, every field that needs it quoted, NULL as an empty field and an empty string as
// "" so the two stay apart, and a field with a blank at either end quoted. PostgreSQL's server
// renders the same text itself (engines/postgres/tables.ts, readRendered).

import type { Cell, RowFormat } from '../engines/engine.js';

export type ExportFormat = RowFormat;

const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

function jsonValue(cell: Cell): string {
  if (cell === null) return 'null';
  if (typeof cell === 'boolean') return cell ? 'true' : 'false';
  if (typeof cell === 'string') return JSON.stringify(cell);
  if (Buffer.isBuffer(cell)) return JSON.stringify(cell.toString('base64'));
  if ('number' in cell) return JSON_NUMBER.test(cell.number) ? cell.number : JSON.stringify(cell.number); // NaN, Infinity: as text
  if ('json' in cell) return cell.json;
  return JSON.stringify(cell.time);
}

function csvText(cell: Cell): string | undefined {
  if (cell === null) return undefined;
  if (typeof cell === 'boolean') return cell ? 'true' : 'false';
  if (typeof cell === 'string') return cell;
  if (Buffer.isBuffer(cell)) return cell.toString('base64');
  if ('number' in cell) return cell.number;
  if ('json' in cell) return cell.json;
  return cell.time;
}

/** A blank (ASCII white space) at either end: quoted so that no reader trims it away. */
const BLANK_ENDS = /^[ \t\n\v\f\r]|[ \t\n\v\f\r]$/;

function csvField(text: string | undefined): string {
  if (text === undefined) return '';
  return text === '' || /[",\r\n]/.test(text) || BLANK_ENDS.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export interface RowWriter {
  /** The text before the first row (the CSV header). */
  head(): string;
  row(cells: Cell[]): string;
}

export function rowWriter(format: ExportFormat, columns: { name: string }[]): RowWriter {
  if (format === 'csv') {
    return {
      head: () => columns.map((c) => csvField(c.name)).join(',') + '\r\n',
      row: (cells) => cells.map((c) => csvField(csvText(c))).join(',') + '\r\n',
    };
  }
  const keys = columns.map((c) => JSON.stringify(c.name));
  return {
    head: () => '',
    row: (cells) => `{${cells.map((c, i) => `${keys[i]}:${jsonValue(c)}`).join(',')}}\n`,
  };
}

/** A cell as one line of a terminal table (show --table). */
export function cellText(cell: Cell, width: number): string {
  const text = cell === null ? 'NULL' : Buffer.isBuffer(cell) ? `\\x${cell.subarray(0, width).toString('hex')}` : (csvText(cell) ?? '');
  const flat = text.replace(/\s+/g, ' ');
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}
