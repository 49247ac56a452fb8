// The daemon's job runner: the global concurrency limit, one job per database at a time, no
// piling up of a job that is still queued or running, and shutdown: finish within the grace
// period, else abort through the job's signal and wait for it to clean up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobRunner } from '../../src/daemon/runner.js';

function recorder() {
  const lines: string[] = [];
  return { lines, info: (m: string) => lines.push(m), warn: (m: string) => lines.push(`warn: ${m}`) };
}

/** A job that runs until released (or aborted), recording when it starts and ends. */
function controllable(log: string[], name: string) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  return {
    release: () => release(),
    run: async (signal: AbortSignal) => {
      log.push(`start ${name}`);
      await new Promise<void>((resolve, reject) => {
        released.then(resolve);
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
      log.push(`end ${name}`);
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('at most `concurrency` jobs run, one per database, and a queued or running job is not queued twice', async () => {
  const log: string[] = [];
  const out = recorder();
  const runner = new JobRunner(2, out);
  const a1 = controllable(log, 'a:backup');
  const a2 = controllable(log, 'a:prune');
  const b = controllable(log, 'b:backup');
  const c = controllable(log, 'c:backup');
  assert.equal(runner.submit({ database: 'a', kind: 'backup', run: a1.run }), 'queued');
  assert.equal(runner.submit({ database: 'a', kind: 'prune', run: a2.run }), 'queued');
  assert.equal(runner.submit({ database: 'b', kind: 'backup', run: b.run }), 'queued');
  assert.equal(runner.submit({ database: 'c', kind: 'backup', run: c.run }), 'queued');
  assert.equal(runner.submit({ database: 'a', kind: 'backup', run: a1.run }), 'busy', 'a:backup is running');
  assert.equal(runner.submit({ database: 'c', kind: 'backup', run: c.run }), 'busy', 'c:backup is queued');
  await tick();
  assert.deepEqual(log, ['start a:backup', 'start b:backup'], 'a:prune waits for a:backup, c waits for a slot');
  assert.equal(runner.runningCount, 2);
  a1.release();
  await tick();
  await tick();
  assert.deepEqual(log.slice(2), ['end a:backup', 'start a:prune'], 'a is free again and its prune was queued first');
  b.release();
  await tick();
  await tick();
  assert.deepEqual(log.slice(4), ['end b:backup', 'start c:backup']);
  a2.release();
  c.release();
  await runner.shutdown(1000, new Error('stop'));
  assert.deepEqual(log.slice(6).sort(), ['end a:prune', 'end c:backup']);
  assert.ok(out.lines.some((l) => /^warn: backup of a is running for \S+: this run is skipped/.test(l)), out.lines.join("\n"));
  assert.ok(out.lines.some((l) => /^warn: backup of c is still queued: this run is skipped/.test(l)), out.lines.join("\n"));
});

test('shutdown lets jobs finish within the grace period, then aborts the rest and waits for their cleanup', async () => {
  const log: string[] = [];
  const runner = new JobRunner(2, recorder());
  const quick = controllable(log, 'quick');
  const slow = controllable(log, 'slow');
  let cleanedUp = false;
  runner.submit({ database: 'q', kind: 'backup', run: quick.run });
  runner.submit({
    database: 's',
    kind: 'backup',
    run: async (signal) => {
      try {
        await slow.run(signal);
      } finally {
        await new Promise((r) => setTimeout(r, 50));
        cleanedUp = true;
      }
    },
  });
  runner.submit({ database: 'x', kind: 'backup', run: async () => void log.push('never') });
  await tick();
  setTimeout(() => quick.release(), 20);
  const reason = new Error('SIGTERM');
  const t0 = Date.now();
  const result = await runner.shutdown(300, reason);
  assert.deepEqual(result, { finished: 1, aborted: 1 });
  assert.ok(Date.now() - t0 >= 300, 'waited for the grace period');
  assert.ok(cleanedUp, 'shutdown returned only after the aborted job cleaned up');
  assert.ok(!log.includes('never'), 'queued jobs are dropped');
  assert.ok(log.includes('end quick') && !log.includes('end slow'));
  assert.equal(runner.submit({ database: 'q', kind: 'backup', run: quick.run }), 'closed', 'no jobs after shutdown');
});
