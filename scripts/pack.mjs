// npm pack's prepack/postpack: the release tarball holds the compiled JavaScript, so it needs no
// build step; without its `prepare` script, installing it runs only the native addons' own
// installers (which npm lets run with --allow-scripts=better-sqlite3,zstd-napi,ssh2,cpu-features). prepack writes
// package.json without that script (keeping the original beside it), postpack puts it back.

import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const file = path.join(root, 'package.json');
const kept = path.join(root, '.package.json.orig');

if (process.argv[2] === 'strip') {
  if (!existsSync(path.join(root, 'dist', 'src', 'cli', 'main.js'))) {
    console.error('dbstash: build first (npm ci, or npx tsc -p tsconfig.json): the tarball ships dist/');
    process.exit(1);
  }
  copyFileSync(file, kept);
  const pkg = JSON.parse(readFileSync(file, 'utf8'));
  delete pkg.scripts.prepare;
  writeFileSync(file, JSON.stringify(pkg, null, 2) + '\n');
} else if (existsSync(kept)) {
  renameSync(kept, file);
}
