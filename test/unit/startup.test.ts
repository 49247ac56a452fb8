// What a command loads is part of its fixed cost: the module loader takes about half a
// millisecond per module, and zod alone is 99 of them (~55 ms here). A backup writes a manifest
// and never parses one, so it must not load the manifest schema or zod; `list`, which parses
// manifests, does, which shows that the check sees them. Real commands, with a loader hook that
// writes down every module resolved.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';

const dir = tempDir('dbstash-startup');
const hooks = path.join(dir, 'hooks.mjs');
writeFileSync(
  hooks,
  `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(process.env.DBSTASH_TEST_MODULES, resolved.url + '\\n');
  return resolved;
}`,
);
const register = path.join(dir, 'register.mjs');
writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);

/** Runs the CLI and returns the URLs of the modules it loaded. */
async function modulesOf(name: string, args: string[]): Promise<string[]> {
  const list = path.join(dir, `${name}.txt`);
  writeFileSync(list, '');
  const r = await runCli(args, { env: { NODE_OPTIONS: `--import=${register}`, DBSTASH_TEST_MODULES: list } });
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  return readFileSync(list, 'utf8').split('\n').filter(Boolean);
}

const schemaOrZod = (urls: string[]) => urls.filter((u) => u.includes('/node_modules/zod/') || u.endsWith('/manifest-schema.js'));

describe('start-up', () => {
  test('a backup loads neither the manifest schema nor zod; list, which parses manifests, loads both', async () => {
    const file = path.join(dir, 'app.db');
    const db = new Database(file);
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES (1), (2)');
    db.close();
    const stash = path.join(dir, 'stash');
    // The second backup goes into a series that has one already.
    for (const round of ['first', 'second']) {
      const loaded = await modulesOf(`backup-${round}`, ['backup', file, '--output-dir', stash, '--quiet']);
      assert.ok(loaded.some((u) => u.endsWith('/backup/backup.js')), 'the hook saw the backup module');
      assert.deepEqual(schemaOrZod(loaded), [], `the ${round} backup`);
    }
    const listed = await modulesOf('list', ['list', '--output-dir', stash, '--json']);
    assert.ok(schemaOrZod(listed).some((u) => u.endsWith('/manifest-schema.js')));
    assert.ok(schemaOrZod(listed).some((u) => u.includes('/node_modules/zod/')));
  });
});
