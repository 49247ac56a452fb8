// Output piped into a reader that stops early (`dbstash status | head -1` in a monitoring script):
// the command ends quietly instead of crashing with an EPIPE stack trace.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CLI_PATH } from '../harness/run.js';

test('a reader that is gone before dbstash writes: no stack trace, exit 0', () => {
  // `true` exits at once; dbstash starts writing only after the read end is closed.
  const script = `(sleep 0.3; "${process.execPath}" "${CLI_PATH}" --help; echo "dbstash exit $?" >&2) | true`;
  const r = spawnSync('/bin/sh', ['-c', script], { encoding: 'utf8' });
  assert.match(r.stderr, /^dbstash exit 0\n$/);
  assert.doesNotMatch(r.stderr, /EPIPE|Unhandled|    at /);
});
