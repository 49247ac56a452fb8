// Worker tags (`dbstash worker --tags region=eu`, a database's `workers: { region: eu }`) in the
// forms the fleet writes them: as people type them, and in a queue's name. No pg-boss here: the
// CLI parses --tags before it opens the queue.

import { UsageError } from '../core/errors.js';

/** A tag's key or value: letters, digits, _ . - (never "/", "=" or ",", which the forms use). */
export const TAG_PART = /^[A-Za-z0-9_.-]+$/;

const sorted = (tags: Record<string, string> | undefined) => Object.entries(tags ?? {}).sort(([a], [b]) => a.localeCompare(b));

/** `region=eu,tier=2`: tags as people write them. */
export function tagsText(tags: Record<string, string> | undefined): string {
  return sorted(tags)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/** `region=eu,tier=2` → { region: 'eu', tier: '2' }; a part that is not key=value is a usage error. */
export function parseTags(text: string | undefined, what = '--tags'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (text ?? '').split(',').filter(Boolean)) {
    const [k, v, ...rest] = part.trim().split('=');
    if (rest.length > 0 || !TAG_PART.test(k ?? '') || !TAG_PART.test(v ?? '')) {
      throw new UsageError(`${what}: "${part}" is not key=value`, { hint: 'e.g. --tags region=eu,net=private' });
    }
    out[k] = v;
  }
  return out;
}

/** `region/eu/tier/2`: tags in a queue's name (pg-boss names allow letters, digits, _ - . and /). */
export function tagsKey(tags: Record<string, string> | undefined): string {
  return sorted(tags).flat().join('/');
}

/** The tags a queue's name (`dbstash-backup/region/eu`) asks for. */
export function tagsOfQueue(name: string): Record<string, string> {
  const parts = name.split('/').slice(1);
  const out: Record<string, string> = {};
  for (let i = 0; i < parts.length; i += 2) out[parts[i]] = parts[i + 1];
  return out;
}
