// A streaming, line-based reader of mysqldump/mariadb-dump output. It never holds more than a
// line's first few hundred bytes, whatever the size of the dump or of one INSERT, and tells:
// where each statement starts (line number + its first characters, so a restore can report the
// statement the client rejected), how many statements and CREATE TABLEs there are, whether the
// last statement was terminated, and whether the dump ends with the tool's completion trailer
// ("-- Dump completed"). The dump tools escape newlines inside data, so a raw newline only
// appears between statements or inside routine bodies, which the dump wraps in DELIMITER ;;.

import { Transform, type TransformCallback } from 'node:stream';

export const TRAILER = '-- Dump completed';
const HEAD_BYTES = 200;
const TAIL_BYTES = 64;

export interface StatementStart {
  line: number;
  /** First characters of the statement (up to 200). */
  text: string;
}

export interface ScanSummary {
  lines: number;
  statements: number;
  tables: number;
  /** The last non-empty line is the dump tool's completion trailer. */
  trailer: boolean;
  /** A statement was still open (no delimiter) when the input ended. */
  unterminated?: StatementStart;
  /** The first non-empty line, for "is this a MySQL dump at all". */
  firstLine: string;
}

export class SqlScanner {
  private line = 0;
  private head: Buffer[] = [];
  private headLength = 0;
  private tail: Buffer = Buffer.alloc(0);
  private lineBytes = 0;
  private delimiter = ';';
  private current: StatementStart | undefined;
  private lastNonEmpty = '';
  private readonly recent: StatementStart[] = [];
  statements = 0;
  tables = 0;
  firstLine = '';

  /** How many recent statement starts to remember (statementAt looks them up). */
  constructor(private readonly remember = 0) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      if (end > start) this.addBytes(chunk.subarray(start, end));
      if (nl === -1) return;
      this.endLine();
      start = nl + 1;
    }
  }

  private addBytes(part: Buffer): void {
    this.lineBytes += part.length;
    if (this.headLength < HEAD_BYTES) {
      const take = part.subarray(0, HEAD_BYTES - this.headLength);
      this.head.push(take);
      this.headLength += take.length;
    }
    this.tail = Buffer.concat([this.tail, part.subarray(Math.max(0, part.length - TAIL_BYTES))]);
    if (this.tail.length > TAIL_BYTES) this.tail = this.tail.subarray(this.tail.length - TAIL_BYTES);
  }

  private endLine(): void {
    this.line++;
    const head = Buffer.concat(this.head).toString('utf8');
    const tail = this.tail.toString('utf8').trimEnd();
    const trimmed = head.trim();
    const empty = this.lineBytes === 0 || (this.lineBytes <= HEAD_BYTES && trimmed === '');
    this.head = [];
    this.headLength = 0;
    this.tail = Buffer.alloc(0);
    const bytes = this.lineBytes;
    this.lineBytes = 0;
    if (empty) return;
    if (!this.firstLine) this.firstLine = trimmed;
    this.lastNonEmpty = bytes <= HEAD_BYTES ? trimmed : '';

    if (!this.current) {
      if (trimmed.startsWith('--') || trimmed.startsWith('#')) return;
      if (/^\/\*.*\*\/$/.test(trimmed) && !tail.endsWith(this.delimiter)) return;
      const delimiter = /^DELIMITER\s+(\S+)/i.exec(trimmed);
      if (delimiter) {
        this.delimiter = delimiter[1];
        return;
      }
      this.current = { line: this.line, text: head.slice(0, HEAD_BYTES).trimEnd() };
      if (this.remember > 0) {
        this.recent.push(this.current);
        if (this.recent.length > this.remember) this.recent.shift();
      }
      if (/^CREATE\s+TABLE\b/i.test(trimmed)) this.tables++;
    }
    if (tail.endsWith(this.delimiter)) {
      this.statements++;
      this.current = undefined;
    }
  }

  /** The remembered statement that starts at `line`, or the last one starting before it. */
  statementAt(line: number): StatementStart | undefined {
    let found: StatementStart | undefined;
    for (const s of this.recent) if (s.line <= line) found = s;
    return found;
  }

  finish(): ScanSummary {
    if (this.lineBytes > 0) this.endLine();
    return {
      lines: this.line,
      statements: this.statements,
      tables: this.tables,
      trailer: this.lastNonEmpty.startsWith(TRAILER),
      unterminated: this.current,
      firstLine: this.firstLine,
    };
  }
}

/**
 * Lines the dump tools write only after their snapshot is open (with --single-transaction the
 * tool starts its transaction before it reads any table, routine or event).
 */
const AFTER_SNAPSHOT = ['-- Table structure for table', '-- Dumping events for database', '-- Dumping routines for database', TRAILER];

/**
 * Passes a dump through unchanged, remembering only its last bytes (for the trailer check) and
 * noticing the first line that proves the tool's snapshot is open.
 */
export class TrailerWatch extends Transform {
  private tail: Buffer = Buffer.alloc(0);
  private snapshotSeen = false;
  private onSnapshot: (() => void) | undefined;
  /** Resolves once the dump shows it reads inside its snapshot. */
  readonly snapshotOpen: Promise<void>;

  constructor() {
    super({ highWaterMark: 1 << 20 });
    this.snapshotOpen = new Promise((resolve) => (this.onSnapshot = resolve));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const previous = this.tail;
    this.tail = Buffer.concat([previous, chunk.subarray(Math.max(0, chunk.length - 256))]);
    if (this.tail.length > 256) this.tail = this.tail.subarray(this.tail.length - 256);
    if (!this.snapshotSeen) {
      const window = Buffer.concat([previous.subarray(Math.max(0, previous.length - 64)), chunk]).toString('latin1');
      if (AFTER_SNAPSHOT.some((marker) => window.includes(marker))) {
        this.snapshotSeen = true;
        this.onSnapshot?.();
      }
    }
    done(null, chunk);
  }

  /** The last line seen, and whether it is the dump tool's completion trailer. */
  lastLine(): { text: string; complete: boolean } {
    const text = this.tail.toString('utf8').trimEnd();
    const last = text.slice(text.lastIndexOf('\n') + 1);
    return { text: last, complete: last.startsWith(TRAILER) };
  }
}

/**
 * The first characters (up to 200) of line `line` (1-based) of a stream, or undefined when the
 * stream has fewer lines. Reads only as far as that line; memory stays at one chunk and 200 bytes
 * whatever the length of the lines.
 */
export async function readLine(stream: AsyncIterable<Buffer>, line: number): Promise<string | undefined> {
  let current = 1;
  const head: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    let from = 0;
    while (current < line) {
      const nl = chunk.indexOf(0x0a, from);
      if (nl === -1) break;
      current++;
      from = nl + 1;
    }
    if (current < line) continue;
    const nl = chunk.indexOf(0x0a, from);
    const end = Math.min(nl === -1 ? chunk.length : nl, from + HEAD_BYTES - length);
    head.push(Buffer.from(chunk.subarray(from, end)));
    length += end - from;
    if (nl !== -1 || length >= HEAD_BYTES) break;
  }
  if (current < line) return undefined;
  return Buffer.concat(head).toString('utf8').trimEnd();
}
