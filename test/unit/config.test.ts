// Configuration: ${VAR} interpolation, validation messages that name the key and the valid values,
// the environment name, and where the database comes from (in order: command line, config file,
// DATABASE_URL, DB_* / DEV_DB_*, PG*, then the bundled example outside prod).

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../../src/core/errors.js';
import { emptyConfig, loadConfig, loadDotenv } from '../../src/config/load.js';
import { interpolate, parseConfig } from '../../src/config/parse.js';
import { EXAMPLE_DATABASE, resolveDestinations, resolveEnvName, resolveSource } from '../../src/config/resolve.js';
import { configSchema } from '../../src/config/schema.js';
import { STARTER_CONFIG } from '../../src/cli/init.js';
import { parseTarget } from '../../src/engines/target.js';

const empty = configSchema.parse({});
const dir = mkdtempSync(path.join(os.tmpdir(), 'dbstash-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('config file', () => {
  it('interpolates ${VAR} and ${VAR:-default} in nested values', () => {
    const cfg = parseConfig(
      'databases:\n  app:\n    url: postgres://app:${PW}@${HOST:-localhost}/app\n    labels: { owner: "${OWNER:-ops}" }\n',
      'dbstash.yaml',
      { PW: 'se cret', OWNER: '' },
    );
    assert.equal(cfg.databases.app.url, 'postgres://app:se cret@localhost/app');
    assert.deepEqual(cfg.databases.app.labels, { owner: 'ops' });
    assert.deepEqual(interpolate(['$NOT_A_REF', '${A}${A}'], { A: 'x' }), ['$NOT_A_REF', 'xx']);
  });

  it('a missing variable names the key and the variable, and says how to fix it', () => {
    const err = configError(() => parseConfig('databases:\n  app:\n    url: ${DATABASE_URL}\n', 'dbstash.yaml', {}));
    assert.equal(err.message, 'dbstash.yaml:3: config key databases.app.url uses ${DATABASE_URL}, which is not set');
    assert.match(err.hint ?? '', /export DATABASE_URL/);
  });

  it('a bad enumeration names the key and the valid values', () => {
    const err = configError(() => parseConfig('compression:\n  algorithm: lz4\n', 'my.yaml', {}));
    assert.match(err.message, /^my\.yaml:2: compression\.algorithm: invalid value "lz4"; valid values: zstd, gzip, none$/);
    const nested = configError(() => parseConfig('databases:\n  app:\n    url: x\n    compression: { algorithm: brotli }\n', 'c.yaml', {}));
    assert.match(nested.message, /^c\.yaml:4: databases\.app\.compression\.algorithm: invalid value "brotli"; valid values: zstd, gzip, none$/);
  });

  it('unknown keys and wrong types name the key, its line, the valid keys and the type in words', () => {
    assert.match(configError(() => parseConfig('env: dev\ndatabses: {}\n', 'c.yaml', {})).message, /^c\.yaml:2: \(root\): unknown key databses \(valid keys: env, environments, stash, .*databases, storages/);
    assert.equal(
      configError(() => parseConfig('databases:\n  app:\n    url: x\n    jobs: two\n', 'c.yaml', {})).message,
      'c.yaml:4: databases.app.jobs: expected a number, got "two"',
    );
    assert.match(configError(() => parseConfig('databases:\n  app:\n    url: x\n    prot: 5432\n', 'c.yaml', {})).message, /^c\.yaml:4: databases\.app: unknown key prot \(valid keys: url, name, env, /);
    assert.equal(configError(() => parseConfig('databases:\n  app: {}\n', 'c.yaml', {})).message, 'c.yaml:2: databases.app.url: missing, expected text');
  });

  it('lockWaitTimeout is a duration or "0"', () => {
    const ok = parseConfig('databases:\n  app:\n    url: x\n    lockWaitTimeout: 30s\n', 'c.yaml', {});
    assert.equal(ok.databases.app.lockWaitTimeout, '30s');
    assert.equal(parseConfig('databases:\n  app:\n    url: x\n    lockWaitTimeout: "0"\n', 'c.yaml', {}).databases.app.lockWaitTimeout, '0');
    assert.match(
      configError(() => parseConfig('databases:\n  app:\n    url: x\n    lockWaitTimeout: soon\n', 'c.yaml', {})).message,
      /databases\.app\.lockWaitTimeout: must be a duration such as 30s, 2m or 500ms/,
    );
  });

  it('invalid YAML is a ConfigError naming the file, the line and the text there', () => {
    assert.match(configError(() => parseConfig('a: [1, 2\n', 'broken.yaml', {})).message, /^broken\.yaml:\d+: not valid YAML: /);
    // A missing colon on line 4 is reported on line 4, with the line's text and no dangling ":".
    const missing = configError(() => parseConfig('databases:\n  app:\n    url: x\n    checksums true\n', 'c.yaml', {}));
    assert.equal(missing.message, 'c.yaml:4: not valid YAML: Implicit map keys need to be followed by map values ("checksums true")');
    assert.match(missing.hint ?? '', /"key: value"/);
  });

  it('the starter config from `dbstash init` is valid once DATABASE_URL is set', () => {
    const cfg = parseConfig(STARTER_CONFIG, 'dbstash.yaml', { DATABASE_URL: 'postgres://u:p@h/app' });
    assert.equal(cfg.databases.app.url, 'postgres://u:p@h/app');
    assert.match(configError(() => parseConfig(STARTER_CONFIG, 'dbstash.yaml', {})).message, /DATABASE_URL/);
  });

  it('accepts a large space ratio (the free-space estimate is the user\'s call)', () => {
    assert.equal(parseConfig('space: { ratio: 100000 }\n', 'c.yaml', {}).space?.ratio, 100000);
  });

  it('loadConfig finds dbstash.yaml in the working directory, and --config must exist', async () => {
    const cwd = mkdtempSync(path.join(dir, 'cwd-'));
    const none = await loadConfig(undefined, cwd);
    assert.equal(none.file, undefined);
    // Without a file the schema is not even loaded: its defaults must be what the schema gives.
    assert.deepEqual(none.config, configSchema.parse({}));
    assert.deepEqual(emptyConfig(), configSchema.parse({}));
    writeFileSync(path.join(cwd, 'dbstash.yaml'), 'stash: /somewhere\n');
    assert.equal((await loadConfig(undefined, cwd)).config.stash, '/somewhere');
    await assert.rejects(loadConfig('nope.yaml', cwd), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.exitCode, 2);
      assert.match(err.message, /nope\.yaml not found/);
      return true;
    });
  });

  it('.env.local wins over .env, and the real environment wins over both', () => {
    const cwd = mkdtempSync(path.join(dir, 'dotenv-'));
    writeFileSync(path.join(cwd, '.env'), 'DBSTASH_T_A=from-env\nDBSTASH_T_B=from-env\nDBSTASH_T_C=from-env\n');
    writeFileSync(path.join(cwd, '.env.local'), 'DBSTASH_T_A=from-local\n');
    process.env.DBSTASH_T_C = 'from-process';
    try {
      assert.equal(loadDotenv(cwd).length, 2);
      assert.equal(process.env.DBSTASH_T_A, 'from-local');
      assert.equal(process.env.DBSTASH_T_B, 'from-env');
      assert.equal(process.env.DBSTASH_T_C, 'from-process');
    } finally {
      for (const k of ['DBSTASH_T_A', 'DBSTASH_T_B', 'DBSTASH_T_C']) delete process.env[k];
    }
  });
});

