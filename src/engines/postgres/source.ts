// What a PostgreSQL dump needs before pg_dump can start: a connection, the server's facts and a
// pg_dump at least as new as the server. The preflight probe establishes all three; the dump of
// the same backup takes them over instead of connecting and authenticating a second time (that
// connection then exports the snapshot). A probe whose dump never runs is released by its owner.

import type { Probe, Target, ToolInfo } from '../engine.js';
import { closeOnAbort, connect, type PgClient } from './connection.js';
import { findPgTool, majorOf } from './tools.js';

export interface ServerFacts {
  version: string;
  sizeBytes: number;
  superuser: boolean;
}

export interface DumpSource {
  client: PgClient;
  facts: ServerFacts;
  tool: ToolInfo;
}

export async function serverFacts(client: PgClient): Promise<ServerFacts> {
  const r = await client.query<{ version: string; size: string; superuser: boolean }>(
    `SELECT current_setting('server_version') AS version, pg_database_size(current_database())::bigint AS size,
            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`,
  );
  return { version: r.rows[0].version.split(' ')[0], sizeBytes: Number(r.rows[0].size), superuser: r.rows[0].superuser };
}

const heldForDump = new WeakMap<Probe, DumpSource>();

/**
 * Connects, reads the server's facts and finds `toolName`. The tool's --version runs while we
 * connect (its result is cached, so the lookup after the connection reuses it). On failure the
 * connection is closed and the error propagates; an abort of `signal` closes it at once and
 * rejects with the signal's reason.
 */
export async function openSource(target: Target, toolName: string, signal?: AbortSignal): Promise<DumpSource> {
  const warming = findPgTool(toolName, 0, target.options.binDir).catch(() => undefined);
  const client = await connect(target, target.database, signal);
  const unhook = closeOnAbort(client, signal);
  try {
    const facts = await serverFacts(client);
    await warming;
    const tool = await findPgTool(toolName, majorOf(facts.version), target.options.binDir);
    return { client, facts, tool };
  } catch (err) {
    await client.end().catch(() => {});
    signal?.throwIfAborted();
    throw err;
  } finally {
    unhook();
  }
}

/**
 * Keeps `source` (opened for pg_dump) for the dump that follows `probe`; `probe.release()` closes
 * it otherwise.
 */
export function holdForDump(probe: Probe, source: DumpSource): Probe {
  heldForDump.set(probe, source);
  probe.release = async () => {
    const held = heldForDump.get(probe);
    heldForDump.delete(probe);
    await held?.client.end().catch(() => {});
  };
  return probe;
}

/** The pg_dump source the probe holds, else a fresh one. */
export async function sourceForDump(target: Target, probe: Probe | undefined): Promise<DumpSource> {
  const held = probe && heldForDump.get(probe);
  if (!held) return openSource(target, 'pg_dump');
  heldForDump.delete(probe);
  return held;
}
