// What a PostgreSQL dump needs from the server it is restored into, and getting a restore drill's
// server ready for it. A dump names roles (owners, grantees, the roles of row-level-security
// policies and user mappings) and extensions that it does not create itself; a throwaway drill
// server has neither, so a good backup would fail its drill for want of them.
//
// The needs are read from the dump's schema script (`pg_restore --schema-only`, which reads only
// the table of contents) while the integrity check reads the artifact anyway, and from the
// globals artifact (pg_dumpall --globals-only) when the backup has one. prepareDrill() then creates
// the roles the server lacks — by name only, NOLOGIN, no attributes, no password — and removes them
// again after the drill; an extension the server cannot install is reported before anything is
// restored. What cannot be made ready is a VerifyUnavailableError ("could not verify"), never a
// verdict on the backup.

import { StringDecoder } from 'node:string_decoder';
import { Writable } from 'node:stream';
import { VerifyUnavailableError } from '../../core/errors.js';
import type { DrillEnvironment, DumpNeeds, Target } from '../engine.js';
import { connect, quoteIdent } from './connection.js';

const IDENT = `"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*`;
const LIST = `(?:${IDENT})(?:, (?:${IDENT}))*`;

/** Statements whose roles matter only when ownership and grants are restored. */
const OWNERSHIP_ROLES = [
  new RegExp(` OWNER TO (${IDENT});$`),
  new RegExp(`^GRANT .* TO (${IDENT})(?: WITH (?:GRANT|ADMIN) OPTION)?(?: GRANTED BY ${IDENT})?;$`),
  new RegExp(`^REVOKE .* FROM (${IDENT})(?: GRANTED BY ${IDENT})?(?: CASCADE)?;$`),
  new RegExp(`^ALTER DEFAULT PRIVILEGES FOR ROLE (${IDENT}) `),
  new RegExp(`^ALTER DEFAULT PRIVILEGES .* GRANT .* TO (${IDENT})(?: WITH GRANT OPTION)?;$`),
  new RegExp(`^ALTER DEFAULT PRIVILEGES .* REVOKE .* FROM (${IDENT});$`),
  new RegExp(` GRANTED BY (${IDENT})`),
  // ACL entries granted by a role other than the owner are replayed as that role.
  new RegExp(`^SET SESSION AUTHORIZATION (${IDENT});$`),
];

/** Statements that name roles whatever is restored: a policy's roles, a user mapping's user. */
const OTHER_ROLES = [new RegExp(`^CREATE POLICY .* TO (${LIST})(?: USING| WITH CHECK|;|$)`), new RegExp(`^CREATE USER MAPPING FOR (${IDENT}) SERVER `)];

const EXTENSION = new RegExp(`^CREATE EXTENSION (?:IF NOT EXISTS )?(${IDENT})`);
const GLOBALS_ROLE = new RegExp(`^CREATE ROLE (${IDENT});$`);
/** The last line pg_dumpall writes: a globals artifact without it was cut short. */
const GLOBALS_END = /^-- PostgreSQL database cluster dump complete$/m;

/** Role names that are not roles: PUBLIC, and the special names a statement may use. */
const NOT_ROLES = new Set(['public', 'current_user', 'current_role', 'session_user']);

function unquote(ident: string): string | undefined {
  if (ident.startsWith('"')) return ident.slice(1, -1).replace(/""/g, '"');
  return NOT_ROLES.has(ident.toLowerCase()) ? undefined : ident.toLowerCase();
}

function splitList(list: string): string[] {
  return [...list.matchAll(new RegExp(IDENT, 'g'))].map((m) => m[0]);
}

/** Collects the needs from a script's lines as they stream by. */
export class NeedsCollector {
  private readonly roles = new Set<string>();
  private readonly other = new Set<string>();
  private readonly extensions = new Set<string>();

  line(line: string): void {
    if (line.startsWith('--') || line === '') return;
    for (const re of OWNERSHIP_ROLES) {
      const m = re.exec(line);
      const role = m && unquote(m[1]);
      if (role) this.roles.add(role);
    }
    for (const re of OTHER_ROLES) {
      const m = re.exec(line);
      if (!m) continue;
      for (const ident of splitList(m[1])) {
        const role = unquote(ident);
        if (role) {
          this.roles.add(role);
          this.other.add(role);
        }
      }
    }
    const ext = EXTENSION.exec(line);
    const name = ext && unquote(ext[1]);
    if (name) this.extensions.add(name);
  }

