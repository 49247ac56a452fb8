// The manifest's zod schema and its parser, for every command that reads manifests. Types and
// serialisation are in manifest.ts, which writers load without zod.

import { z } from 'zod';
import { IntegrityError } from '../core/errors.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type Manifest } from './manifest.js';

const stageSpec = z.object({ id: z.string(), params: z.record(z.string(), z.unknown()) });

export const artifactSchema = z.object({
  /** "main" (the dump) or "globals" (roles, users and grants). */
  role: z.enum(['main', 'globals']),
  /** File name inside the database's folder of the stash. */
  file: z.string(),
  /** Format of the raw dump: "dump" (pg custom), "sqlite", "sql", "tar", "globals.sql". */
  format: z.string(),
  stages: z.array(stageSpec),
  rawSize: z.number().int().nonnegative(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export const tableSchema = z.object({
  schema: z.string(),
  name: z.string(),
  rows: z.number().int().nonnegative(),
  checksum: z.string().optional(),
});

export const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  version: z.number().int().positive(),
  id: z.string(),
  tool: z.object({ name: z.literal('dbstash'), version: z.string() }),
  engine: z.enum(['postgres', 'mysql', 'sqlite']),
  database: z.object({
    name: z.string(),
    /** Connection URL or file path with the password removed. */
    url: z.string(),
    host: z.string().optional(),
    port: z.number().optional(),
    user: z.string().optional(),
    serverVersion: z.string(),
    sizeBytes: z.number().optional(),
    /** The database's own properties (encoding, collation, owner, grants, settings, …), engine-specific. */
    properties: z.record(z.string(), z.unknown()).optional(),
  }),
  environment: z.string(),
  /** The series (one database on one server) the backup belongs to; absent in backups made before series. */
  series: z.object({ key: z.string(), name: z.string(), identity: z.string() }).optional(),
  /** "safety": taken by a restore before it replaced a database in place; never latest, never in retention. */
  kind: z.enum(['backup', 'safety']).optional(),
  dump: z.object({
    tool: z.string(),
    version: z.string(),
    path: z.string(),
    args: z.array(z.string()),
    details: z.record(z.string(), z.unknown()).default({}),
  }),
  artifacts: z.array(artifactSchema).min(1),
  tables: z.array(tableSchema),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number().nonnegative(),
  /** Machine that ran the backup. */
  host: z.string(),
  labels: z.record(z.string(), z.string()).default({}),
  /** Warnings raised while the backup ran (pooler, stale lock replaced, …). */
  warnings: z.array(z.string()).default([]),
  /** Extension point for later capabilities (encryption recipients, signature, anomaly, …). */
  extra: z.record(z.string(), z.unknown()).default({}),
});

/** Parses and validates a manifest; every failure is an IntegrityError naming the problem. */
export function parseManifest(bytes: Buffer | string, where: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString());
  } catch (err) {
    throw new IntegrityError(`manifest ${where} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const version = (json as { version?: unknown })?.version;
  if (typeof version === 'number' && version > MANIFEST_VERSION) {
    throw new IntegrityError(`manifest ${where} has version ${version}; this dbstash reads up to ${MANIFEST_VERSION}`, {
      hint: 'upgrade dbstash to read this backup',
    });
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new IntegrityError(`manifest ${where} is invalid: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}

