// One stream read once and written to several consumers (a backup's destinations), at the pace of
// the slowest of them.

import { PassThrough, type Readable } from 'node:stream';

/**
 * `count` PassThroughs fed by `source`, with back-pressure shared among them: the source pauses
 * while any live branch is full and resumes once all of them have drained. A branch that closes
 * (its destination failed and destroyed it) is dropped at once, so it can never hold the others
 * back. Readable.pipe() to several destinations does not guarantee that: a branch destroyed while
 * the source waited for its 'drain' left the source paused for good, and the backup hung with an
 * optional destination failing mid-stream.
 */
export function tee(source: Readable, count: number): PassThrough[] {
  const branches = Array.from({ length: count }, () => new PassThrough({ highWaterMark: 1 << 20 }));
  const live = new Set(branches);
  const full = new Set<PassThrough>();
  const resumeWhenDrained = () => {
    if (full.size === 0 && source.isPaused()) source.resume();
  };
  for (const branch of branches) {
    // A branch's errors reach the put reading it; a branch whose put has not attached its
    // listeners yet (still creating directories) must not turn them into an uncaught 'error'.
    branch.on('error', () => {});
    branch.on('drain', () => {
      full.delete(branch);
      resumeWhenDrained();
    });
    branch.on('close', () => {
      live.delete(branch);
      full.delete(branch);
      resumeWhenDrained();
    });
  }
  source.on('data', (chunk: Buffer) => {
    for (const branch of live) if (!branch.write(chunk)) full.add(branch);
    if (full.size > 0) source.pause();
  });
  source.on('end', () => {
    for (const branch of live) branch.end();
  });
  source.on('error', (err) => {
    for (const branch of live) branch.destroy(err);
  });
  return branches;
}
