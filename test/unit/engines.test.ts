// The runtime is Node.js 22 and 24: package.json says so, and every dependency's own `engines`
// accepts both lines (a dependency that needs a newer Node.js, or dropped 22, fails here).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import semver from 'semver';

const root = new URL('../../../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));

describe('supported Node.js lines', () => {
  it('package.json supports 22 and 24 and nothing older', () => {
    for (const v of ['22.12.0', '22.23.5', '24.0.0', '24.22.3']) assert.ok(semver.satisfies(v, pkg.engines.node), `${v} in ${pkg.engines.node}`);
    assert.ok(!semver.satisfies('20.20.2', pkg.engines.node), 'Node.js 20 is past its end of life');
  });

  it('every dependency installed accepts both lines', () => {
    const names = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies });
    for (const name of names) {
      const dep = JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, root), 'utf8'));
      const range: string | undefined = dep.engines?.node;
      if (!range) continue;
      for (const v of ['22.12.0', '24.0.0']) assert.ok(semver.satisfies(v, range), `${name}@${dep.version} wants node ${range}, not ${v}`);
    }
  });
});
