// Finding a series by the name a person knows it by, over every storage of a command: the name
// `list` prints, the database's real name, the config key or the folder. The stash's manifests
// say which series exist; configured databases count too, so a name resolves before the first
// backup. A name that several series answer to is an error that lists them (resolveSeries).

import type { Destination } from '../backup/backup.js';
import { listBackups, seriesIn, type CatalogListing } from './catalog.js';
import { resolveSeries, type SeriesMatch } from './series.js';

export interface SeriesQuery {
  /** What the person typed; undefined for "every series". */
  name?: string;
  /** Config keys → series identity. */
  configKeys?: Map<string, string>;
  /** Series the config defines (they may have no backup yet). */
  configured?: SeriesMatch[];
}

export interface FoundSeries {
  /** The series named, or undefined when the query names none (or there was no query). */
  match?: SeriesMatch;
  /** How the name matched: "name", "database name", "config key" or "folder". */
  by?: string;
  /** Every listing read, by destination, for the caller to filter. */
  listings: Map<Destination, CatalogListing>;
  /** Every series seen in the storages. */
  known: SeriesMatch[];
}

/** Lists every destination once and resolves the query to one series. */
export async function findSeries(destinations: Destination[], query: SeriesQuery): Promise<FoundSeries> {
  const listings = new Map<Destination, CatalogListing>();
  for (const dest of destinations) listings.set(dest, await listBackups(dest.storage));
  const known = seriesIn([...listings.values()].flatMap((l) => l.entries));
  if (!query.name) return { listings, known };
  const seen = new Set(known.map((k) => k.series.identity));
  const candidates = [...known, ...(query.configured ?? []).filter((c) => !seen.has(c.series.identity))];
  const found = resolveSeries(candidates, query.name, query.configKeys);
  return { match: found?.match, by: found?.by, listings, known };
}

/** How lists and messages show a series: its name, or its folder where two series share the name. */
export function seriesLabels(known: SeriesMatch[]): Map<string, string> {
  const count = new Map<string, number>();
  for (const k of known) count.set(k.series.name, (count.get(k.series.name) ?? 0) + 1);
  return new Map(known.map((k) => [k.series.identity, (count.get(k.series.name) ?? 0) > 1 ? k.series.key : k.series.name]));
}
