// The job runner: at most `concurrency` jobs at once, at most one per database, and a job that
// is already queued or running is not queued again (a slow backup never piles up runs; the
// skipped run is reported). Each job gets its own AbortSignal: a job that runs longer than its
// maximum run time is aborted with a JobTimeoutError, and cleans up like any aborted job.
// shutdown() lets running jobs finish within a grace period, then aborts them and waits until
// they have cleaned up.

import { JobTimeoutError } from '../core/errors.js';
import { formatDuration } from '../core/format.js';

export interface JobSpec {
  database: string;
  kind: string;
  run(signal: AbortSignal): Promise<void>;
  /** Aborted past this many milliseconds of running. */
  maxRunMs?: number;
}

export type SubmitResult = 'queued' | 'busy' | 'closed';

interface Running {
  spec: JobSpec;
  controller: AbortController;
  done: Promise<void>;
  startedAt: number;
}

export class JobRunner {
  private readonly queue: JobSpec[] = [];
  private readonly running = new Map<string, Running>();
  private closed = false;

  constructor(
    private readonly concurrency: number,
    private readonly log: { info(m: string): void; warn(m: string): void },
  ) {}

  get runningCount(): number {
    return this.running.size;
  }

  /** Queues a job; 'busy' when the same job is already queued or running (this run is skipped), 'closed' after shutdown. */
  submit(spec: JobSpec): SubmitResult {
    if (this.closed) return 'closed';
    const same = (s: JobSpec) => s.database === spec.database && s.kind === spec.kind;
    const busy = this.running.get(spec.database);
    if (this.queue.some(same) || (busy && same(busy.spec))) {
      const since = busy && same(busy.spec) ? `running for ${formatDuration(Date.now() - busy.startedAt)}` : 'still queued';
      this.log.warn(`${spec.kind} of ${spec.database} is ${since}: this run is skipped`);
      return 'busy';
    }
    this.queue.push(spec);
    this.pump();
    return 'queued';
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.concurrency) {
      const index = this.queue.findIndex((s) => !this.running.has(s.database));
      if (index < 0) return;
      const [spec] = this.queue.splice(index, 1);
      const controller = new AbortController();
      const timer =
        spec.maxRunMs !== undefined
          ? setTimeout(() => {
              this.log.warn(`${spec.kind} of ${spec.database} has run for ${formatDuration(spec.maxRunMs!)}, its maximum run time: aborting it`);
              controller.abort(
                new JobTimeoutError(`${spec.kind} ran longer than its maximum run time (${formatDuration(spec.maxRunMs!)}) and was aborted`, {
                  hint: `find out what held it up (a lock, a hung storage); daemon.maxRunTime.${spec.kind} in the config sets the limit`,
                }),
              );
            }, spec.maxRunMs)
          : undefined;
      const done = spec
        .run(controller.signal)
        .catch((err: unknown) => this.log.warn(`${spec.kind} of ${spec.database} failed: ${(err as Error).message}`))
        .finally(() => {
          clearTimeout(timer);
          this.running.delete(spec.database);
          this.pump();
        });
      this.running.set(spec.database, { spec, controller, done, startedAt: Date.now() });
    }
  }

  /** Stops taking jobs, drops the queue, waits up to graceMs, then aborts what still runs. */
  async shutdown(graceMs: number, reason: Error): Promise<{ finished: number; aborted: number }> {
    this.closed = true;
    this.queue.length = 0;
    const jobs = [...this.running.values()];
    if (jobs.length === 0) return { finished: 0, aborted: 0 };
    this.log.info(`waiting up to ${Math.round(graceMs / 1000)}s for ${jobs.map((j) => `${j.spec.kind} of ${j.spec.database}`).join(', ')}`);
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), graceMs)));
    await Promise.race([Promise.all(jobs.map((j) => j.done)), graceOver]);
    clearTimeout(timer);
    const still = [...this.running.values()];
    for (const job of still) {
      this.log.warn(`aborting ${job.spec.kind} of ${job.spec.database}: the grace period is over`);
      job.controller.abort(reason);
    }
    await Promise.all(still.map((j) => j.done));
    return { finished: jobs.length - still.length, aborted: still.length };
  }
}
