// A PostgreSQL database's own properties: what a pg_dump archive restored without --create leaves
// out (encoding and locale, owner, database-level grants, ALTER DATABASE … SET and
// ALTER ROLE … IN DATABASE … SET settings, comment, connection limit).
//   readProperties()     reads them in a session (the dump's snapshot, or the maintenance database)
//   createWithProperties() creates a database that has them, with --no-owner / --role-map applied;
//                        a role they name that the server lacks is refused before anything is made
//   compareProperties()  lists how a live database differs, ignoring what those options changed
// The shape is recorded in the manifest as `database.properties`; keep it backward compatible.

import { RestoreError } from '../../core/errors.js';
import type { CreateDatabaseOptions, DatabaseProperties } from '../engine.js';
import { quoteIdent, quoteLiteral, type PgClient } from './connection.js';

/** Privileges one role holds on the database from one grantor. */
export interface AclEntry {
  /** A role name, or "PUBLIC". */
  grantee: string;
  grantor: string;
  /** CREATE, CONNECT, TEMPORARY. */
  privileges: string[];
  /** Those of `privileges` held WITH GRANT OPTION. */
  grantable?: string[];
}

export interface PgDatabaseProperties {
  encoding: string;
  collate: string;
  ctype: string;
  /** libc before PostgreSQL 15. */
  localeProvider: 'libc' | 'icu' | 'builtin';
  /** The ICU (or, from PostgreSQL 17, builtin) locale. */
  locale?: string;
  /** ICU tailoring rules (PostgreSQL 16+). */
  icuRules?: string;
  owner: string;
  /** -1: no limit. */
  connectionLimit: number;
  /** null: never granted nor revoked, so the defaults (PUBLIC may connect and create temporary tables). */
  acl: AclEntry[] | null;
  /** ALTER DATABASE … SET, as the server stores them: "name=value". */
  settings: string[];
  /** ALTER ROLE role IN DATABASE … SET, per role. */
  roleSettings: Record<string, string[]>;
  comment: string | null;
}

const PROPERTIES_SQL = `
SELECT to_jsonb(d) AS db, pg_encoding_to_char(d.encoding) AS encoding, pg_get_userbyid(d.datdba) AS owner,
       shobj_description(d.oid, 'pg_database') AS comment,
       CASE WHEN d.datacl IS NULL THEN NULL ELSE coalesce((
         SELECT json_agg(json_build_object(
                  'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                  'grantor', pg_get_userbyid(a.grantor), 'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY a.n)
         FROM aclexplode(d.datacl) WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, n)), '[]') END AS acl,
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') AS settings,
       coalesce((SELECT json_agg(json_build_object('role', pg_get_userbyid(s.setrole), 'settings', s.setconfig) ORDER BY pg_get_userbyid(s.setrole))
                 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0), '[]') AS role_settings
FROM pg_database d`;

interface PropertiesRow {
  db: Record<string, unknown>;
  encoding: string;
  owner: string;
  comment: string | null;
  acl: { grantee: string; grantor: string; privilege: string; grantable: boolean }[] | null;
  settings: string[];
  role_settings: { role: string; settings: string[] }[];
}

const PROVIDERS: Record<string, PgDatabaseProperties['localeProvider']> = { c: 'libc', i: 'icu', b: 'builtin' };

function fromRow(row: PropertiesRow): PgDatabaseProperties {
  const db = row.db;
  const provider = PROVIDERS[String(db.datlocprovider ?? 'c')] ?? 'libc';
  // PostgreSQL 15 and 16 call the provider's locale daticulocale; 17 calls it datlocale.
  const locale = (db.datlocale ?? db.daticulocale) as string | null | undefined;
  const acl = row.acl === null ? null : groupAcl(row.acl);
  return {
    encoding: row.encoding,
    collate: String(db.datcollate),
    ctype: String(db.datctype),
    localeProvider: provider,
    ...(provider !== 'libc' && locale ? { locale } : {}),
    ...(typeof db.daticurules === 'string' ? { icuRules: db.daticurules } : {}),
    owner: row.owner,
    connectionLimit: Number(db.datconnlimit),
    acl,
    settings: row.settings,
    roleSettings: Object.fromEntries(row.role_settings.map((r) => [r.role, r.settings])),
    comment: row.comment,
  };
}

