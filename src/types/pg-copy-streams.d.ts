// The part of pg-copy-streams (no types of its own) that dbstash uses.
declare module 'pg-copy-streams' {
  import type { Readable } from 'node:stream';
  import type { Submittable } from 'pg';
  /** A query that streams COPY … TO STDOUT's data; submit it with client.query(). */
  export function to(text: string): Readable & Submittable & { rowCount: number };
}
