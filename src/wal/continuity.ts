// The state of a series' WAL archive: per timeline, the segments it holds (first and last, and
// when they were archived), and every gap between a starting segment (the oldest kept base
// backup's start) and the newest segment. A timeline switch continues the numbering, so a segment
// number counts as present when any timeline holds it; a segment held only as .partial (the last
// of a timeline before a promotion) also counts.

import { IntegrityError } from '../core/errors.js';
import type { PhysicalDetails } from '../engines/postgres/physical.js';
import { lastSegnoBefore, parseWalName, segmentName, segnoOf, type WalObject } from './names.js';

export interface TimelineWindow {
  timeline: number;
  first: string;
  last: string;
  segments: number;
  firstArchivedAt: string;
  lastArchivedAt: string;
}

export interface ArchiveReport {
  timelines: TimelineWindow[];
  /** Missing segment ranges ("000000010000000000000009" or "…09 to …0C"). */
  gaps: string[];
  /** Timelines whose history file is missing (a recovery cannot follow them). */
  missingHistory: number[];
  /** The newest archived segment, and when. */
  newest?: { name: string; archivedAt: string };
}

/** A run of missing segment numbers, named on the timeline of the segment before it. */
export interface Gap {
  from: number;
  to: number;
  /** "000000010000000000000009", or "…09 to …0C" for a run. */
  name: string;
}

/**
 * The segments missing between `fromSegno` and the newest archived one. A segment number counts
 * as present when any timeline holds it, as a segment or a .partial.
 */
export function findGaps(objects: WalObject[], fromSegno: number, segmentSize: number): Gap[] {
  const present = new Map<number, number>();
  for (const o of objects) {
    const n = parseWalName(o.name, segmentSize);
    if (n?.kind === 'segment' || n?.kind === 'partial') present.set(n.segno!, n.timeline);
  }
  const gaps: Gap[] = [];
  const top = present.size ? Math.max(...present.keys()) : fromSegno - 1;
  for (let s = fromSegno; s <= top; s++) {
    if (present.has(s)) continue;
    const start = s;
    while (s + 1 <= top && !present.has(s + 1)) s++;
    const tl = present.get(start - 1) ?? 1;
    gaps.push({ from: start, to: s, name: start === s ? segmentName(tl, start, segmentSize) : `${segmentName(tl, start, segmentSize)} to ${segmentName(tl, s, segmentSize)}` });
  }
  return gaps;
}

/**
 * Refuses a base backup whose own WAL (from its start to its stop) the archive lacks: it cannot
 * become consistent. A self-contained backup carries that WAL inside.
 */
export function checkBackupWal(objects: WalObject[], p: PhysicalDetails, id: string): void {
  if (p.walIncluded) return;
  const have = new Set(objects.map((o) => parseWalName(o.name, p.walSegmentSize)).filter((n) => n?.kind === 'segment').map((n) => n!.segno!));
  for (let s = segnoOf(p.startLsn, p.walSegmentSize); s <= lastSegnoBefore(p.stopLsn, p.walSegmentSize); s++) {
    if (!have.has(s)) {
      throw new IntegrityError(`the archive lacks ${segmentName(p.timeline, s, p.walSegmentSize)}, which base backup ${id} needs to be consistent`, {
        hint: 'this base backup cannot be restored from this archive; restore from another base backup, or look for the segment in another stash',
      });
    }
  }
}

export function archiveReport(objects: WalObject[], fromSegno: number, segmentSize: number): ArchiveReport {
  const byTimeline = new Map<number, { segnos: number[]; first: Date; last: Date }>();
  const histories = new Set<number>();
  let newest: WalObject | undefined;
  for (const o of objects) {
    const n = parseWalName(o.name, segmentSize);
    if (!n) continue;
    if (n.kind === 'history') {
      histories.add(n.timeline);
      continue;
    }
    if (n.kind !== 'segment') continue;
    const t = byTimeline.get(n.timeline) ?? { segnos: [], first: o.modifiedAt, last: o.modifiedAt };
    t.segnos.push(n.segno!);
    if (o.modifiedAt < t.first) t.first = o.modifiedAt;
    if (o.modifiedAt > t.last) t.last = o.modifiedAt;
    byTimeline.set(n.timeline, t);
    if (!newest || o.modifiedAt > newest.modifiedAt) newest = o;
  }
  const timelines = [...byTimeline.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([timeline, t]) => ({
      timeline,
      first: segmentName(timeline, Math.min(...t.segnos), segmentSize),
      last: segmentName(timeline, Math.max(...t.segnos), segmentSize),
      segments: t.segnos.length,
      firstArchivedAt: t.first.toISOString(),
      lastArchivedAt: t.last.toISOString(),
    }));
  const gaps = findGaps(objects, fromSegno, segmentSize).map((g) => g.name);
  const missingHistory = timelines.map((t) => t.timeline).filter((t) => t > 1 && !histories.has(t));
  return { timelines, gaps, missingHistory, newest: newest ? { name: newest.name, archivedAt: newest.modifiedAt.toISOString() } : undefined };
}

export function describeArchive(r: ArchiveReport): string {
  const parts = r.timelines.map((t) => `timeline ${t.timeline}: ${t.segments} segments ${t.first}…${t.last.slice(-8)} (archived ${t.firstArchivedAt} to ${t.lastArchivedAt})`);
  return `WAL archive: ${parts.join('; ') || 'empty'}; ${r.gaps.length ? `GAPS: ${r.gaps.join(', ')}` : 'no gap'}`;
}

/** One line of a timeline history file: the parent timeline and the LSN where the child branched off it. */
export interface HistoryEntry {
  parent: number;
  switchpoint: bigint;
}

export function parseHistory(text: string): HistoryEntry[] {
  const out: HistoryEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)/.exec(line);
    if (m) out.push({ parent: Number(m[1]), switchpoint: (BigInt(`0x${m[2]}`) << 32n) | BigInt(`0x${m[3]}`) });
  }
  return out;
}

/**
 * The newest timeline a base backup (taken on `timeline`, starting at `startLsn`) can recover
 * along: its own, or one whose history branched off it after the backup started (directly or
 * through others). A timeline that branched before the backup's start is another line of history,
 * which replay from this backup cannot follow (PostgreSQL would not find the checkpoint on it).
 */
export function reachableTimeline(timeline: number, startLsn: bigint, histories: Map<number, HistoryEntry[]>): number {
  let best = timeline;
  for (const [tli, entries] of histories) {
    if (tli <= best) continue;
    const own = entries.find((e) => e.parent === timeline);
    if (own && own.switchpoint > startLsn) best = tli;
  }
  return best;
}
