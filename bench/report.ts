// Turns the runs of one benchmark into medians, per-round ratios and PASS/FAIL verdicts, and
// renders them as text. Ratios are computed two ways, because the machine may be shared: the
// ratio of the medians, and the spread (min–max) of the ratios of runs from the same round,
// which ran seconds apart under similar load.

import type { BenchDatabase } from './database.js';
import type { Comparison } from './scenarios.js';
import { median } from './measure.js';
import { renderProfile, type Profile } from './profile.js';

export interface RunRecord {
  scenario: string;
  round: number;
  wallMs: number;
  userMs: number;
  sysMs: number;
  cpuMs: number;
  /** CPU of the PostgreSQL backends serving the command; not part of cpuMs. */
  serverCpuMs: number;
  rootPeakRss: number;
  treePeakRss: { bytes: number; name: string };
  size?: number;
  loadAverage: number;
}

export interface ScenarioSummary {
  id: string;
  label: string;
  skipped?: string;
  runs: RunRecord[];
  median?: { wallMs: number; cpuMs: number; userMs: number; sysMs: number; serverCpuMs: number; size?: number };
  /** The highest peak RSS of the scenario's own process (for dbstash: node) over all rounds. */
  peakRss?: number;
  treePeakRss?: { bytes: number; name: string };
}

export interface ComparisonResult extends Comparison {
  ratio: number;
  perRound: number[];
  min: number;
  max_: number;
  pass?: boolean;
}

export interface ScaleResult {
  database: BenchDatabase;
  rounds: number;
  scenarios: ScenarioSummary[];
  comparisons: ComparisonResult[];
  targets: Target[];
  profile?: Profile;
  /** Runs that failed; they are left out of the medians. */
  failures: { scenario: string; round: number; reason: string }[];
}

export interface Target {
  name: string;
  value: string;
  limit: string;
  pass: boolean;
}

export const MB = 1024 * 1024;
export const RSS_LIMIT = 150 * MB;
/** "Flat": peak RSS at the largest scale at most this much above the smallest scale's. */
export const RSS_FLAT_GROWTH = 0.15;

export function summarize(id: string, label: string, runs: RunRecord[], skipped?: string): ScenarioSummary {
  if (skipped || runs.length === 0) return { id, label, skipped: skipped ?? 'no runs', runs };
  const sizes = runs.map((r) => r.size).filter((s): s is number => s !== undefined);
  return {
    id,
    label,
    runs,
    median: {
      wallMs: median(runs.map((r) => r.wallMs)),
      cpuMs: median(runs.map((r) => r.cpuMs)),
      userMs: median(runs.map((r) => r.userMs)),
      sysMs: median(runs.map((r) => r.sysMs)),
      serverCpuMs: median(runs.map((r) => r.serverCpuMs)),
      size: sizes.length ? median(sizes) : undefined,
    },
    peakRss: Math.max(...runs.map((r) => r.rootPeakRss)),
    treePeakRss: runs.map((r) => r.treePeakRss).reduce((a, b) => (b.bytes > a.bytes ? b : a)),
  };
}

function metricOf(run: RunRecord, metric: Comparison['metric']): number | undefined {
  return metric === 'size' ? run.size : run[metric];
}

export function compare(c: Comparison, summaries: ScenarioSummary[]): ComparisonResult | undefined {
  const of = summaries.find((s) => s.id === c.of);
  const against = summaries.find((s) => s.id === c.against);
  if (!of?.median || !against?.median) return undefined;
  const medianOf = c.metric === 'size' ? of.median.size : of.median[c.metric];
  const medianAgainst = c.metric === 'size' ? against.median.size : against.median[c.metric];
  if (medianOf === undefined || !medianAgainst) return undefined;
  const perRound: number[] = [];
  for (const run of of.runs) {
    const partner = against.runs.find((r) => r.round === run.round);
    const a = partner && metricOf(partner, c.metric);
    const b = metricOf(run, c.metric);
    if (a && b !== undefined) perRound.push(b / a);
  }
  const ratio = medianOf / medianAgainst;
  return {
    ...c,
    ratio,
    perRound,
    min: Math.min(...perRound),
    max_: Math.max(...perRound),
    pass: c.max === undefined ? undefined : ratio <= c.max,
  };
}

