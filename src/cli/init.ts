// `dbstash init`: writes a commented starter config file.

import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../core/errors.js';
import { commonOptions, runCommand, type CommonOptions } from './common.js';

export const STARTER_CONFIG = `# dbstash configuration. Values may use \${VAR} or \${VAR:-default}: keep secrets in the
# environment (or .env / .env.local), never in this file.

# Environment recorded in every backup id: dev, prod, or auto (ENV_MODE, then NODE_ENV).
env: auto

# Default local stash (what --output-dir sets).
stash: ./backups

# Compression: zstd (levels 1-19, default 3), gzip (1-9, default 6) or none.
compression:
  algorithm: zstd
  level: 3

# Free-space check before a backup: database size x ratio x margin must be free.
space:
  ratio: 0.5
  margin: 1.2

databases:
  app:
    url: \${DATABASE_URL}
    # name: app                 # the series' name in lists and ids (default: the database name); never changes what is backed up
    # globals: true             # also capture roles (PostgreSQL) or users and grants (MySQL)
    # checksums: true           # per-table content checksums (enables verify --deep)
    # binDir: /usr/lib/postgresql/16/bin
    # lockWaitTimeout: 60s      # PostgreSQL: fail when a table stays locked this long ("0": wait for ever)
    # storages: [local]         # names from the storages section below
    # labels: { team: backend }
    # schedule:                 # for \`dbstash daemon\` or \`dbstash schedule install --systemd|--cron\`
    #   backup: "0 3 * * *"
    #   verify: "0 5 * * 0"     # a restore drill of the newest backup
    #   prune: "30 4 * * *"
    #   timezone: UTC
    # maxAge: 26h               # \`dbstash status\` and the daemon call it stale after this

# storages:
#   local:
#     url: ./backups            # files 0600, folders 0700; fileMode: "0640", dirMode: "0750" for a group
#   offsite:
#     url: s3://my-bucket/dbstash
#     optional: true            # a failure here makes the backup "degraded", not failed
#     retention: { keepDaily: 30, keepMonthly: 24 }   # this storage keeps more
#     objectLock: { mode: governance, days: 30 }      # S3 Object Lock on every object written
#   azure:
#     url: azure://my-container/dbstash   # AZURE_STORAGE_CONNECTION_STRING, or accountName/accountKey/sasToken
#   box:
#     url: sftp://backup@storage.example.net/srv/dbstash   # host key must be in ~/.ssh/known_hosts
#   drive:
#     url: rclone:gdrive:dbstash          # any remote of \`rclone config\`

# Encryption: off-site copies should be encrypted. Make a key pair with \`dbstash keygen --age\`,
# keep the identity (private key) away from the backup host, and put the recipient here:
# encryption:
#   recipients: [age1...]
# encryption: none              # or say on purpose that backups stay unencrypted (no warning)

# Retention for \`dbstash prune\` (restic-style; default 7 daily, 4 weekly, 12 monthly).
# retention: { keepLast: 3, keepDaily: 7, keepWeekly: 4, keepMonthly: 12, timezone: UTC }

# daemon: { listen: "127.0.0.1:9877", concurrency: 2, jitter: 5m, gracePeriod: 5m }

# Notifications: failure, verify-failed, degraded, stale and anomaly by default (docs/operations.md).
# notifications:
#   - type: slack
#     url: \${SLACK_WEBHOOK_URL}
#   - type: webhook               # a dead man's switch: called after every successful backup
#     url: https://hc-ping.com/\${HC_UUID}
#     method: GET
`;

export function registerInit(program: Command): void {
  const cmd = program
    .command('init')
    .description('write a commented starter config file (dbstash.yaml)')
    .argument('[file]', 'where to write it', 'dbstash.yaml')
    .addHelpText(
      'after',
      `
Examples:
  dbstash init                          # ./dbstash.yaml, refused when it exists
  dbstash init /etc/dbstash/dbstash.yaml
  dbstash init --dry-run                # print it instead`,
    );
  commonOptions(cmd, { yes: true, dryRun: 'print the config instead of writing it', codes: [] });
  cmd.action((file: string, opts: CommonOptions) =>
    runCommand(
      { ...opts, config: undefined },
      async (ctx) => {
      const target = path.resolve(file);
      if (opts.dryRun) {
        ctx.out.result({ file: target, written: false, content: STARTER_CONFIG }, () => STARTER_CONFIG);
        return;
      }
      if (existsSync(target) && !opts.yes) {
        throw new UsageError(`${target} already exists`, { hint: 'pass --yes to overwrite it, or give another file name' });
      }
      writeFileSync(target, STARTER_CONFIG, { mode: 0o600 });
      ctx.out.result({ file: target, written: true }, () => `wrote ${target}; edit it, then run \`dbstash backup\``);
      },
      { config: false },
    ),
  );
}
