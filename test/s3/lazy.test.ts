// The S3 SDK is loaded only when an s3:// storage is opened: a local backup runs with a module
// hook that refuses to load anything from @aws-sdk, and the same hook makes an S3 command fail
// (showing that the hook does bite).

import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { CLI_PATH } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb } from './helpers.js';

let dir: string;
let db: string;
let register: string;

function cliWithoutSdk(args: string[]) {
  return spawnSync(process.execPath, ['--import', register, CLI_PATH, ...args], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
}

before(() => {
  dir = tempDir('dbstash-lazy');
  db = makeSqliteDb(dir, 'shop', 1);
  const hooks = path.join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `export async function load(url, context, next) {
  if (url.includes('/@aws-sdk/')) throw new Error('refused to load ' + url);
  return next(url, context);
}
`,
  );
  register = path.join(dir, 'register.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(new URL(`file://${hooks}`).href)});\n`);
});

describe('lazy SDK loading', () => {
  it('a local backup and list never load @aws-sdk', () => {
    const backup = cliWithoutSdk(['backup', db, '--output-dir', path.join(dir, 'stash')]);
    assert.equal(backup.status, 0, backup.stderr);
    const list = cliWithoutSdk(['list', '--output-dir', path.join(dir, 'stash')]);
    assert.equal(list.status, 0, list.stderr);
  });

  it('an s3:// storage does load it (the hook works)', () => {
    const res = cliWithoutSdk(['list', '--storage', 's3://bucket/prefix']);
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /refused to load .*@aws-sdk/);
  });
});