function groupAcl(rows: NonNullable<PropertiesRow['acl']>): AclEntry[] {
  const entries: AclEntry[] = [];
  for (const r of rows) {
    let entry = entries.find((e) => e.grantee === r.grantee && e.grantor === r.grantor);
    if (!entry) entries.push((entry = { grantee: r.grantee, grantor: r.grantor, privileges: [] }));
    entry.privileges.push(r.privilege);
    if (r.grantable) (entry.grantable ??= []).push(r.privilege);
  }
  return entries;
}

/** The properties of the session's own database (the dump's snapshot sees them as of the dump). */
export async function readOwnProperties(client: PgClient): Promise<PgDatabaseProperties> {
  const r = await client.query<PropertiesRow>(`${PROPERTIES_SQL} WHERE d.datname = current_database()`);
  return fromRow(r.rows[0]);
}

export async function readProperties(client: PgClient, database: string): Promise<PgDatabaseProperties | undefined> {
  const r = await client.query<PropertiesRow>(`${PROPERTIES_SQL} WHERE d.datname = $1`, [database]);
  return r.rows[0] ? fromRow(r.rows[0]) : undefined;
}

const PRIVILEGES = new Set(['CREATE', 'CONNECT', 'TEMPORARY']);
const isSetting = (s: unknown) => typeof s === 'string' && s.indexOf('=') > 0;

/**
 * The recorded properties, checked for the fields a restore relies on: a manifest is input, and
 * what goes into SQL unquoted (provider, privileges, the limit) must be one of the known values.
 */
export function asPgProperties(recorded: DatabaseProperties): PgDatabaseProperties {
  const p = recorded as Partial<PgDatabaseProperties>;
  const ok =
    typeof p.encoding === 'string' && typeof p.collate === 'string' && typeof p.ctype === 'string' && typeof p.owner === 'string' &&
    Number.isInteger(p.connectionLimit) &&
    (p.localeProvider === undefined || Object.values(PROVIDERS).includes(p.localeProvider)) &&
    (p.acl === null ||
      (Array.isArray(p.acl) &&
        p.acl.every((e) => typeof e.grantee === 'string' && typeof e.grantor === 'string' && Array.isArray(e.privileges) &&
          [...e.privileges, ...(e.grantable ?? [])].every((priv) => PRIVILEGES.has(priv))))) &&
    Array.isArray(p.settings) && p.settings.every(isSetting) &&
    typeof p.roleSettings === 'object' && p.roleSettings !== null && Object.values(p.roleSettings).every((l) => Array.isArray(l) && l.every(isSetting)) &&
    (p.comment === null || typeof p.comment === 'string');
  if (!ok) {
    throw new RestoreError('[postgres] the manifest\'s database properties are not in the shape this dbstash reads', {
      hint: 'the manifest was changed or written by an incompatible version; restore with the dbstash version that took the backup',
    });
  }
  return { localeProvider: 'libc', ...p } as PgDatabaseProperties;
}

// ---- role names under --no-owner and --role-map ----

/**
 * How a restore names the backup's roles: --role-map renames them; with --no-owner the backup's
 * owner becomes `owner`, the new database's actual owner, in the grants too (the owner's own
 * privileges, and what it granted, follow the ownership).
 */
function roleMapper(p: PgDatabaseProperties, opts: CreateDatabaseOptions, owner: string): (role: string) => string {
  const map = opts.roleMap ?? {};
  return (role) => (role === 'PUBLIC' ? role : opts.noOwner && role === p.owner ? owner : (map[role] ?? role));
}

