// What a PostgreSQL dump needs from the server it is restored into, read from its schema script
// and its globals artifact (src/engines/postgres/drill.ts), and which restore failures the server
// causes rather than the dump (restoreFailure in src/engines/postgres/restore.ts).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NeedsCollector } from '../../src/engines/postgres/drill.js';
import { restoreFailure } from '../../src/engines/postgres/restore.js';
import { RestoreEnvironmentError, RestoreError } from '../../src/core/errors.js';

function needsOf(script: string) {
  const c = new NeedsCollector();
  for (const line of script.split('\n')) c.line(line);
  return c.needs();
}

describe('the needs of a schema script', () => {
  it('roles of owners, grants, default privileges, replayed grantors, policies and user mappings; extensions', () => {
    const needs = needsOf(`--
-- Name: customer; Type: TABLE; Schema: public; Owner: app_owner
--
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
CREATE EXTENSION "uuid-ossp" WITH SCHEMA public;
ALTER TABLE public.customer OWNER TO app_owner;
ALTER SCHEMA public OWNER TO pg_database_owner;
CREATE POLICY p ON public.customer FOR SELECT TO app_reader, "Audit Team" USING ((region = 'north TO x'::text));
CREATE POLICY q ON public.customer USING (true);
GRANT SELECT ON TABLE public.customer TO reporting;
GRANT ALL ON SCHEMA public TO PUBLIC;
REVOKE ALL ON TABLE public.customer FROM "Old ""Team""";
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES  TO auditors;
SET SESSION AUTHORIZATION grantor_role;
CREATE USER MAPPING FOR etl SERVER remote OPTIONS (user 'etl');
COPY public.customer (id, name) FROM stdin;`);
    assert.deepEqual(needs.roles, ['Audit Team', 'Old "Team"', 'app_owner', 'app_reader', 'auditors', 'etl', 'grantor_role', 'pg_database_owner', 'reporting']);
    assert.deepEqual(needs.rolesWithoutOwnership, ['Audit Team', 'app_reader', 'etl']);
    assert.deepEqual(needs.extensions, ['pgcrypto', 'uuid-ossp']);
  });

  it('the roles a globals artifact creates', () => {
    const c = new NeedsCollector();
    for (const line of ['CREATE ROLE app_reader;', 'ALTER ROLE app_reader WITH NOLOGIN;', 'CREATE ROLE "Weird ""one""";', 'GRANT grp TO app_reader GRANTED BY postgres;']) c.globalRole(line);
    assert.deepEqual(c.needs().roles, ['Weird "one"', 'app_reader']);
  });
});

describe('restore failures', () => {
  const failed = (stderr: string) => restoreFailure('pg_restore', { code: 1, signal: null, stderr });

  it('the server restored into: a RestoreEnvironmentError, with the server\'s message and the statement', () => {
    const err = failed('pg_restore: error: could not execute query: ERROR:  role "app_reader" does not exist\nCommand was: CREATE POLICY p ON public.t FOR SELECT TO app_reader USING (true);\n');
    assert.ok(err instanceof RestoreEnvironmentError);
    assert.equal(err.message, '[postgres] pg_restore exited with code 1: role "app_reader" does not exist (while running: CREATE POLICY p ON public.t FOR SELECT TO app_reader USING (true);)');
    for (const stderr of [
      'ERROR:  extension "postgis" is not available\nDETAIL:  Could not open extension control file',
      'ERROR:  could not access file "$libdir/myext": No such file or directory',
      'ERROR:  permission denied to create event trigger "x"',
      'ERROR:  could not extend file "base/1/2": No space left on device',
      'pg_restore: error: connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory',
    ]) {
      assert.ok(failed(stderr) instanceof RestoreEnvironmentError, stderr);
    }
  });

  it('what the dump says: a RestoreError', () => {
    for (const stderr of [
      'pg_restore: error: COPY failed for table "customer": ERROR:  invalid input syntax for type integer: "42x242"',
      'ERROR:  duplicate key value violates unique constraint "customer_pkey"',
      'ERROR:  syntax error at or near "CRATE"',
    ]) {
      const err = failed(stderr);
      assert.ok(err instanceof RestoreError && !(err instanceof RestoreEnvironmentError), stderr);
    }
  });
});
