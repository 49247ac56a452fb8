// The job runner: at most `concurrency` jobs at once, at most one per database, and a job that
// is already queued or running is not queued again (a slow backup never piles up runs). Each job
// gets its own AbortSignal; shutdown() lets running jobs finish within a grace period, then
// aborts them and waits until they have cleaned up.

export interface JobSpec {
  database: string;
  kind: string;
  run(signal: AbortSignal): Promise<void>;
}

interface Running {
  spec: JobSpec;
  controller: AbortController;
  done: Promise<void>;
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

  /** Queues a job; false when the same job is already queued or running, or after shutdown. */
  submit(spec: JobSpec): boolean {
    if (this.closed) return false;
    const same = (s: JobSpec) => s.database === spec.database && s.kind === spec.kind;
    const busy = this.running.get(spec.database);
    if (this.queue.some(same) || (busy && same(busy.spec))) {
      this.log.info(`${spec.kind} of ${spec.database} is still queued or running: this run is skipped`);
      return false;
    }
    this.queue.push(spec);
    this.pump();
    return true;
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.concurrency) {
      const index = this.queue.findIndex((s) => !this.running.has(s.database));
      if (index < 0) return;
      const [spec] = this.queue.splice(index, 1);
      const controller = new AbortController();
      const done = spec
        .run(controller.signal)
        .catch((err: unknown) => this.log.warn(`${spec.kind} of ${spec.database} failed: ${(err as Error).message}`))
        .finally(() => {
          this.running.delete(spec.database);
          this.pump();
        });
      this.running.set(spec.database, { spec, controller, done });
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