/** Every privilege as "grantee=PRIVILEGE[*]/grantor" (the ACL's meaning, independent of its order and grouping). */
function aclItems(acl: AclEntry[] | null, owner: string, name: (role: string) => string = (r) => r): Set<string> {
  // A database never granted nor revoked on has the defaults, whoever its owner.
  const entries = acl ?? [
    { grantee: 'PUBLIC', grantor: owner, privileges: ['TEMPORARY', 'CONNECT'] },
    { grantee: owner, grantor: owner, privileges: ['CREATE', 'TEMPORARY', 'CONNECT'] },
  ];
  const items = new Set<string>();
  for (const e of entries) {
    for (const priv of e.privileges) items.add(`${name(e.grantee)}=${priv}${e.grantable?.includes(priv) ? '*' : ''}/${name(e.grantor)}`);
  }
  return items;
}

/** The roles the new database would name, each with what names it; those missing on the server. */
async function missingRoles(client: PgClient, p: PgDatabaseProperties, opts: CreateDatabaseOptions, owner: string): Promise<Map<string, Set<string>>> {
  const name = roleMapper(p, opts, owner);
  const uses = new Map<string, Set<string>>();
  const use = (role: string, what: string) => {
    if (role === 'PUBLIC') return;
    if (!uses.has(role)) uses.set(role, new Set());
    uses.get(role)!.add(what);
  };
  if (!opts.noOwner) use(name(p.owner), 'owner');
  if (!opts.noPrivileges) {
    for (const e of p.acl ?? []) {
      use(name(e.grantee), 'grants');
      use(name(e.grantor), 'grants');
    }
  }
  for (const role of Object.keys(p.roleSettings)) use(name(role), 'settings');
  const existing = await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [[...uses.keys()]]);
  for (const { rolname } of existing.rows) uses.delete(rolname);
  return uses;
}

function missingRolesError(missing: Map<string, Set<string>>, where: string): RestoreError {
  const list = [...missing].map(([role, what]) => `${quoteIdent(role)} (${[...what].join(', ')})`).join(', ');
  const ownerMissing = [...missing.values()].some((what) => what.has('owner'));
  return new RestoreError(`[postgres] the backup's database names role(s) that do not exist on ${where}: ${list}; nothing was restored`, {
    hint:
      'create the roles with --with-globals (backups taken with --globals), or map them to existing roles with --role-map old=new' +
      (ownerMissing ? ', or leave the database and its objects to the restoring user with --no-owner' : ''),
  });
}

// ---- settings ----

/** Settings whose value is a list of quoted names (pg_dump's variable_is_guc_list_quote). */
const LIST_SETTINGS = new Set(['local_preload_libraries', 'search_path', 'session_preload_libraries', 'shared_preload_libraries', 'temp_tablespaces', 'unix_socket_directories']);

/** A stored list value split into its elements, as the server's SplitGUCList does ("a, "B c"" → a, B c). */
export function splitSettingList(value: string): string[] {
  const out: string[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < value.length && /\s/.test(value[i])) i++;
  };
  skipSpace();
  if (i === value.length) return out;
  for (;;) {
    let item = '';
    if (value[i] === '"') {
      for (i++; i < value.length; i++) {
        if (value[i] === '"') {
          if (value[i + 1] !== '"') break;
          i++;
        }
        item += value[i];
      }
      i++;
    } else {
      while (i < value.length && value[i] !== ',' && !/\s/.test(value[i])) item += value[i++];
    }
    out.push(item);
    skipSpace();
    if (value[i] !== ',') return out;
    i++;
    skipSpace();
  }
}

/** "SET name TO value" for a stored "name=value", quoted as pg_dump quotes it. */
export function setClause(setting: string): string {
  const at = setting.indexOf('=');
  const name = setting.slice(0, at);
  const value = setting.slice(at + 1);
  const values = LIST_SETTINGS.has(name.toLowerCase()) ? splitSettingList(value) : [value];
  return `SET ${quoteIdent(name)} TO ${(values.length ? values : ['']).map(quoteLiteral).join(', ')}`;
}

// ---- create ----

