// Retention policy against golden files: each test/fixtures/retention/<case>.json (policy and
// backup times) has a <case>.golden.txt with the expected decision and reasons per backup.
// UPDATE_GOLDEN=1 rewrites the golden files; review the diff before committing it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyRetention, effectivePolicy, isoWeek, pickPolicy, type RetentionCandidate, type RetentionPolicy } from '../../src/retention/policy.js';
import { ConfigError } from '../../src/core/errors.js';
import { makeBackupId } from '../../src/core/id.js';

const DIR = fileURLToPath(new URL('../../../test/fixtures/retention/', import.meta.url));

interface GoldenCase {
  description: string;
  policy: RetentionPolicy;
  backups: (string | { at: string; tags?: string[]; pinned?: string })[];
}

function candidates(c: GoldenCase): RetentionCandidate[] {
  return c.backups.map((b) => {
    const spec = typeof b === 'string' ? { at: b } : b;
    const takenAt = new Date(spec.at);
    return { id: makeBackupId('shop', 'prod', takenAt), takenAt, tags: spec.tags, pinned: spec.pinned };
  });
}

function render(c: GoldenCase): string {
  const tz = effectivePolicy(c.policy).timezone ?? 'UTC';
  const local = new Intl.DateTimeFormat('sv-SE', { timeZone: tz, dateStyle: 'short', timeStyle: 'short', hourCycle: 'h23' });
  const lines = [`# ${c.description}`, `# policy ${JSON.stringify(c.policy)}`];
  for (const d of applyRetention(candidates(c), c.policy)) {
    lines.push(`${d.keep ? 'keep  ' : 'remove'}  ${d.takenAt.toISOString().slice(0, 19)}Z  (${local.format(d.takenAt)} ${tz})  ${d.reasons.join('; ')}`);
  }
  return lines.join('\n') + '\n';
}

const cases = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

test('there are golden cases for DST, year boundaries, ISO week 53, several per day and gaps', () => {
  for (const name of ['dst-berlin-fall-back', 'dst-new-york-spring-forward', 'year-boundary-iso-week-53', 'several-per-day-default', 'gaps-monthly']) {
    assert.ok(cases.includes(`${name}.json`), name);
  }
});

for (const file of cases) {
  test(`golden: ${file}`, () => {
    const c = JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as GoldenCase;
    const actual = render(c);
    const goldenFile = path.join(DIR, file.replace(/\.json$/, '.golden.txt'));
    if (process.env.UPDATE_GOLDEN) writeFileSync(goldenFile, actual);
    assert.equal(actual, readFileSync(goldenFile, 'utf8'));
  });
}

test('ISO weeks at year boundaries', () => {
  assert.deepEqual(isoWeek(2026, 12, 28), { year: 2026, week: 53 });
  assert.deepEqual(isoWeek(2027, 1, 3), { year: 2026, week: 53 });
  assert.deepEqual(isoWeek(2027, 1, 4), { year: 2027, week: 1 });
  assert.deepEqual(isoWeek(2024, 12, 30), { year: 2025, week: 1 });
  assert.deepEqual(isoWeek(2021, 1, 3), { year: 2020, week: 53 });
});

test('no keep rule means the default 7 daily, 4 weekly, 12 monthly; a time zone alone is not a rule', () => {
  assert.deepEqual(effectivePolicy(undefined), { keepDaily: 7, keepWeekly: 4, keepMonthly: 12, timezone: undefined });
  assert.deepEqual(effectivePolicy({ timezone: 'Europe/Berlin' }), { keepDaily: 7, keepWeekly: 4, keepMonthly: 12, timezone: 'Europe/Berlin' });
  assert.deepEqual(effectivePolicy({ keepLast: 3 }), { keepLast: 3 });
});

test('the most specific policy that sets a rule wins whole; the time zone is inherited', () => {
  const global = { keepDaily: 30, timezone: 'Europe/Berlin' };
  assert.deepEqual(pickPolicy({ keepLast: 2 }, { keepWeekly: 9 }, global), { keepLast: 2, timezone: 'Europe/Berlin' });
  assert.deepEqual(pickPolicy(undefined, undefined, global), global);
  assert.deepEqual(pickPolicy(undefined, undefined, undefined), { keepDaily: 7, keepWeekly: 4, keepMonthly: 12, timezone: undefined });
});

test('an empty series and keep rules of 0 remove everything that is not pinned', () => {
  assert.deepEqual(applyRetention([], undefined), []);
  const at = new Date('2026-01-01T00:00:00Z');
  const d = applyRetention([{ id: 'a_dev_x', takenAt: at }, { id: 'b_dev_x', takenAt: at, pinned: 'in use' }], { keepLast: 0 });
  assert.deepEqual(d.map((x) => [x.id, x.keep, x.reasons]), [
    ['b_dev_x', true, ['in use']],
    ['a_dev_x', false, ['no rule keeps it']],
  ]);
});

test('an unknown time zone or a bad duration is a ConfigError', () => {
  const one = [{ id: 'x', takenAt: new Date() }];
  assert.throws(() => applyRetention(one, { keepDaily: 1, timezone: 'Mars/Olympus' }), (e: unknown) => e instanceof ConfigError && /Mars\/Olympus/.test(e.message));
  assert.throws(() => applyRetention(one, { keepWithin: 'forever' }), (e: unknown) => e instanceof ConfigError && /keepWithin/.test(e.message));
});
