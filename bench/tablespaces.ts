// Base backups of a cluster whose data lies in a tablespace, the path where dbstash speaks
// BASE_BACKUP itself (src/engines/postgres/base-stream.ts) because pg_basebackup writes one
// tablespace to stdout at most:
//   dbstash backup <url> --physical --self-contained (zstd -3, one tar with the tablespace inside)
//   (p) pg_basebackup -Ft -X fetch --compress=client-zstd:3 -c fast -D DIR (base.tar.zst and
//       <oid>.tar.zst in DIR, on local disk)
// A throwaway cluster of its own: pgbench -i at the run's scale with every table and index in
// tablespace `fast`. Alternated over the rounds, each output removed and the disk synced before the
// next run. Targets: wall time ≤ 1.1× (p), as for base backups without tablespaces, and the
// peak RSS of dbstash's node process ≤ 150 MB.

import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { startPostgres, PG_BIN_DIR, type PgServer } from '../test/harness/postgres.js';
import { chownToUser } from '../test/harness/proc.js';
import { removeTempDir, tempDir } from '../test/harness/tmp.js';
import { pgEnv } from './database.js';
import type { ExtensionResult } from './extensions.js';
import { measure, median, type CommandSpec, type Measurement } from './measure.js';
import { formatMB, RSS_LIMIT, type Target } from './report.js';
import { dirSize, withoutStartupVars } from './scenarios.js';

export const TABLESPACE_IDS = ['physical_tablespace'];

const WALL_RATIO = 1.1;

export async function runTablespaceBench(ctx: { cliPath: string; rounds: number; scale: number; ambientNodeEnv?: boolean; log(m: string): void }): Promise<ExtensionResult> {
  const work = tempDir('dbstash-bench-tablespace');
  let server: PgServer | undefined;
  try {
    server = await startPostgres({ conf: ['max_wal_senders = 4'] });
    const fast = path.join(work, 'fast');
    await fsp.mkdir(fast, { mode: 0o700 });
    // The server's OS user reaches the directory through the work directory.
    await chownToUser('postgres', work);
    await server.query(`CREATE TABLESPACE fast LOCATION '${fast}'`);
    ctx.log(`tablespace: pgbench -i -s ${ctx.scale} with every table and index in tablespace fast`);
    const init = spawnSync(path.join(PG_BIN_DIR, 'pgbench'), ['-i', '-q', '-s', String(ctx.scale), '--tablespace=fast', '--index-tablespace=fast'], { env: pgEnv(server, 'postgres'), encoding: 'utf8' });
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
    await server.query('CHECKPOINT');
    const inTablespace = Number((await server.query(`SELECT sum(pg_relation_size(c.oid))::bigint AS n FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE t.spcname = 'fast'`)).rows[0].n);
    const cluster = Number((await server.query(`SELECT sum(pg_database_size(oid))::bigint AS n FROM pg_database`)).rows[0].n);
    const env = pgEnv(server, 'postgres');
    const nodeEnv = withoutStartupVars(process.env, ctx.ambientNodeEnv);
    const stash = path.join(work, 'stash');
    const out = path.join(work, 'p');
    const rows: { id: string; label: string; spec(): CommandSpec; output: string }[] = [
      {
        id: 'dbstash',
        label: 'dbstash backup --physical --self-contained (zstd -3)',
        spec: () => ({ cmd: process.execPath, args: [ctx.cliPath, 'backup', server!.url(), '--physical', '--self-contained', '--output-dir', stash, '--quiet'], env: nodeEnv, serverPid: server!.pid }),
        output: stash,
      },
      {
        id: 'pg_basebackup',
        label: '(p) pg_basebackup -Ft -X fetch --compress=client-zstd:3 -c fast -D DIR',
        spec: () => ({ cmd: path.join(PG_BIN_DIR, 'pg_basebackup'), args: ['-D', out, '-Ft', '-X', 'fetch', '--compress=client-zstd:3', '--checkpoint=fast'], env, serverPid: server!.pid }),
        output: out,
      },
    ];
    const runs: { id: string; round: number; m: Measurement; size: number }[] = [];
    for (let round = 1; round <= ctx.rounds; round++) {
      for (let i = 0; i < rows.length; i++) {
        const row = rows[(i + round - 1) % rows.length];
        execFileSync('sync');
        const m = await measure(row.spec());
        const size = await dirSize(row.output);
        await fsp.rm(row.output, { recursive: true, force: true });
        runs.push({ id: row.id, round, m, size });
        ctx.log(`tablespace round ${round}/${ctx.rounds} ${row.id}: wall ${(m.wallMs / 1000).toFixed(2)} s, CPU ${(m.cpuMs / 1000).toFixed(2)} s, server CPU ${((m.serverCpuMs ?? 0) / 1000).toFixed(2)} s, RSS ${formatMB(m.rootPeakRss)}, output ${formatMB(size)}`);
      }
    }
    const of = (id: string) => runs.filter((r) => r.id === id);
    const spread = (v: number[], d = 2) => `${median(v).toFixed(d)} (${Math.min(...v).toFixed(d)}–${Math.max(...v).toFixed(d)})`;
    const text = [
      `base backup with a tablespace: pgbench scale ${ctx.scale}, ${formatMB(cluster)} in the cluster, ${formatMB(inTablespace)} of it in tablespace fast; ${ctx.rounds} rounds, alternated`,
      ...rows.map((r) => {
        const rs = of(r.id);
        return `  ${r.label}: wall ${spread(rs.map((x) => x.m.wallMs / 1000))} s, CPU ${spread(rs.map((x) => x.m.cpuMs / 1000))} s, server CPU ${spread(rs.map((x) => (x.m.serverCpuMs ?? 0) / 1000))} s, peak RSS ${formatMB(Math.max(...rs.map((x) => x.m.rootPeakRss)))}, output ${formatMB(median(rs.map((x) => x.size)))}`;
      }),
    ];
    const mine = of('dbstash');
    const theirs = of('pg_basebackup');
    const ratio = median(mine.map((r) => r.m.wallMs)) / median(theirs.map((r) => r.m.wallMs));
    const perRound = mine.map((r) => r.m.wallMs / theirs.find((t) => t.round === r.round)!.m.wallMs);
    text.push(`  wall time dbstash vs (p): ${ratio.toFixed(2)}× (per round ${Math.min(...perRound).toFixed(2)}–${Math.max(...perRound).toFixed(2)}); output ${(median(mine.map((r) => r.size)) / median(theirs.map((r) => r.size))).toFixed(3)}× of (p)'s`);
    const peak = Math.max(...mine.map((r) => r.m.rootPeakRss));
    const targets: Target[] = [
      { name: `physical_tablespace, scale ${ctx.scale}: base backup with a tablespace, wall time vs (p) pg_basebackup to a directory`, value: `${ratio.toFixed(2)}×`, limit: `≤ ${WALL_RATIO.toFixed(2)}×`, pass: ratio <= WALL_RATIO },
      { name: `physical_tablespace, scale ${ctx.scale}: peak RSS of the node process`, value: formatMB(peak), limit: `≤ ${formatMB(RSS_LIMIT)}`, pass: peak <= RSS_LIMIT },
    ];
    return { id: `tablespace-s${ctx.scale}`, text: text.join('\n'), data: { scale: ctx.scale, cluster, inTablespace, runs: runs.map((r) => ({ id: r.id, round: r.round, size: r.size, ...r.m, stdout: undefined })) }, targets };
  } finally {
    await server?.stop();
    await removeTempDir(work);
  }
}