function createHint(err: { code?: string; message?: string }, name: string, owner: string): string {
  if (err.code === '42501') return `the restoring user must be a member of role "${owner}" (or a superuser), or restore with --no-owner`;
  if (err.code === '42P04') return `drop or rename the database ${name} first`;
  if (/locale|encoding|collat|ctype/i.test(err.message ?? '')) {
    return "the target server's system must have the backup's locale (locale -a lists them; install it and restart the server)";
  }
  return 'the message above is the server\'s reason; nothing was restored';
}

/**
 * Creates `name` with the recorded properties. The owner is the backup's (renamed by --role-map);
 * with --no-owner it is `fallbackOwner`. Roles are checked before anything is created, and a
 * database whose properties cannot all be applied is dropped again.
 */
export async function createWithProperties(client: PgClient, name: string, p: PgDatabaseProperties, opts: CreateDatabaseOptions, fallbackOwner: string, where: string): Promise<void> {
  const owner = opts.noOwner ? fallbackOwner : (opts.roleMap?.[p.owner] ?? p.owner);
  const missing = await missingRoles(client, p, opts, owner);
  if (missing.size > 0) throw missingRolesError(missing, where);
  const role = roleMapper(p, opts, owner);
  const major = Math.floor(Number((await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0].v) / 10000);
  if (p.localeProvider !== 'libc' && major < 15) {
    throw new RestoreError(`[postgres] the backup's database uses the ${p.localeProvider} locale provider, which this PostgreSQL ${major} server does not have`, {
      hint: 'restore into a server of the version the backup was taken on, or newer',
    });
  }
  const db = quoteIdent(name);
  const create = [`CREATE DATABASE ${db} TEMPLATE template0 ENCODING ${quoteLiteral(p.encoding)} LC_COLLATE ${quoteLiteral(p.collate)} LC_CTYPE ${quoteLiteral(p.ctype)}`];
  if (major >= 15) create.push(`LOCALE_PROVIDER ${p.localeProvider}`);
  if (p.locale) create.push(`${p.localeProvider === 'builtin' ? 'BUILTIN_LOCALE' : 'ICU_LOCALE'} ${quoteLiteral(p.locale)}`);
  if (p.icuRules) create.push(`ICU_RULES ${quoteLiteral(p.icuRules)}`);
  create.push(`OWNER ${quoteIdent(owner)} CONNECTION LIMIT ${Math.trunc(p.connectionLimit)}`);
  try {
    await client.query(create.join(' '));
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const locale = `encoding ${p.encoding}, LC_COLLATE ${p.collate}, LC_CTYPE ${p.ctype}${p.locale ? `, ${p.localeProvider} locale ${p.locale}` : ''}`;
    throw new RestoreError(`[postgres] cannot create ${name} like the backup's database (${locale}, owner ${owner}): ${e.message}`, {
      hint: createHint(e, name, owner),
      cause: err,
    });
  }
  try {
    for (const setting of p.settings) await client.query(`ALTER DATABASE ${db} ${setClause(setting)}`);
    for (const [r, settings] of Object.entries(p.roleSettings)) {
      for (const setting of settings) await client.query(`ALTER ROLE ${quoteIdent(role(r))} IN DATABASE ${db} ${setClause(setting)}`);
    }
    if (p.acl && !opts.noPrivileges) await applyAcl(client, db, p.acl, owner, role);
    if (p.comment !== null) await client.query(`COMMENT ON DATABASE ${db} IS ${quoteLiteral(p.comment)}`);
  } catch (err) {
    await client.query('RESET ROLE').catch(() => {});
    await client.query(`DROP DATABASE IF EXISTS ${db}`).catch(() => {});
    throw new RestoreError(`[postgres] cannot give ${name} the backup's database properties: ${(err as Error).message}; nothing was restored`, {
      hint: 'the restoring user needs the right to set each of them (a superuser has them all; ALTER ROLE … IN DATABASE needs CREATEROLE)',
      cause: err,
    });
  }
}

/**
 * Replaces the default ACL by the recorded one: everything is revoked, then granted entry by entry.
 * The owner's grants come first (a superuser's or an owner member's grant is the owner's);
 * a grant by another role is made as that role, after it received its grant option.
 */