  /** A role the globals artifact creates: needed when ownership and grants are restored. */
  globalRole(line: string): void {
    const m = GLOBALS_ROLE.exec(line);
    const role = m && unquote(m[1]);
    if (role) this.roles.add(role);
  }

  needs(): DumpNeeds {
    const sorted = (s: Set<string>) => [...s].sort();
    return { roles: sorted(this.roles), rolesWithoutOwnership: sorted(this.other), extensions: sorted(this.extensions) };
  }
}

/** A writable that hands each complete line of its text to `onLine`. */
export function lineSink(onLine: (line: string) => void): Writable {
  const text = new StringDecoder('utf8');
  let rest = '';
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, done) {
      const lines = (rest + text.write(chunk)).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) onLine(line);
      done();
    },
    final(done) {
      rest += text.end();
      if (rest) onLine(rest);
      done();
    },
  });
}

/** Reads a globals artifact: the roles it creates, and whether it is complete. */
export function globalsReader(): { sink: Writable; roles: () => string[]; complete: () => boolean } {
  const collector = new NeedsCollector();
  let complete = false;
  const sink = lineSink((line) => {
    collector.globalRole(line);
    if (GLOBALS_END.test(line)) complete = true;
  });
  return { sink, roles: () => collector.needs().roles, complete: () => complete };
}

function where(target: Target): string {
  return target.host?.startsWith('/') ? 'the throwaway scratch server' : `${target.host ?? 'localhost'}:${target.port ?? 5432}`;
}

/** A name as SQL would write it: quoted only when it has to be. */
const ident = (name: string) => (/^[a-z_][a-z0-9_$]*$/.test(name) ? name : quoteIdent(name));
const names = (list: string[]) => list.map(ident).join(', ');

/**
 * Makes `server` ready for a dump with `needs`: ownership and grants are restored when its user is
 * a superuser (then every role the dump names must exist), else skipped (then only the roles of
 * policies and user mappings must). Missing roles are created NOLOGIN and dropped by cleanup();
 * an extension the server does not have, or a role it cannot create, is a VerifyUnavailableError.
 */
export async function prepareDrill(server: Target, needs: DumpNeeds, signal?: AbortSignal): Promise<DrillEnvironment> {
  const client = await connect(server, server.database, signal);
  const created: string[] = [];
  const cleanup = async () => {
    if (created.length === 0) return;
    const c = await connect(server).catch(() => undefined);
    if (!c) return;
    try {
      for (const role of created.splice(0)) await c.query(`DROP ROLE IF EXISTS ${quoteIdent(role)}`).catch(() => {});
    } finally {
      await c.end().catch(() => {});
    }
  };
  try {
    const me = (await client.query<{ u: string; superuser: boolean }>(`SELECT current_user AS u, rolsuper AS superuser FROM pg_roles WHERE rolname = current_user`)).rows[0];
    if (needs.extensions.length > 0) {
      const available = new Set(
        (await client.query<{ name: string }>('SELECT name FROM pg_available_extensions WHERE name = ANY($1)', [needs.extensions])).rows.map((r) => r.name),
      );
      const missing = needs.extensions.filter((e) => !available.has(e));
      if (missing.length > 0) {
        throw new VerifyUnavailableError(
          `the drill's server (${where(server)}) does not have the extension${missing.length > 1 ? 's' : ''} ${names(missing)} that the dump installs, so it cannot restore it; this says nothing about the backup`,
          { hint: 'install the extension on the drill\'s server (the server package that provides it), or give a scratch server that has it with --scratch-url' },
        );
      }
    }
    const wanted = me.superuser ? needs.roles : needs.rolesWithoutOwnership;
    const existing = new Set((await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [wanted])).rows.map((r) => r.rolname));
    for (const role of wanted.filter((r) => !existing.has(r))) {
      try {
        await client.query(`CREATE ROLE ${quoteIdent(role)} NOLOGIN`);
        created.push(role);
      } catch (err) {
        throw new VerifyUnavailableError(
          `the dump refers to role ${ident(role)}, which the drill's server (${where(server)}) lacks, and user "${me.u}" cannot create it: ${(err as Error).message}; this says nothing about the backup`,
          { hint: 'give a scratch server whose user may create roles (CREATEROLE, or a superuser) with --scratch-url, or let dbstash start its own (no --scratch-url)', cause: err },
        );
      }
    }
    return { created: [...created], ownership: me.superuser, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Reads the needs of a pg_restore script from a client-side stream of it (see restore.ts). */
export function scriptReader(): { sink: Writable; needs: () => DumpNeeds } {
  const collector = new NeedsCollector();
  return { sink: lineSink((line) => collector.line(line)), needs: () => collector.needs() };
}
