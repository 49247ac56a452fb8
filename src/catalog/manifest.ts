// The manifest: everything needed to restore and to judge a backup without the configuration
// that made it. Written last, it is the commit point: a backup without a manifest does not exist.
// The schema is versioned (docs/manifest.md); readers accept every version they know and refuse
// newer ones with a clear message. Secrets never appear here.
//
// This module is what writers need (types, serialisation); the zod schema that readers validate
// with lives in manifest-schema.ts, loaded only by commands that read manifests.

import type { z } from 'zod';
import { IntegrityError } from '../core/errors.js';
import { maskDeep, maskUrlCredentials } from '../core/secrets.js';
import type { artifactSchema, manifestSchema, tableSchema } from './manifest-schema.js';
import type { PhysicalDetails } from '../engines/postgres/physical.js';

export const MANIFEST_FORMAT = 'dbstash.manifest';
export const MANIFEST_VERSION = 1;

export type Manifest = z.infer<typeof manifestSchema>;
export type ArtifactEntry = z.infer<typeof artifactSchema>;
export type TableEntry = z.infer<typeof tableSchema>;

/** The manifest's bytes; a URL password that slipped into a warning or a label is masked on the way. */
export function serializeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify(maskDeep(m, maskUrlCredentials), null, 2) + '\n');
}

export function mainArtifact(m: Manifest): ArtifactEntry {
  const main = m.artifacts.find((a) => a.role === 'main');
  if (!main) throw new IntegrityError(`manifest of ${m.id} lists no main artifact`);
  return main;
}

export function totalRows(m: Manifest): number {
  return m.tables.reduce((sum, t) => sum + t.rows, 0);
}

/** A physical base backup's facts (WAL range, timeline, …); undefined for a logical dump. */
export function physicalOf(m: Manifest): PhysicalDetails | undefined {
  return m.dump.details.physical as PhysicalDetails | undefined;
}
