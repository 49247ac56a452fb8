// The config file (dbstash.yaml), validated with zod. Every error names the key and, for
// enumerations, the valid values. "${VAR}" and "${VAR:-default}" are interpolated from the
// environment before validation, so secrets stay out of the file.

import { TAG_PART } from '../fleet/tags.js';
import { z } from 'zod';
import { parseDuration, parseTimeout } from '../core/format.js';

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

/** A backup whose raw size or total rows dropped by more than maxDrop (a share) is flagged. */
export const anomalySchema = z.object({ maxDrop: z.number().min(0).max(1).default(0.5) }).strict();

export const NOTIFY_EVENTS = ['success', 'failure', 'verify-failed', 'degraded', 'stale', 'anomaly', 'skipped', 'archive'] as const;

const notifierCommon = {
  /** Name in logs and reports (default: the type and position). */
  name: z.string().optional(),
  /** Events this channel receives (default: everything but success; heartbeats: success). */
  events: z.array(z.enum(NOTIFY_EVENTS)).optional(),
  /** Further attempts after a failed delivery, with doubling delays from retryDelay. */
  retries: z.number().int().min(0).max(10).default(3),
  retryDelay: z.string().default('1s'),
  timeout: z.string().default('10s'),
};

export const notificationSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('webhook'),
      url: z.string().url(),
      /** POST sends the JSON message; GET/HEAD only call the URL (dead-man's-switch heartbeats). */
      method: z.enum(['POST', 'GET', 'HEAD']).default('POST'),
      headers: z.record(z.string(), z.string()).optional(),
      ...notifierCommon,
    })
    .strict(),
  z.object({ type: z.literal('slack'), url: z.string().url(), ...notifierCommon }).strict(),
  z.object({ type: z.literal('discord'), url: z.string().url(), ...notifierCommon }).strict(),
  z
    .object({
      type: z.literal('email'),
      to: z.union([z.string(), z.array(z.string()).min(1)]),
      from: z.string().default('dbstash@localhost'),
      smtp: z
        .object({
          /** smtp://user:pass@host:port or smtps://…; or the fields below. */
          url: z.string().optional(),
          host: z.string().optional(),
          port: z.number().int().positive().optional(),
          secure: z.boolean().optional(),
          user: z.string().optional(),
          password: z.string().optional(),
        })
        .strict(),
      ...notifierCommon,
    })
    .strict(),
]);

export const daemonSchema = z
  .object({
    /** host:port for /healthz and /metrics; port 0 picks a free one. */
    listen: z.string().default('127.0.0.1:9877'),
    /** Serve /healthz and /metrics on an address other machines reach (listen), on purpose. */
    exposeEndpoints: z.boolean().default(false),
    /** Jobs running at once across all databases (one per database at most). */
    concurrency: z.number().int().positive().default(2),
    /** Random delay before each scheduled run, up to this duration. */
    jitter: z.string().optional(),
    /** Run once at start a job whose scheduled time passed while the daemon was down. */
    catchUp: z.boolean().default(true),
    /** On SIGTERM, how long a running job may take to finish before it is aborted. */
    gracePeriod: z.string().default('5m'),
    /** Where the daemon remembers its last runs (default: .dbstash-daemon.json in the stash). */
    stateFile: z.string().optional(),
    /**
     * A Unix socket on which the daemon archives WAL for `dbstash wal push --socket` (asynchronous
     * archiving: archive_command starts no full dbstash per segment, and segments are pushed ahead).
     */
    walSocket: z.string().optional(),
    /** Segments the WAL server pushes ahead at once, besides the ones PostgreSQL asks for. */
    walParallel: z.number().int().positive().default(2),
    /** How often to look for stale databases (no successful backup within the expected period). */
    staleCheck: z.string().default('5m'),
    /** How often to ask each physical database's server how its WAL archiving does (pg_stat_archiver). */
    walCheck: z.string().default('1m'),
    /**
     * Longest a job may run before the daemon aborts it (cleanly: the dump is stopped, nothing is
     * published, the lock released) and reports it as failed; per kind.
     */
    maxRunTime: z
      .object({ backup: z.string().optional(), verify: z.string().optional(), prune: z.string().optional() })
      .strict()
      .default({}),
  })
  .strict();

/** The web dashboard and its JSON API (served by `dbstash daemon` and `dbstash dashboard`). */
export const dashboardSchema = z
  .object({
    /** host:port; a non-loopback address needs users and TLS (or --insecure-http). */
    listen: z.string().default('127.0.0.1:8484'),
    /** Users with a role and an scrypt hash (`dbstash user add`). */
    users: z
      .array(
        z
          .object({
            name: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, 'letters, digits and . _ @ -'),
            role: z.enum(['viewer', 'operator', 'admin']),
            password: z.string().regex(/^scrypt\$/, 'an scrypt hash as `dbstash user add` prints it, never the password itself'),
          })
          .strict(),
      )
      .default([]),
    /** API tokens with a role: the SHA-256 of each (`dbstash token create`). */
    tokens: z
      .array(
        z
          .object({
            name: z.string().min(1),
            role: z.enum(['viewer', 'operator', 'admin']),
            hash: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'sha256:<64 hex digits>, as `dbstash token create` prints it'),
          })
          .strict(),
      )
      .default([]),
    /** Certificate and key (PEM files) to serve HTTPS. */
    tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
    /** The dashboard's index of the catalog (a SQLite file; rebuilt from the stash when missing). */
    index: z.string().optional(),
    /** How often the whole stash is scanned for backups made elsewhere (the CLI, other hosts). */
    rescan: z
      .string()
      .refine((v) => parseDuration(v) !== undefined, { message: 'must be a duration such as 5m' })
      .default('5m'),
    /** How long an idle session stays logged in. */
    sessionTimeout: z
      .string()
      .refine((v) => parseDuration(v) !== undefined, { message: 'must be a duration such as 8h' })
      .default('8h'),
  })
  .strict();

