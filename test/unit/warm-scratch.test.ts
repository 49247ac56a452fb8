// Warm scratch servers (src/verify/warm.ts) against an in-memory engine: one server per engine for
// every drill, drills on it take turns, a server that stopped answering is replaced, a failed start
// is tried again, and close() stops what runs. The real servers: test/ops/daemon.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Engine, ScratchServer, Target } from '../../src/engines/engine.js';
import { WarmScratch } from '../../src/verify/warm.js';

function fakeEngine(opts: { failFirstStart?: boolean } = {}) {
  const log: string[] = [];
  const servers: { n: number; up: boolean }[] = [];
  let failNext = !!opts.failFirstStart;
  const engine = {
    id: 'postgres',
    async startScratchServer(): Promise<ScratchServer> {
      if (failNext) {
        failNext = false;
        throw new Error('initdb failed');
      }
      const s = { n: servers.length + 1, up: true };
      servers.push(s);
      log.push(`start ${s.n}`);
      return {
        target: { engine: 'postgres', database: 'postgres', displayUrl: `scratch-${s.n}`, server: s } as unknown as Target,
        serverVersion: '15.20',
        async stop() {
          s.up = false;
          log.push(`stop ${s.n}`);
        },
      };
    },
    async listDatabases(target: Target) {
      if (!(target as unknown as { server: { up: boolean } }).server.up) throw new Error('connection refused');
      return ['postgres'];
    },
  } as unknown as Engine;
  return { engine, log, servers };
}

describe('warm scratch servers', () => {
  it('one server for every drill, drills taking turns; close() stops it', async () => {
    const { engine, log } = fakeEngine();
    const warm = new WarmScratch('/tmp');
    const drill = (name: string, ms: number) =>
      warm.use(engine, async (s) => {
        log.push(`${name} on ${s.target.displayUrl}`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`${name} done`);
        return name;
      });
    assert.deepEqual(await Promise.all([drill('a', 30), drill('b', 1), drill('c', 1)]), ['a', 'b', 'c']);
    assert.deepEqual(log, ['start 1', 'a on scratch-1', 'a done', 'b on scratch-1', 'b done', 'c on scratch-1', 'c done']);
    assert.equal(warm.started, 1);
    await warm.close();
    assert.equal(log.at(-1), 'stop 1');
    await assert.rejects(drill('late', 1), /closed/);
  });

  it('a server that stopped answering is replaced; a failed start is tried again by the next drill', async () => {
    const { engine, servers, log } = fakeEngine({ failFirstStart: true });
    const warm = new WarmScratch('/tmp');
    const use = () => warm.use(engine, async (s) => s.target.displayUrl);
    await assert.rejects(use(), /initdb failed/);
    assert.equal(await use(), 'scratch-1');
    servers[0].up = false; // the server died between two drills
    assert.equal(await use(), 'scratch-2');
    assert.equal(await use(), 'scratch-2');
    await warm.close();
    assert.deepEqual(log, ['start 1', 'stop 1', 'start 2', 'stop 2']);
  });

  it('a drill that fails leaves the server warm for the next one', async () => {
    const { engine } = fakeEngine();
    const warm = new WarmScratch('/tmp');
    await assert.rejects(
      warm.use(engine, async () => {
        throw new Error('the dump does not restore');
      }),
      /does not restore/,
    );
    assert.equal(await warm.use(engine, async (s) => s.target.displayUrl), 'scratch-1');
    assert.equal(warm.started, 1);
    await warm.close();
  });
});
