// npm's prepare step: compile the TypeScript sources into dist/.
//
// `npm install -g .` in a fresh clone links the folder and runs prepare without installing the
// folder's own dependencies, so the compiler is not there yet: then they are installed first
// (`npm ci`, which runs this step again and builds), with npm's settings for the outer, global
// install taken out of the environment.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const run = (cmd, args, env = process.env) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  process.exit(r.status ?? 1);
};

if (!existsSync(path.join(root, 'node_modules', 'typescript', 'package.json'))) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  console.error('dbstash: installing its dependencies first (npm ci), then building');
  run('npm', ['ci', '--no-audit', '--no-fund'], env);
}
const tsc = createRequire(path.join(root, 'package.json')).resolve('typescript/bin/tsc');
run(process.execPath, [tsc, '-p', 'tsconfig.json']);
