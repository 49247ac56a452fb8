// Feeding one stream into the stdin of one or more child processes with back-pressure (the
// slowest reader paces the source). A reader that stops early (pg_restore --list is done once it
// has the table of contents) is simply dropped; its exit status tells whether that was fine.
//
// On a source error nothing is ended: the caller must kill the children first, so that a tool
// never sees a clean end of input after damaged data.

import type { Writable } from 'node:stream';
import { canDraw, piecesOf, type DrawableStream } from '../storage/drawable.js';

/**
 * With `untilUnread`, feeding stops once no sink reads any more (readers of a dump's head, such as
 * pg_restore --list): the rest of the source is not read, and the caller destroys it.
 */
export async function feed(source: AsyncIterable<Buffer>, sinks: Writable[], opts: { untilUnread?: boolean } = {}): Promise<void> {
  const live = new Set(sinks);
  for (const sink of sinks) {
    const drop = () => live.delete(sink);
    sink.on('error', drop);
    sink.on('close', drop);
  }
  if (canDraw(source)) return feedDrawn(source, live, opts);
  for await (const chunk of source) {
    if (opts.untilUnread && live.size === 0) return;
    await Promise.all([...live].map((sink) => (sink.write(chunk) ? undefined : drained(sink))));
  }
  for (const sink of live) sink.end();
}

/** Bytes per buffer of a drawn feed (piecesOf: two are used in turn). */
const FEED_PIECE = 1 << 20;

/**
 * A source that can be drawn (an artifact that zstd decodes last) is decoded into two buffers in
 * turn (piecesOf): one is written while the next bytes are drawn into the other, which is reused
 * only once every sink has taken what was written from it (the write's callback). Read as a
 * stream, it would hand out a fresh buffer for every piece instead (see openArtifact).
 */
async function feedDrawn(source: DrawableStream, live: Set<Writable>, opts: { untilUnread?: boolean }): Promise<void> {
  let before: Promise<unknown> | undefined;
  for await (const piece of piecesOf(source, FEED_PIECE)) {
    if (opts.untilUnread && live.size === 0) return;
    // A sink that fails or closes calls back with the error: it is dropped from `live` then.
    const writing = Promise.all([...live].map((sink) => new Promise<void>((resolve) => sink.write(piece, () => resolve()))));
    // The piece before was drawn into the buffer the next piece goes into.
    await before;
    before = writing;
  }
  await before;
  for (const sink of live) sink.end();
}

function drained(sink: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      sink.off('drain', done);
      sink.off('close', done);
      sink.off('error', done);
      resolve();
    };
    sink.on('drain', done);
    sink.on('close', done);
    sink.on('error', done);
  });
}
