// Write-ahead log file names, LSNs and where each file lives in a stash.
//
// PostgreSQL names its WAL files after the timeline and the segment number:
//   000000010000000A000000FF            a segment: timeline 1, log 0xA, segment 0xFF of that log
//   000000010000000A000000FF.partial    the last, unfinished segment of a timeline (at promotion)
//   000000010000000A000000FF.00000028.backup   a base backup's start and stop (backup history)
//   00000002.history                    the timelines a new timeline branched from
// A segment number is log × (4 GiB / segment size) + segment; an LSN "A/FF000028" is a 64-bit
// byte position (high/low 32 bits in hex).
//
// In a stash, the archive of a series lives under <series>/wal/: segments and their .partial and
// .backup files in one folder per timeline and log (the first 16 hex digits of the name), history
// files under wal/history/. Each object's name carries the SHA-256 of the raw file:
//   <series>/wal/000000010000000A/000000010000000A000000FF-<sha256>.zst[.age]
// so a push can tell "already archived, same bytes" from "another cluster's file under this name"
// with one listing, and a fetch can check the bytes it decoded without any other object.

export type WalKind = 'segment' | 'partial' | 'backup' | 'history';

export interface WalName {
  name: string;
  kind: WalKind;
  timeline: number;
  /** The segment number (segments, partial and backup files); undefined for history files. */
  segno?: number;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$/;
const BACKUP = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;

export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;
const FOUR_GIB = 0x1_0000_0000;

/** Segments per 4 GiB "log" for a segment size. */
function perLog(segmentSize: number): number {
  return FOUR_GIB / segmentSize;
}

/** Parses a WAL file name as PostgreSQL gives it to archive_command / restore_command; undefined when it is none. */
export function parseWalName(name: string, segmentSize = DEFAULT_SEGMENT_SIZE): WalName | undefined {
  const history = HISTORY.exec(name);
  if (history) return { name, kind: 'history', timeline: parseInt(history[1], 16) };
  for (const [re, kind] of [
    [SEGMENT, 'segment'],
    [PARTIAL, 'partial'],
    [BACKUP, 'backup'],
  ] as const) {
    const m = re.exec(name);
    if (m) {
      const log = parseInt(m[2], 16);
      const seg = parseInt(m[3], 16);
      return { name, kind, timeline: parseInt(m[1], 16), segno: log * perLog(segmentSize) + seg };
    }
  }
  return undefined;
}

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');

export function segmentName(timeline: number, segno: number, segmentSize = DEFAULT_SEGMENT_SIZE): string {
  const per = perLog(segmentSize);
  return `${hex8(timeline)}${hex8(Math.floor(segno / per))}${hex8(segno % per)}`;
}

export function historyName(timeline: number): string {
  return `${hex8(timeline)}.history`;
}

/** "16/B374D848" → its byte position. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw new Error(`not an LSN: "${lsn}"`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(pos: bigint): string {
  return `${(pos >> 32n).toString(16).toUpperCase()}/${(pos & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function isLsn(text: string): boolean {
  return /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(text.trim());
}

/** The segment number holding the byte at `lsn`. */
export function segnoOf(lsn: string | bigint, segmentSize = DEFAULT_SEGMENT_SIZE): number {
  const pos = typeof lsn === 'string' ? parseLsn(lsn) : lsn;
  return Number(pos / BigInt(segmentSize));
}

/**
 * The segment that holds the last byte before `lsn`: the one a backup ending at `lsn` needs last
 * (an end LSN at a segment boundary belongs to the segment before it).
 */
export function lastSegnoBefore(lsn: string | bigint, segmentSize = DEFAULT_SEGMENT_SIZE): number {
  const pos = typeof lsn === 'string' ? parseLsn(lsn) : lsn;
  return Number((pos - 1n) / BigInt(segmentSize));
}

/** The archive's folder in a series: <series>/wal/ */
export function walPrefix(seriesKey: string): string {
  return `${seriesKey}/wal/`;
}

/** The folder a WAL file's objects live in, below the series' wal/ folder. */
export function walFolder(name: string): string {
  return HISTORY.test(name) ? 'history' : name.slice(0, 16);
}

/** Where every copy of `name` is found: list this prefix. */
export function walObjectPrefix(seriesKey: string, name: string): string {
  return `${walPrefix(seriesKey)}${walFolder(name)}/${name}-`;
}

export function walObjectKey(seriesKey: string, name: string, sha256: string, suffix: string): string {
  return `${walObjectPrefix(seriesKey, name)}${sha256}${suffix}`;
}

export interface WalObject {
  key: string;
  name: string;
  sha256: string;
  /** The stages' file-name suffix (".zst", ".zst.age", …). */
  suffix: string;
  size: number;
  modifiedAt: Date;
}

const OBJECT = /^(.+)-([0-9a-f]{64})((?:\.[a-z0-9]+)*)$/;

/** Reads a WAL object's key back into its parts; undefined for anything else under wal/. */
export function parseWalObject(info: { key: string; size: number; modifiedAt: Date }): WalObject | undefined {
  const base = info.key.split('/').pop() ?? '';
  const m = OBJECT.exec(base);
  if (!m || !parseWalName(m[1])) return undefined;
  return { key: info.key, name: m[1], sha256: m[2], suffix: m[3], size: info.size, modifiedAt: info.modifiedAt };
}

/** The WAL objects of a series among a storage's listing. */
export function walObjectsIn(objects: { key: string; size: number; modifiedAt: Date }[], seriesKey: string): WalObject[] {
  const prefix = walPrefix(seriesKey);
  return objects.filter((o) => o.key.startsWith(prefix)).map(parseWalObject).filter((o): o is WalObject => o !== undefined);
}
