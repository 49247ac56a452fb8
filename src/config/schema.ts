// The config file (dbstash.yaml), validated with zod. Every error names the key and, for
// enumerations, the valid values. "${VAR}" and "${VAR:-default}" are interpolated from the
// environment before validation, so secrets stay out of the file.

import { z } from 'zod';

export const compressionSchema = z
  .object({
    algorithm: z.enum(['zstd', 'gzip', 'none']).default('zstd'),
    level: z.number().int().positive().optional(),
  })
  .strict();

export const encryptionSchema = z
  .object({
    recipients: z.array(z.string()).default([]),
    recipientsFile: z.string().optional(),
    passphraseFile: z.string().optional(),
    identityFile: z.string().optional(),
  })
  .strict();

export const retentionSchema = z
  .object({
    keepLast: z.number().int().nonnegative().optional(),
    keepHourly: z.number().int().nonnegative().optional(),
    keepDaily: z.number().int().nonnegative().optional(),
    keepWeekly: z.number().int().nonnegative().optional(),
    keepMonthly: z.number().int().nonnegative().optional(),
    keepYearly: z.number().int().nonnegative().optional(),
    keepWithin: z.string().optional(),
    keepTags: z.array(z.string()).optional(),
    timezone: z.string().optional(),
  })
  .strict();

export const storageSchema = z
  .object({
    url: z.string().min(1),
    optional: z.boolean().default(false),
    retention: retentionSchema.optional(),
  })
  .catchall(z.unknown());

export const scheduleSchema = z
  .object({
    backup: z.string().optional(),
    verify: z.string().optional(),
    prune: z.string().optional(),
    timezone: z.string().optional(),
  })
  .strict();

export const databaseSchema = z
  .object({
    url: z.string().min(1),
    /** Name used in backup ids; defaults to the database name in the URL. */
    name: z.string().optional(),
    env: z.string().optional(),
    storages: z.array(z.string()).optional(),
    compression: compressionSchema.optional(),
    encryption: encryptionSchema.optional(),
    retention: retentionSchema.optional(),
    schedule: scheduleSchema.optional(),
    globals: z.boolean().optional(),
    checksums: z.boolean().optional(),
    jobs: z.number().int().positive().optional(),
    binDir: z.string().optional(),
    scratchUrl: z.string().optional(),
    maxAge: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
  })
  .strict();

export const configSchema = z
  .object({
    env: z.string().optional(),
    /** Default local stash directory (what --output-dir sets). */
    stash: z.string().optional(),
    tempDir: z.string().optional(),
    compression: compressionSchema.optional(),
    encryption: encryptionSchema.optional(),
    retention: retentionSchema.optional(),
    space: z
      .object({ ratio: z.number().positive().optional(), margin: z.number().min(1).max(100).optional() })
      .strict()
      .optional(),
    databases: z.record(z.string(), databaseSchema).default({}),
    storages: z.record(z.string(), storageSchema).default({}),
    notifications: z.array(z.record(z.string(), z.unknown())).optional(),
    daemon: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type ConfigFile = z.infer<typeof configSchema>;
export type DatabaseConfig = z.infer<typeof databaseSchema>;
export type StorageConfig = z.infer<typeof storageSchema>;
