// Retention policy: which backups to keep, with the reasons, as a pure function of the backups,
// the policy and a time zone (no clock, no storage). The meaning follows restic's `forget`:
//
// - keepLast N keeps the N newest backups.
// - keepHourly/Daily/Weekly/Monthly/Yearly N walk the backups newest first and keep the newest
//   backup of each period until N periods that HAVE backups are covered (gaps cost nothing).
//   Periods are calendar periods in the policy's time zone (default UTC); weeks are ISO weeks
//   (Monday first, week 1 holds the year's first Thursday, so 2026-W53 runs into January 2027).
//   An hour is a wall-clock hour together with its UTC offset, so the hour repeated when DST ends
//   is two periods, and the hour skipped when it starts is none.
// - keepWithin D keeps every backup taken within D of the NEWEST backup (not of now: a stopped
//   schedule never lets retention eat the last backups).
// - keepTags keeps every backup carrying one of the tags (labels, as "key" or "key=value").
// - A pinned backup (newest verified, in use by a restore) is kept whatever the policy says.
// A backup is kept when any rule keeps it. With no keep rule at all the default applies.

import { ConfigError } from '../core/errors.js';
import { parseDuration } from '../core/format.js';

export interface RetentionPolicy {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  /** A duration such as "36h", "14d", "8w". */
  keepWithin?: string;
  keepTags?: string[];
  /** IANA time zone for the calendar periods (default UTC). */
  timezone?: string;
}

export const DEFAULT_POLICY: RetentionPolicy = { keepDaily: 7, keepWeekly: 4, keepMonthly: 12 };

export interface RetentionCandidate {
  id: string;
  takenAt: Date;
  tags?: string[];
  /** Why this backup must stay whatever the policy says; undefined when it may go. */
  pinned?: string;
}

export interface RetentionDecision {
  id: string;
  takenAt: Date;
  keep: boolean;
  /** Every rule that keeps it, or why it goes. */
  reasons: string[];
}

const RULES = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly', 'keepWithin', 'keepTags'] as const;

/** The policy itself, or the default when it sets no keep rule (a time zone alone is not a rule). */
export function effectivePolicy(policy: RetentionPolicy | undefined): RetentionPolicy {
  const p = policy ?? {};
  const hasRule = RULES.some((r) => (r === 'keepTags' ? (p.keepTags?.length ?? 0) > 0 : p[r] !== undefined));
  return hasRule ? p : { ...DEFAULT_POLICY, timezone: p.timezone };
}

/** Layered policies: the most specific one that sets anything wins whole (restic has no merging either). */
export function pickPolicy(...layers: (RetentionPolicy | undefined)[]): RetentionPolicy {
  const chosen = layers.find((l) => l && RULES.some((r) => l[r] !== undefined));
  const timezone = layers.find((l) => l?.timezone)?.timezone;
  return effectivePolicy({ ...(chosen ?? {}), timezone: chosen?.timezone ?? timezone });
}

export function describePolicy(policy: RetentionPolicy): string {
  const p = effectivePolicy(policy);
  const parts: string[] = [];
  if (p.keepLast !== undefined) parts.push(`last ${p.keepLast}`);
  if (p.keepHourly !== undefined) parts.push(`${p.keepHourly} hourly`);
  if (p.keepDaily !== undefined) parts.push(`${p.keepDaily} daily`);
  if (p.keepWeekly !== undefined) parts.push(`${p.keepWeekly} weekly`);
  if (p.keepMonthly !== undefined) parts.push(`${p.keepMonthly} monthly`);
  if (p.keepYearly !== undefined) parts.push(`${p.keepYearly} yearly`);
  if (p.keepWithin !== undefined) parts.push(`within ${p.keepWithin}`);
  if (p.keepTags?.length) parts.push(`tags ${p.keepTags.join(',')}`);
  return `${parts.join(', ') || 'nothing'} (${p.timezone ?? 'UTC'})`;
}

interface LocalTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  /** Minutes east of UTC. */
  offset: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timezone: string): Intl.DateTimeFormat {
  let f = formatters.get(timezone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: timezone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
    } catch {
      throw new ConfigError(`retention: unknown time zone "${timezone}"`, { hint: 'use an IANA name such as UTC, Europe/Berlin or America/New_York' });
    }
    formatters.set(timezone, f);
  }
  return f;
}

export function assertTimezone(timezone: string): void {
  formatterFor(timezone);
}

