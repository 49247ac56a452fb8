// A backup with its notifications: success, degraded and anomaly after it, failure when it
// fails (an interruption by the user or the daemon's shutdown is not a failure to report); and
// the message of a failed verification.
// Delivery problems are logged by the notifier and never change the backup's outcome.

import { runBackup, type BackupEvents, type BackupPlan, type BackupResult } from '../backup/backup.js';
import type { Anomaly } from '../backup/anomaly.js';
import { DbstashError, IntegrityError, InterruptedError } from '../core/errors.js';
import { mainArtifact, type Manifest } from '../catalog/manifest.js';
import { makeMessage, type NotifyMessage } from './message.js';
import type { Notifier } from './notifier.js';

export function backupMessages(result: BackupResult): NotifyMessage[] {
  const m = result.manifest;
  const main = mainArtifact(m);
  const base = { database: m.series?.name ?? m.database.name, environment: m.environment, backupId: m.id, size: main.size, durationMs: m.durationMs, sha256: main.sha256 };
  const messages = [makeMessage({ event: 'success', ...base })];
  if (result.degraded) {
    messages.push(
      makeMessage({
        event: 'degraded',
        ...base,
        detail: `stored in ${result.stored.join(', ')}; failed: ${result.failed.map((f) => `${f.name} (${f.error})`).join('; ')}`,
        hint: 'check the failed destination; `dbstash copy` can fill it from another one',
      }),
    );
  }
  const anomaly = m.extra.anomaly as Anomaly | undefined;
  if (anomaly) {
    messages.push(
      makeMessage({
        event: 'anomaly',
        ...base,
        detail: anomaly.message,
        hint: 'check the database for lost data before the older backups age out',
      }),
    );
  }
  return messages;
}

export function failureMessage(plan: Pick<BackupPlan, 'target' | 'env' | 'series'>, err: unknown): NotifyMessage {
  return makeMessage({
    event: 'failure',
    database: plan.series?.name ?? plan.target.database,
    environment: plan.env,
    error: (err as Error).message,
    hint: err instanceof DbstashError ? err.hint : undefined,
  });
}

export async function runNotifiedBackup(plan: BackupPlan, events: BackupEvents, signal: AbortSignal | undefined, notifier: Notifier): Promise<BackupResult> {
  let result: BackupResult;
  try {
    result = await runBackup(plan, events, signal);
  } catch (err) {
    if (!(err instanceof InterruptedError)) await notifier.notify(failureMessage(plan, err));
    throw err;
  }
  for (const message of backupMessages(result)) await notifier.notify(message);
  return result;
}

/** A verification that found the backup damaged, or could not run at all. */
export function verifyFailureMessage(manifest: Manifest, level: string, err: unknown): NotifyMessage {
  const main = mainArtifact(manifest);
  return makeMessage({
    event: 'verify-failed',
    database: manifest.database.name,
    environment: manifest.environment,
    backupId: manifest.id,
    size: main.size,
    sha256: main.sha256,
    detail: err instanceof IntegrityError ? `the ${level} verification found the backup damaged or incomplete` : `the ${level} verification could not run`,
    error: (err as Error).message,
    hint: err instanceof DbstashError ? err.hint : undefined,
  });
}