export function scaleTargets(comparisons: ComparisonResult[], summaries: ScenarioSummary[]): Target[] {
  const targets: Target[] = comparisons
    .filter((c) => c.max !== undefined)
    .map((c) => ({ name: c.label, value: `${c.ratio.toFixed(2)}×`, limit: `≤ ${c.max!.toFixed(2)}×`, pass: !!c.pass }));
  // Export: the rows' streaming rate, the fixed part (throwaway server, restore of the table) taken out.
  const all = summaries.find((x) => x.id === 'dbstash_export')?.median;
  const none = summaries.find((x) => x.id === 'dbstash_export_none')?.median;
  if (all?.size && none && all.wallMs > none.wallMs) {
    const rate = all.size / ((all.wallMs - none.wallMs) / 1000);
    targets.push({
      name: `export streams JSON Lines (${formatMB(all.size)} in ${((all.wallMs - none.wallMs) / 1000).toFixed(2)} s beyond the ${(none.wallMs / 1000).toFixed(2)} s of --limit 0)`,
      value: `${(rate / MB).toFixed(0)} MB/s`,
      limit: '≥ 50 MB/s',
      pass: rate >= 50 * MB,
    });
  }
  for (const s of summaries.filter((x) => x.id.startsWith('dbstash') && x.peakRss)) {
    const what = s.id === 'dbstash' ? 'dbstash' : s.label.replace(/ \(.*\)$/, '');
    targets.push({ name: `${what}: peak RSS of the node process`, value: formatMB(s.peakRss!), limit: `≤ ${formatMB(RSS_LIMIT)}`, pass: s.peakRss! <= RSS_LIMIT });
  }
  return targets;
}

/** Peak RSS flat across scales: the largest scale's at most RSS_FLAT_GROWTH above the smallest's. */
export function flatnessTarget(results: ScaleResult[]): Target | undefined {
  const peaks = results
    .map((r) => ({ scale: r.database.scale, rss: r.scenarios.find((s) => s.id === 'dbstash')?.peakRss }))
    .filter((p): p is { scale: number; rss: number } => !!p.rss)
    .sort((a, b) => a.scale - b.scale);
  if (peaks.length < 2) return undefined;
  const first = peaks[0];
  const last = peaks[peaks.length - 1];
  return {
    name: `dbstash peak RSS flat from scale ${first.scale} to ${last.scale}`,
    value: `${formatMB(first.rss)} → ${formatMB(last.rss)} (${signedPercent(last.rss / first.rss - 1)})`,
    limit: `≤ +${Math.round(RSS_FLAT_GROWTH * 100)}%`,
    pass: last.rss <= first.rss * (1 + RSS_FLAT_GROWTH),
  };
}

export function formatMB(bytes: number): string {
  return `${(bytes / MB).toFixed(bytes < 10 * MB ? 2 : 1)} MB`;
}

function signedPercent(x: number): string {
  return `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ')).join('\n');
}

export function renderScale(result: ScaleResult): string {
  const db = result.database;
  const lines: string[] = [];
  lines.push(`scale ${db.scale}: database ${db.name}, ${formatMB(db.sizeBytes)} (${db.tables.map((t) => `${t.name} ${formatMB(t.sizeBytes)}`).join(', ')}), built in ${db.buildSeconds.toFixed(0)} s; ${result.rounds} rounds`);
  lines.push('');
  const rows: string[][] = [['command (medians of the rounds)', 'wall', 'CPU user+sys', 'server CPU', 'peak RSS (largest process)', 'output']];
  for (const s of result.scenarios) {
    if (!s.median) continue;
    rows.push([
      s.label,
      seconds(s.median.wallMs),
      `${seconds(s.median.cpuMs)} (${(s.median.userMs / 1000).toFixed(1)}+${(s.median.sysMs / 1000).toFixed(1)})`,
      seconds(s.median.serverCpuMs),
      `${formatMB(s.treePeakRss?.bytes ?? 0)} (${s.treePeakRss?.name ?? '?'})`,
      s.median.size !== undefined ? formatMB(s.median.size) : '-',
    ]);
  }
  lines.push(table(rows));
  for (const s of result.scenarios.filter((x) => x.skipped)) lines.push(`skipped: ${s.label}: ${s.skipped}`);
  for (const f of result.failures) lines.push(`FAILED run: ${f.scenario} in round ${f.round}: ${f.reason}`);
  lines.push('');
  const ratioRows: string[][] = [['ratio', 'of medians', 'per round min–max', 'target', '']];
  for (const c of result.comparisons) {
    ratioRows.push([
      c.label,
      `${c.ratio.toFixed(3)}×`,
      `${c.min.toFixed(3)}–${c.max_.toFixed(3)}`,
      c.max !== undefined ? `≤ ${c.max}×` : '',
      c.pass === undefined ? '' : c.pass ? 'PASS' : 'FAIL',
    ]);
  }
  lines.push(table(ratioRows));
  if (result.profile) lines.push('', renderProfile(result.profile));
  return lines.join('\n');
}

export function renderTargets(targets: Target[]): string {
  return table([['target', 'measured', 'limit', ''], ...targets.map((t) => [t.name, t.value, t.limit, t.pass ? 'PASS' : 'FAIL'])]);
}