function localTime(at: Date, timezone: string): LocalTime {
  const parts: Record<string, number> = {};
  for (const p of formatterFor(timezone).formatToParts(at)) if (p.type !== 'literal') parts[p.type] = Number(p.value);
  const wall = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
  const offset = Math.round((wall - Math.floor(at.getTime() / 1000) * 1000) / 60000);
  return { year: parts.year, month: parts.month, day: parts.day, hour: parts.hour, offset };
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** ISO 8601 week-numbering year and week of a calendar date. */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const d = new Date(Date.UTC(year, month - 1, day));
  const weekday = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const weekYear = d.getUTCFullYear();
  const week = Math.ceil(((d.getTime() - Date.UTC(weekYear, 0, 1)) / 86400000 + 1) / 7);
  return { year: weekYear, week };
}

type Bucket = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

function periodOf(bucket: Bucket, t: LocalTime): string {
  const date = `${t.year}-${pad(t.month)}-${pad(t.day)}`;
  switch (bucket) {
    case 'hourly':
      return `${date}T${pad(t.hour)} ${formatOffset(t.offset)}`;
    case 'daily':
      return date;
    case 'weekly': {
      const w = isoWeek(t.year, t.month, t.day);
      return `${w.year}-W${pad(w.week)}`;
    }
    case 'monthly':
      return `${t.year}-${pad(t.month)}`;
    case 'yearly':
      return String(t.year);
  }
}

const BUCKETS: { bucket: Bucket; rule: 'keepHourly' | 'keepDaily' | 'keepWeekly' | 'keepMonthly' | 'keepYearly' }[] = [
  { bucket: 'hourly', rule: 'keepHourly' },
  { bucket: 'daily', rule: 'keepDaily' },
  { bucket: 'weekly', rule: 'keepWeekly' },
  { bucket: 'monthly', rule: 'keepMonthly' },
  { bucket: 'yearly', rule: 'keepYearly' },
];

function hasTag(candidate: RetentionCandidate, tag: string): boolean {
  return (candidate.tags ?? []).some((t) => t === tag || t.split('=')[0] === tag);
}

/**
 * Decides for every backup of ONE series (one database and environment in one storage).
 * Returns the decisions newest first. Throws ConfigError for an invalid time zone or duration.
 */
export function applyRetention(backups: RetentionCandidate[], policy: RetentionPolicy | undefined): RetentionDecision[] {
  const p = effectivePolicy(policy);
  const timezone = p.timezone ?? 'UTC';
  formatterFor(timezone);
  let withinMs: number | undefined;
  if (p.keepWithin !== undefined) {
    withinMs = parseDuration(p.keepWithin);
    if (withinMs === undefined) {
      throw new ConfigError(`retention: keepWithin "${p.keepWithin}" is not a duration`, { hint: 'use a number with a unit: 36h, 14d, 8w' });
    }
  }
  const sorted = [...backups].sort((a, b) => b.takenAt.getTime() - a.takenAt.getTime() || b.id.localeCompare(a.id));
  const newest = sorted[0]?.takenAt.getTime();
  const left = Object.fromEntries(BUCKETS.map(({ rule }) => [rule, p[rule] ?? 0])) as Record<(typeof BUCKETS)[number]['rule'], number>;
  const lastPeriod = new Map<Bucket, string>();
  return sorted.map((b, index) => {
    const reasons: string[] = [];
    if (b.pinned) reasons.push(b.pinned);
    if (p.keepLast !== undefined && index < p.keepLast) reasons.push(`last ${index + 1} of ${p.keepLast}`);
    const local = localTime(b.takenAt, timezone);
    for (const { bucket, rule } of BUCKETS) {
      const period = periodOf(bucket, local);
      if (left[rule] > 0 && lastPeriod.get(bucket) !== period) {
        left[rule]--;
        reasons.push(`${bucket} ${period}`);
      }
      lastPeriod.set(bucket, period);
    }
    if (withinMs !== undefined && newest - b.takenAt.getTime() <= withinMs) reasons.push(`within ${p.keepWithin} of the newest`);
    for (const tag of p.keepTags ?? []) if (hasTag(b, tag)) reasons.push(`tag ${tag}`);
    const keep = reasons.length > 0;
    return { id: b.id, takenAt: b.takenAt, keep, reasons: keep ? reasons : ['no rule keeps it'] };
  });
}