export type DashboardConfig = z.infer<typeof dashboardSchema>;

export const databaseSchema = z
  .object({
    url: z.string().min(1),
    /** Name used in backup ids; defaults to the database name in the URL. */
    name: z.string().optional(),
    env: z.string().optional(),
    storages: z.array(z.string()).optional(),
    compression: compressionSchema.optional(),
    /** Recipients or a passphrase; "none" says on purpose that backups stay unencrypted (no warning). */
    encryption: z.union([z.literal('none'), encryptionSchema]).optional(),
    retention: retentionSchema.optional(),
    schedule: scheduleSchema.optional(),
    globals: z.boolean().optional(),
    /** PostgreSQL: physical base backups of the whole cluster (with a WAL archive: point-in-time recovery). */
    physical: z.boolean().optional(),
    /** Physical: how long a finished WAL segment may wait for the archive before status and the daemon call it stalled ("5m"). */
    walMaxDelay: z
      .string()
      .refine((v) => parseDuration(v) !== undefined, { message: 'must be a duration such as 5m or 90s' })
      .optional(),
    checksums: z.boolean().optional(),
    jobs: z.number().int().positive().optional(),
    binDir: z.string().optional(),
    /** MySQL: lock tables instead of --single-transaction (non-transactional tables). */
    lockTables: z.boolean().optional(),
    /** PostgreSQL: how long the dump and the row counts wait for a table's lock ("60s" by default; "0": for ever). */
    lockWaitTimeout: z
      .string()
      .refine((v) => parseTimeout(v) !== undefined, { message: 'must be a duration such as 30s, 2m or 500ms ("0" waits for ever)' })
      .optional(),
    scratchUrl: z.string().optional(),
    maxAge: z.string().optional(),
    anomaly: anomalySchema.optional(),
    /** In a fleet: only workers with these tags run this database's jobs (`dbstash worker --tags`). */
    workers: z.record(z.string().regex(TAG_PART, 'letters, digits, _ . -'), z.string().regex(TAG_PART, 'letters, digits, _ . -')).optional(),
    labels: z.record(z.string(), z.string()).optional(),
  })
  .strict();

export const configSchema = z
  .object({
    env: z.string().optional(),
    /** Environment names of your own, besides dev, test, ci, staging, preview, qa, demo and prod. */
    environments: z.array(z.string().regex(/^[a-z0-9-]{1,32}$/, 'a short lowercase name: letters, digits, "-"')).optional(),
    /** Default local stash directory (what --output-dir sets). */
    stash: z.string().optional(),
    tempDir: z.string().optional(),
    compression: compressionSchema.optional(),
    /** Recipients or a passphrase; "none" says on purpose that backups stay unencrypted (no warning). */
    encryption: z.union([z.literal('none'), encryptionSchema]).optional(),
    /** Ed25519 manifest signatures: the private key signs backups, the public key checks them. */
    signing: z.object({ keyFile: z.string().optional(), publicKeyFile: z.string().optional() }).strict().optional(),
    retention: retentionSchema.optional(),
    space: z
      .object({ ratio: z.number().positive().optional(), margin: z.number().min(1).max(100).optional() })
      .strict()
      .optional(),
    /** The fleet's control database (pg-boss): postgres://…; without it the daemon schedules in-process. */
    queue: z.string().min(1).optional(),
    /** How the fleet retries jobs and tells a dead worker (docs/fleet.md). */
    fleet: z
      .object({
        /** Attempts after the first. */
        retries: z.number().int().min(0).max(10).default(2),
        /** Before the first retry; each next one waits about twice as long. */
        retryDelay: z.string().refine((v) => parseDuration(v) !== undefined, { message: 'must be a duration such as 30s' }).default('30s'),
        /** A job whose worker sent no heartbeat for this long (10s at least) is retried elsewhere. */
        heartbeat: z.string().refine((v) => (parseDuration(v) ?? 0) >= 10_000, { message: 'must be a duration of 10s or more' }).default('30s'),
      })
      .strict()
      .optional(),
    databases: z.record(z.string(), databaseSchema).default({}),
    storages: z.record(z.string(), storageSchema).default({}),
    anomaly: anomalySchema.optional(),
    notifications: z.array(notificationSchema).default([]),
    daemon: daemonSchema.optional(),
    dashboard: dashboardSchema.optional(),
  })
  .strict();

export type ConfigFile = z.infer<typeof configSchema>;
export type DatabaseConfig = z.infer<typeof databaseSchema>;
export type StorageConfig = z.infer<typeof storageSchema>;
export type NotificationConfig = z.infer<typeof notificationSchema>;
export type NotifyEventKind = (typeof NOTIFY_EVENTS)[number];
export type DaemonConfig = z.infer<typeof daemonSchema>;