describe('environment name', () => {
  it('flag, then config, then ENV_MODE, then NODE_ENV, then dev', () => {
    assert.equal(resolveEnvName('prod', { ...empty, env: 'dev' }, { ENV_MODE: 'dev' }), 'prod');
    assert.equal(resolveEnvName(undefined, { ...empty, env: 'staging' }, { ENV_MODE: 'dev' }), 'staging');
    assert.equal(resolveEnvName('auto', empty, { ENV_MODE: 'production', NODE_ENV: 'development' }), 'prod');
    assert.equal(resolveEnvName(undefined, empty, { NODE_ENV: 'development' }), 'dev');
    assert.equal(resolveEnvName(undefined, empty, {}), 'dev');
  });

  it('refuses names that cannot be part of an id', () => {
    assert.match(configError(() => resolveEnvName('pro d', empty, {})).message, /"pro d" \(--env\) is not a valid name/);
  });

  it('refuses an environment nobody declared, with the near miss; the config can declare its own', () => {
    const typo = configError(() => resolveEnvName('prdo', empty, {}));
    assert.match(typo.message, /^environment "prdo" \(--env\) is not one dbstash knows: did you mean prod\? known: dev, /);
    assert.match(typo.hint ?? '', /environments: \[prdo\]/);
    assert.match(configError(() => resolveEnvName(undefined, empty, { NODE_ENV: 'tset' })).message, /\(NODE_ENV\) .*did you mean test\?/);
    assert.equal(resolveEnvName('eu-west', { ...empty, environments: ['eu-west'] }, {}), 'eu-west');
  });
});