async function applyAcl(client: PgClient, db: string, acl: AclEntry[], owner: string, role: (r: string) => string): Promise<void> {
  const grantee = (r: string) => (r === 'PUBLIC' ? 'PUBLIC' : quoteIdent(r));
  await client.query(`REVOKE ALL ON DATABASE ${db} FROM PUBLIC`);
  await client.query(`REVOKE ALL ON DATABASE ${db} FROM ${quoteIdent(owner)}`);
  const ordered = [...acl.filter((e) => role(e.grantor) === owner), ...acl.filter((e) => role(e.grantor) !== owner)];
  for (const e of ordered) {
    const byOther = role(e.grantor) !== owner;
    if (byOther) await client.query(`SET ROLE ${quoteIdent(role(e.grantor))}`);
    const plain = e.privileges.filter((priv) => !e.grantable?.includes(priv));
    if (plain.length) await client.query(`GRANT ${plain.join(', ')} ON DATABASE ${db} TO ${grantee(role(e.grantee))}`);
    if (e.grantable?.length) await client.query(`GRANT ${e.grantable.join(', ')} ON DATABASE ${db} TO ${grantee(role(e.grantee))} WITH GRANT OPTION`);
    if (byOther) await client.query('RESET ROLE');
  }
}

// ---- compare ----

function sameList(a: string[], b: string[]): boolean {
  const [x, y] = [[...a].sort(), [...b].sort()];
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

const show = (v: unknown) => (v === undefined || v === null ? 'none' : JSON.stringify(v));

/**
 * How `actual` (a live database) differs from the recorded `expected`, one line each. The owner is
 * not compared with --no-owner, the grants not with --no-privileges, and role names are compared
 * after --role-map (and --no-owner's owner) renamed them.
 */
export function differences(expected: PgDatabaseProperties, actual: PgDatabaseProperties, opts: CreateDatabaseOptions = {}): string[] {
  const out: string[] = [];
  const role = roleMapper(expected, opts, actual.owner);
  const check = (what: string, want: unknown, have: unknown) => {
    if (JSON.stringify(want ?? null) !== JSON.stringify(have ?? null)) out.push(`${what}: the backup has ${show(want)}, the database has ${show(have)}`);
  };
  check('encoding', expected.encoding, actual.encoding);
  check('LC_COLLATE', expected.collate, actual.collate);
  check('LC_CTYPE', expected.ctype, actual.ctype);
  check('locale provider', expected.localeProvider, actual.localeProvider);
  check('provider locale', expected.locale, actual.locale);
  check('ICU rules', expected.icuRules, actual.icuRules);
  if (!opts.noOwner) check('owner', role(expected.owner), actual.owner);
  check('connection limit', expected.connectionLimit, actual.connectionLimit);
  check('comment', expected.comment, actual.comment);
  if (!sameList(expected.settings, actual.settings)) check('settings', [...expected.settings].sort(), [...actual.settings].sort());
  const wantRoles: Record<string, string[]> = {};
  for (const [r, s] of Object.entries(expected.roleSettings)) wantRoles[role(r)] = [...(wantRoles[role(r)] ?? []), ...s];
  for (const r of new Set([...Object.keys(wantRoles), ...Object.keys(actual.roleSettings)])) {
    const want = wantRoles[r] ?? [];
    const have = actual.roleSettings[r] ?? [];
    if (!sameList(want, have)) check(`settings of role ${r}`, [...want].sort(), [...have].sort());
  }
  if (!opts.noPrivileges) {
    const want = aclItems(expected.acl, expected.owner, role);
    const have = aclItems(actual.acl, actual.owner);
    const missing = [...want].filter((i) => !have.has(i));
    const extra = [...have].filter((i) => !want.has(i));
    if (missing.length) out.push(`grants the backup has and the database lacks: ${missing.join(', ')}`);
    if (extra.length) out.push(`grants the database has and the backup does not: ${extra.join(', ')}`);
  }
  return out;
}
