// Exit codes are part of the interface: every code the CLI can return is documented in --help
// and in the README, with the same meaning.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ExitCode } from '../../src/core/errors.js';
import { EXIT_CODES_HELP } from '../../src/cli/common.js';

const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

describe('exit codes', () => {
  const codes = [...new Set(Object.values(ExitCode))];

  it('every code is in --help', () => {
    for (const code of codes) assert.match(EXIT_CODES_HELP, new RegExp(`^\\s+${code}\\s+\\S`, 'm'), `exit code ${code}`);
    assert.match(EXIT_CODES_HELP, /143 terminated \(SIGTERM\)/);
  });

  it('every code is in the README\'s table', () => {
    for (const code of codes) assert.match(README, new RegExp(`^\\| ${code}( / \\d+)? \\| \\S`, 'm'), `exit code ${code}`);
    assert.match(README, /^\| 130 \/ 143 \|/m);
  });

  it('distinct failures have distinct codes', () => {
    const failures = { usage: ExitCode.usage, connection: ExitCode.connection, preflight: ExitCode.preflight, backupFailed: ExitCode.backupFailed, locked: ExitCode.locked };
    assert.equal(new Set(Object.values(failures)).size, Object.keys(failures).length);
    assert.deepEqual(failures, { usage: 2, connection: 3, preflight: 4, backupFailed: 5, locked: 6 });
  });
});