describe('which database', () => {
  const config = parseConfig('databases:\n  app:\n    url: postgres://cfg@cfghost/cfgdb\n', 'c.yaml', {});
  const env: NodeJS.ProcessEnv = {
    DATABASE_URL: 'postgres://url@urlhost/urldb',
    DB_HOST: 'prodhost',
    DB_NAME: 'proddb',
    DB_USER: 'produser',
    DB_PASSWORD: 'prod pw',
    DEV_DB_HOST: 'devhost',
    DEV_DB_NAME: 'devdb',
    DEV_DB_PORT: '5433',
    PGHOST: 'pghost',
    PGDATABASE: 'pgdb',
    PGUSER: 'pguser',
  };
  const without = (...keys: string[]) => Object.fromEntries(Object.entries(env).filter(([k]) => !keys.some((p) => k.startsWith(p))));
  const host = (url: string) => parseTarget(url).host;

  it('the command line beats everything', () => {
    const r = resolveSource('postgres://cli@clihost/clidb', config, 'dev', env);
    assert.equal(r.from, 'argument');
    assert.equal(host(r.url), 'clihost');
  });

  it('a name from the config selects that entry', () => {
    const r = resolveSource('app', config, 'dev', env);
    assert.equal(r.from, 'config databases.app');
    assert.equal(r.key, 'app');
  });

  it('then the config file', () => {
    assert.equal(host(resolveSource(undefined, config, 'dev', env).url), 'cfghost');
  });

  it('then DATABASE_URL', () => {
    const r = resolveSource(undefined, empty, 'dev', env);
    assert.equal(r.from, 'DATABASE_URL');
    assert.equal(host(r.url), 'urlhost');
  });

  it('then DEV_DB_* in dev and DB_* in prod (never the other one)', () => {
    const dev = parseTarget(resolveSource(undefined, empty, 'dev', without('DATABASE_URL')).url);
    assert.deepEqual([dev.host, dev.port, dev.database], ['devhost', 5433, 'devdb']);
    const prod = parseTarget(resolveSource(undefined, empty, 'prod', without('DATABASE_URL')).url);
    assert.deepEqual([prod.host, prod.database, prod.user, prod.password], ['prodhost', 'proddb', 'produser', 'prod pw']);
    assert.equal(host(resolveSource(undefined, empty, 'prod', without('DATABASE_URL', 'DB_')).url), 'pghost');
    assert.equal(host(resolveSource(undefined, empty, 'dev', without('DATABASE_URL', 'DEV_DB_')).url), 'pghost');
  });

  it('DB_HOST without DB_NAME is a config error', () => {
    const err = configError(() => resolveSource(undefined, empty, 'prod', { DB_HOST: 'h' }));
    assert.match(err.message, /DB_HOST is set but DB_NAME is not/);
  });

  it('then libpq PG* variables', () => {
    const r = resolveSource(undefined, empty, 'dev', without('DATABASE_URL', 'DB_', 'DEV_DB_'));
    assert.equal(r.from, 'PG* variables');
    const t = parseTarget(r.url);
    assert.deepEqual([t.host, t.database, t.user], ['pghost', 'pgdb', 'pguser']);
  });

  it('then the bundled example outside prod; prod refuses it', () => {
    const r = resolveSource(undefined, empty, 'dev', {});
    assert.equal(r.url, EXAMPLE_DATABASE);
    assert.equal(parseTarget(r.url).engine, 'sqlite');
    const err = configError(() => resolveSource(undefined, empty, 'prod', {}));
    assert.match(err.message, /no database configured/);
    assert.match(err.hint ?? '', /DATABASE_URL/);
  });

  it('several configured databases need a name', () => {
    const two = parseConfig('databases:\n  a: { url: x.db }\n  b: { url: y.db }\n', 'c.yaml', {});
    assert.match(configError(() => resolveSource(undefined, two, 'dev', env)).message, /several databases \(a, b\)/);
  });
});

describe('destinations', () => {
  it('--output-dir, else the config\'s stash, else ./backups', async () => {
    const explicit = await resolveDestinations({ outputDir: path.join(dir, 'out') }, empty);
    assert.equal(explicit[0].storage.url, path.join(dir, 'out'));
    const fromConfig = await resolveDestinations({}, { ...empty, stash: path.join(dir, 'cfg') });
    assert.equal(fromConfig[0].storage.url, path.join(dir, 'cfg'));
    assert.equal((await resolveDestinations({}, empty))[0].storage.url, path.resolve('backups'));
  });

  it('a database entry naming an undefined storage is a config error', async () => {
    const cfg = parseConfig('databases:\n  a: { url: x.db, storages: [offsite] }\n', 'c.yaml', {});
    await assert.rejects(resolveDestinations({}, cfg, cfg.databases.a), (e: unknown) => e instanceof ConfigError && /storage "offsite" is not defined/.test(e.message));
  });
});
