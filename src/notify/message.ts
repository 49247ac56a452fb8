// What a notification says, whatever the channel: the event, the database and environment, the
// backup's id, size, duration and checksum, and for problems the error with its hint.

import os from 'node:os';
import { formatBytes, formatDuration } from '../core/format.js';
import type { NotifyEventKind } from '../config/schema.js';

export interface NotifyMessage {
  event: NotifyEventKind;
  database: string;
  environment?: string;
  backupId?: string;
  /** Stored size in bytes. */
  size?: number;
  durationMs?: number;
  sha256?: string;
  error?: string;
  hint?: string;
  /** One line of event-specific detail (anomaly figures, failed destinations, staleness). */
  detail?: string;
  at: string;
  host: string;
}

export function makeMessage(fields: Omit<NotifyMessage, 'at' | 'host'> & { at?: string }): NotifyMessage {
  return { ...fields, at: fields.at ?? new Date().toISOString(), host: os.hostname() };
}

const HEADLINES: Record<NotifyEventKind, string> = {
  success: 'backup succeeded',
  failure: 'BACKUP FAILED',
  'verify-failed': 'VERIFICATION FAILED',
  degraded: 'backup DEGRADED',
  stale: 'backups are STALE',
  anomaly: 'backup ANOMALY',
  skipped: 'scheduled run SKIPPED',
  archive: 'WAL ARCHIVING FAILING',
};

export function subjectOf(m: NotifyMessage): string {
  return `[dbstash] ${m.database}${m.environment ? ` (${m.environment})` : ''}: ${HEADLINES[m.event]}`;
}

/** Plain text, one fact per line, for chat and mail. */
export function textOf(m: NotifyMessage): string {
  const lines = [subjectOf(m)];
  const add = (label: string, value: string | undefined) => {
    if (value) lines.push(`${label}: ${value}`);
  };
  add('backup', m.backupId);
  add('size', m.size !== undefined ? formatBytes(m.size) : undefined);
  add('duration', m.durationMs !== undefined ? formatDuration(m.durationMs) : undefined);
  add('sha256', m.sha256);
  add('detail', m.detail);
  add('error', m.error);
  add('hint', m.hint);
  add('host', m.host);
  add('at', m.at);
  return lines.join('\n');
}
