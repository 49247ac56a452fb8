// Upload throughput and peak memory of the remote drivers, against tools that do not involve
// dbstash, measured in the same run against the same server:
//   upload_sftp:  the harness's OpenSSH sshd on 127.0.0.1 (internal-sftp), against OpenSSH's
//     `sftp` (put, and put -f, which fsyncs as the driver does) and `rclone copyto` to an sftp
//     remote.
//   upload_azure: the harness's Azurite on 127.0.0.1, against `rclone copyto` to an azureblob
//     remote.
// The baselines upload a file of 1 GiB of AES-CTR keystream (incompressible), written once and
// read once before the rounds so it comes from the page cache. dbstash's side, the one the targets
// hold, is what a user runs to move an artifact of that size: `dbstash copy` of a backup whose
// artifact is 1 GiB, from a local stash to the destination (it also reads the manifest, hashes
// the artifact as it goes and writes the manifest after it). Beside it, the driver alone:
// bench/put-file.ts, a Node process that opens the storage by URL as the CLI does and puts the
// baselines' file as the local storage's get() hands it over (drawn into the block buffers by
// the Azure driver; read 256 KiB at a time by SFTP, and 1 MiB at a time in a second row); it reports the full GCs during its put. In a process that small, V8 runs a full GC
// about every 10 MB uploaded over SFTP (ssh2 allocates each packet anew, outside the heap), which
// the CLI's larger heap does not (docs/performance.md); it is not a target for that reason.
// Every command is run by measure() (wall time, CPU of its process tree, VmHWM of its root), the
// rows of one round one after another with the starting row rotated each round; every upload is
// checked (size) and removed, then the file system synced, before the next run starts. The server's
// own CPU per run is read from /proc: Azurite is one Node process and may be the bottleneck of
// both sides; they are held against each other on the same server only.
// Targets: `dbstash copy`'s throughput ≥ 0.9× each baseline's (sftp put, rclone), the peak RSS of
// its node process ≤ 150 MB; put-file's peak RSS ≤ 150 MB too.

import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { startAzurite, type AzuriteServer } from '../test/harness/azurite.js';
import { startSshd, type SshServer } from '../test/harness/sshd.js';
import { removeTempDir, tempDir } from '../test/harness/tmp.js';
import type { ExtensionResult } from './extensions.js';
import { measure, median, type CommandSpec } from './measure.js';
import { formatMB, MB, RSS_LIMIT, type Target } from './report.js';
import { withoutStartupVars } from './scenarios.js';

export const STORAGE_IDS = ['upload_sftp', 'upload_azure'];

const FILE_BYTES = 1024 * MB;
const THROUGHPUT_RATIO = 0.9;
const TICK_MS = 10;
/** The server reaps a session's processes (sshd) a moment after the client exits. */
const REAP_MS = 150;
const PUT_FILE = fileURLToPath(new URL('./put-file.js', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** What one run stored on the server. */
interface Stored {
  size(): Promise<number | undefined>;
  remove(): Promise<void>;
}

interface Row {
  id: string;
  label: string;
  bytes: number;
  spec(): CommandSpec;
  /** Checks what the run stored (its size), then removes it. */
  checkAndRemove(): Promise<void>;
}

interface Destination {
  id: string;
  name: string;
  serverPid: number;
  rows: Row[];
  /** Throughput of `of` against `against`; `target` makes it a PASS/FAIL target. */
  ratios: { of: string; against: string; target: boolean }[];
}

interface Run {
  destination: string;
  row: string;
  round: number;
  wallMs: number;
  MBps: number;
  cpuMs: number;
  userMs: number;
  sysMs: number;
  serverCpuMs: number;
  rootPeakRss: number;
  treePeakRss: { bytes: number; name: string };
  loadAverage: number;
  /** What put-file.js saw itself (the put alone, RSS before it). */
  self?: { putMs: number; rssBeforePutMB: number; maxRssMB: number; majorGcs: number; majorGcMs: number };
}

/** user+sys of a process and of the children it has reaped, in ms. */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": utime, stime, cutime, cstime are fields 14–17, i.e. f[11]..f[14].
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * TICK_MS;
}

function versionOf(cmd: string, args: string[]): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${res.stdout ?? ''}${res.stderr ?? ''}`.trim().split('\n')[0] || 'unknown';
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(path.join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** `bytes` of AES-256-CTR keystream: what compression cannot shrink. */
function writeRandomFile(file: string, bytes: number): void {
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16));
  const zeros = Buffer.alloc(8 * MB);
  const fd = openSync(file, 'w', 0o600);
  try {
    for (let done = 0; done < bytes; done += zeros.length) writeSync(fd, cipher.update(zeros.subarray(0, Math.min(zeros.length, bytes - done))));
  } finally {
    closeSync(fd);
  }
}

async function readThrough(file: string): Promise<void> {
  for await (const _ of createReadStream(file, { highWaterMark: 4 * MB }));
}

/**
 * A SQLite database of ~1 GiB of random blobs, backed up uncompressed into `stash`: a backup whose
 * artifact is 1 GiB for `dbstash copy`. The database is removed; the stash stays.
 */
function makeBigBackup(cliPath: string, dir: string, env: NodeJS.ProcessEnv): { id: string; folder: string; file: string; size: number } {
  const dbFile = path.join(dir, 'big.sqlite');
  const db = new Database(dbFile);
  db.pragma('journal_mode = OFF');
  db.exec('CREATE TABLE b (id INTEGER PRIMARY KEY, v BLOB)');
  const insert = db.prepare('INSERT INTO b (v) VALUES (?)');
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16));
  const zeros = Buffer.alloc(MB);
  db.transaction(() => {
    for (let i = 0; i < FILE_BYTES / MB; i++) insert.run(cipher.update(zeros));
  })();
  db.close();
  const made = spawnSync(process.execPath, [cliPath, 'backup', dbFile, '--output-dir', path.join(dir, 'stash'), '--compression', 'none', '--json', '--quiet'], { encoding: 'utf8', env });
  rmSync(dbFile, { force: true });
  if (made.status !== 0) throw new Error(`the backup for dbstash copy failed: ${made.stderr || made.stdout}`);
  const out = JSON.parse(made.stdout) as { id: string; manifest: { series: { key: string }; artifacts: { file: string; size: number }[] } };
  const artifact = out.manifest.artifacts[0];
  return { id: out.id, folder: out.manifest.series.key, file: artifact.file, size: artifact.size };
}

export async function runStorageBench(
  ctx: { cliPath: string; rounds: number; ambientNodeEnv?: boolean; log(m: string): void },
  wanted: (id: string) => boolean = () => true,
): Promise<ExtensionResult> {
  const work = tempDir('dbstash-bench-storage');
  const nodeEnv = withoutStartupVars(process.env, ctx.ambientNodeEnv);
  let sshd: SshServer | undefined;
  let azurite: AzuriteServer | undefined;
  try {
    const file = path.join(work, 'random-1GiB.bin');
    ctx.log(`storage: writing ${FILE_BYTES / MB} MiB of AES-CTR keystream`);
    writeRandomFile(file, FILE_BYTES);
    ctx.log('storage: making a backup of a 1 GiB SQLite database for dbstash copy');
    const backup = makeBigBackup(ctx.cliPath, work, nodeEnv);
    const stash = path.join(work, 'stash');
    const artifactFile = path.join(stash, backup.folder, backup.file);
    // Untimed: every run then reads its source from the page cache.
    await readThrough(file);
    await readThrough(artifactFile);
    const rcloneConf = path.join(work, 'rclone.conf');
    const dbstashConf = path.join(work, 'dbstash.yaml');
    const confStorages: string[] = [];
    const rcloneRemotes: string[] = [];
    const destinations: Destination[] = [];
    const checked = async (obj: Stored, bytes: number) => {
      const size = await obj.size();
      await obj.remove();
      if (size !== bytes) throw new Error(`stored ${size ?? 'nothing'} instead of ${bytes} bytes`);
    };
    /** put-file.js; `readKiB` reads the file in other pieces than its 256 KiB. */
    const putRow = (driver: string, url: string, options: Record<string, unknown>, label: string, stored: (key: string) => Stored, readKiB?: number): Row => {
      const optionsFile = path.join(work, `${driver}.options.json`);
      writeFileSync(optionsFile, JSON.stringify(options), { mode: 0o600 });
      const key = 'bench/put.bin';
      return {
        id: readKiB ? `dbstash_put_read${readKiB}k` : 'dbstash_put',
        label,
        bytes: FILE_BYTES,
        spec: () => ({
          cmd: process.execPath,
          args: [PUT_FILE, '--url', url, '--options', optionsFile, '--file', file, '--key', key, ...(readKiB ? ['--read-kib', String(readKiB)] : [])],
          env: nodeEnv,
          captureStdout: true,
        }),
        checkAndRemove: () => checked(stored(key), FILE_BYTES),
      };
    };
    const copyRow = (storageName: string, label: string, stored: (key: string) => Stored): Row => ({
      id: 'dbstash_copy',
      label,
      bytes: backup.size,
      spec: () => ({ cmd: process.execPath, args: [ctx.cliPath, 'copy', backup.id, '--from', stash, '--to', storageName, '--config', dbstashConf, '--quiet'], env: nodeEnv }),
      checkAndRemove: () => checked(stored(`${backup.folder}/${backup.file}`), backup.size),
    });

    if (wanted('upload_sftp')) {
      ctx.log('storage: starting sshd');
      const s = (sshd = await startSshd());
      const onServer = (rel: string): Stored => {
        const p = path.join(s.dataDir, rel);
        return {
          size: async () => (existsSync(p) ? statSync(p).size : undefined),
          remove: async () => rmSync(path.join(s.dataDir, rel.split('/')[0]), { recursive: true, force: true }),
        };
      };
      const sftpOptions = { privateKey: s.userKey, knownHosts: s.knownHosts };
      const sshOpts = ['-P', String(s.port), '-i', s.userKey, '-o', `UserKnownHostsFile=${s.knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes'];
      const batch = (name: string, line: string) => {
        const f = path.join(work, name);
        writeFileSync(f, `${line}\n`);
        return f;
      };
      const sftpBatch = batch('sftp-put.batch', `put ${file} ${s.dataDir}/sftp-put.bin`);
      const sftpBatchFsync = batch('sftp-put-f.batch', `put -f ${file} ${s.dataDir}/sftp-put-f.bin`);
      // shell_type = none: rclone runs no commands over ssh, so no md5sum of the uploaded file on
      // the server after the copy (dbstash's put checks the stored size, not a hash): the transfer only.
      rcloneRemotes.push(`[ssh]\ntype = sftp\nhost = 127.0.0.1\nport = ${s.port}\nuser = root\nkey_file = ${s.userKey}\nknown_hosts_file = ${s.knownHosts}\nshell_type = none\n`);
      confStorages.push(`  bench_sftp: { url: "${s.url('copy')}", privateKey: "${s.userKey}", knownHosts: "${s.knownHosts}" }`);
      destinations.push({
        id: 'upload_sftp',
        name: `SFTP: OpenSSH sshd (internal-sftp) on 127.0.0.1:${s.port}`,
        serverPid: s.pid,
        rows: [
          putRow('sftp', s.url('put'), sftpOptions, 'dbstash put (sftp driver, node put-file.js)', (key) => onServer(`put/${key}`)),
          putRow('sftp', s.url('put'), sftpOptions, 'dbstash put, the file read 1 MiB at a time (--read-kib 1024)', (key) => onServer(`put/${key}`), 1024),
          {
            id: 'sftp_put',
            label: 'sftp put (OpenSSH)',
            bytes: FILE_BYTES,
            spec: () => ({ cmd: 'sftp', args: ['-q', '-b', sftpBatch, ...sshOpts, 'root@127.0.0.1'] }),
            checkAndRemove: () => checked(onServer('sftp-put.bin'), FILE_BYTES),
          },
          {
            id: 'sftp_put_fsync',
            label: 'sftp put -f (fsync on the server, as dbstash)',
            bytes: FILE_BYTES,
            spec: () => ({ cmd: 'sftp', args: ['-q', '-b', sftpBatchFsync, ...sshOpts, 'root@127.0.0.1'] }),
            checkAndRemove: () => checked(onServer('sftp-put-f.bin'), FILE_BYTES),
          },
          {
            id: 'rclone_sftp',
            label: 'rclone copyto (sftp remote)',
            bytes: FILE_BYTES,
            spec: () => ({ cmd: 'rclone', args: ['--config', rcloneConf, 'copyto', file, `ssh:${s.dataDir}/rclone/r.bin`, '-q'] }),
            checkAndRemove: () => checked(onServer('rclone/r.bin'), FILE_BYTES),
          },
          copyRow('bench_sftp', 'dbstash copy (a 1 GiB backup; CLI)', (key) => onServer(`copy/${key}`)),
        ],
        ratios: [
          { of: 'dbstash_copy', against: 'sftp_put', target: true },
          { of: 'dbstash_copy', against: 'rclone_sftp', target: true },
          { of: 'dbstash_copy', against: 'sftp_put_fsync', target: false },
          { of: 'dbstash_put', against: 'sftp_put', target: false },
          { of: 'dbstash_put', against: 'rclone_sftp', target: false },
          { of: 'dbstash_put_read1024k', against: 'sftp_put', target: false },
        ],
      });
    }

    if (wanted('upload_azure')) {
      ctx.log('storage: starting Azurite');
      const a = (azurite = await startAzurite({ containers: ['bench'] }));
      const container = a.container('bench');
      const inContainer = (name: string): Stored => ({
        size: async () => {
          const blob = container.getBlockBlobClient(name);
          return (await blob.exists()) ? (await blob.getProperties()).contentLength : undefined;
        },
        remove: async () => {
          for await (const b of container.listBlobsFlat({ prefix: `${name.split('/')[0]}/` })) await container.deleteBlob(b.name);
        },
      });
      // use_emulator: the emulator's documented account and key (devstoreaccount1), at the
      // harness's endpoint. disable_checksum: no MD5 of the whole file read before the upload
      // starts (rclone's default; the driver sends none): the transfer only.
      rcloneRemotes.push(`[az]\ntype = azureblob\nuse_emulator = true\nendpoint = ${a.endpoint}\ndisable_checksum = true\n`);
      confStorages.push(`  bench_azure: { url: "azure://bench/copy", endpoint: "${a.endpoint}", accountName: ${a.accountName}, accountKey: "${a.accountKey}" }`);
      destinations.push({
        id: 'upload_azure',
        name: `Azure Blob: Azurite ${packageVersion('azurite')} (one Node process) on ${a.endpoint}`,
        serverPid: a.pid,
        rows: [
          putRow('azure', 'azure://bench/put', { endpoint: a.endpoint, accountName: a.accountName, accountKey: a.accountKey }, 'dbstash put (azure driver, node put-file.js)', (key) => inContainer(`put/${key}`)),
          {
            id: 'rclone_azure',
            label: 'rclone copyto (azureblob remote)',
            bytes: FILE_BYTES,
            spec: () => ({ cmd: 'rclone', args: ['--config', rcloneConf, 'copyto', file, 'az:bench/rclone/r.bin', '-q'] }),
            checkAndRemove: () => checked(inContainer('rclone/r.bin'), FILE_BYTES),
          },
          copyRow('bench_azure', 'dbstash copy (a 1 GiB backup; CLI)', (key) => inContainer(`copy/${key}`)),
        ],
        ratios: [
          { of: 'dbstash_copy', against: 'rclone_azure', target: true },
          { of: 'dbstash_put', against: 'rclone_azure', target: false },
        ],
      });
    }
    writeFileSync(rcloneConf, rcloneRemotes.join('\n'), { mode: 0o600 });
    writeFileSync(dbstashConf, `storages:\n${confStorages.join('\n')}\n`, { mode: 0o600 });

    const tools = {
      openssh: versionOf('ssh', ['-V']),
      rclone: versionOf('rclone', ['version']),
      ssh2: packageVersion('ssh2'),
      azureStorageBlob: packageVersion('@azure/storage-blob'),
      azurite: packageVersion('azurite'),
    };
    const runs: Run[] = [];
    const failures: { destination: string; row: string; round: number; reason: string }[] = [];
    for (let round = 1; round <= ctx.rounds; round++) {
      for (const d of destinations) {
        const n = d.rows.length;
        for (let i = 0; i < n; i++) {
          const row = d.rows[(i + round - 1) % n];
          // Nothing dirty from the run before is written back during this one.
          execFileSync('sync', ['-f', work]);
          const loadAverage = os.loadavg()[0];
          const serverBefore = processCpuMs(d.serverPid);
          try {
            const m = await measure(row.spec());
            await new Promise((r) => setTimeout(r, REAP_MS));
            const serverCpuMs = processCpuMs(d.serverPid) - serverBefore;
            await row.checkAndRemove();
            const self = row.id.startsWith('dbstash_put') ? (JSON.parse(m.stdout) as Run['self']) : undefined;
            const run: Run = {
              destination: d.id,
              row: row.id,
              round,
              wallMs: m.wallMs,
              MBps: row.bytes / MB / (m.wallMs / 1000),
              cpuMs: m.cpuMs,
              userMs: m.userMs,
              sysMs: m.sysMs,
              serverCpuMs,
              rootPeakRss: m.rootPeakRss,
              treePeakRss: m.treePeakRss,
              loadAverage,
              self,
            };
            runs.push(run);
            ctx.log(
              `${d.id} round ${round}/${ctx.rounds} ${row.id}: ${run.MBps.toFixed(1)} MB/s (wall ${(m.wallMs / 1000).toFixed(2)} s), CPU ${(m.cpuMs / 1000).toFixed(2)} s, server CPU ${(serverCpuMs / 1000).toFixed(2)} s, RSS ${formatMB(m.rootPeakRss)} (load ${loadAverage.toFixed(1)})`,
            );
          } catch (err) {
            const reason = (err as Error).message.split('\n').filter(Boolean).slice(-1)[0] ?? 'failed';
            failures.push({ destination: d.id, row: row.id, round, reason });
            ctx.log(`${d.id} round ${round}/${ctx.rounds} ${row.id}: FAILED: ${reason}`);
            // What a failed run left must not be counted by the next one.
            await row.checkAndRemove().catch(() => {});
          }
        }
      }
    }

    const texts: string[] = [];
    const targets: Target[] = [];
    const data: Record<string, unknown> = { fileBytes: FILE_BYTES, copyArtifactBytes: backup.size, rounds: ctx.rounds, tools, runs, failures };
    const spread = (v: number[], digits = 1) => `${median(v).toFixed(digits)} (${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)})`;
    for (const d of destinations) {
      const of = (id: string) => runs.filter((r) => r.destination === d.id && r.row === id);
      texts.push(`${d.name}; ${ctx.rounds} rounds, rows alternated (MB = 2^20 bytes; the file ${FILE_BYTES / MB} MiB, the copied artifact ${(backup.size / MB).toFixed(1)} MiB)`);
      const table: string[][] = [['command', 'MB/s median (min–max)', 'wall median', 'CPU user+sys', 'server CPU', 'peak RSS of the command (largest process)']];
      for (const row of d.rows) {
        const rs = of(row.id);
        if (rs.length === 0) {
          table.push([row.label, 'no runs', '', '', '', '']);
          continue;
        }
        const peak = Math.max(...rs.map((r) => r.rootPeakRss));
        const tree = rs.map((r) => r.treePeakRss).reduce((x, y) => (y.bytes > x.bytes ? y : x));
        table.push([
          row.label,
          spread(rs.map((r) => r.MBps)),
          `${(median(rs.map((r) => r.wallMs)) / 1000).toFixed(2)} s`,
          `${(median(rs.map((r) => r.cpuMs)) / 1000).toFixed(2)} s`,
          `${(median(rs.map((r) => r.serverCpuMs)) / 1000).toFixed(2)} s`,
          `${formatMB(peak)} (${formatMB(tree.bytes)} ${tree.name})`,
        ]);
      }
      const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
      texts.push(...table.map((r) => '  ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')));
      const put = of('dbstash_put');
      if (put.some((r) => r.self)) {
        const selves = put.map((r) => r.self!).filter(Boolean);
        texts.push(`  dbstash put, inside the process: the put alone ${spread(selves.map((s) => s.putMs / 1000), 2)} s; RSS with the driver loaded, before the put ${spread(selves.map((s) => s.rssBeforePutMB))} MB; full GCs during the put ${spread(selves.map((s) => s.majorGcs), 0)} (${spread(selves.map((s) => s.majorGcMs), 0)} ms)`);
      }
      const summary: Record<string, unknown> = {};
      for (const c of d.ratios) {
        const a = of(c.of);
        const b = of(c.against);
        if (a.length === 0 || b.length === 0) continue;
        const ratio = median(a.map((r) => r.MBps)) / median(b.map((r) => r.MBps));
        const perRound = a.flatMap((r) => b.filter((x) => x.round === r.round).map((x) => r.MBps / x.MBps));
        const labelOf = (id: string) => d.rows.find((r) => r.id === id)!.label.replace(/ \(.*\)$/, '');
        const name = `${labelOf(c.of)} vs ${labelOf(c.against)}`;
        const pass = ratio >= THROUGHPUT_RATIO;
        texts.push(`  throughput ${name}: ${ratio.toFixed(2)}× (per round ${Math.min(...perRound).toFixed(2)}–${Math.max(...perRound).toFixed(2)})${c.target ? ` target ≥ ${THROUGHPUT_RATIO}×: ${pass ? 'PASS' : 'FAIL'}` : ''}`);
        summary[`${c.of}/${c.against}`] = { ratio, perRound };
        if (c.target) {
          targets.push({
            name: `${d.id}: ${name}, throughput (${median(a.map((r) => r.MBps)).toFixed(0)} vs ${median(b.map((r) => r.MBps)).toFixed(0)} MB/s)`,
            value: `${ratio.toFixed(2)}×`,
            limit: `≥ ${THROUGHPUT_RATIO.toFixed(2)}×`,
            pass,
          });
        }
      }
      for (const [id, what] of [['dbstash_copy', 'dbstash copy of a 1 GiB backup'], ['dbstash_put', 'dbstash put of 1 GiB']] as const) {
        const rs = of(id);
        if (rs.length === 0) continue;
        const peak = Math.max(...rs.map((r) => r.rootPeakRss));
        targets.push({ name: `${d.id}: ${what}, peak RSS of the node process`, value: formatMB(peak), limit: `≤ ${formatMB(RSS_LIMIT)}`, pass: peak <= RSS_LIMIT });
      }
      for (const f of failures.filter((x) => x.destination === d.id)) texts.push(`  FAILED run: ${f.row} in round ${f.round}: ${f.reason}`);
      data[d.id] = { name: d.name, ratios: summary };
      texts.push('');
    }
    texts.push(`tools: ${tools.openssh}; ${tools.rclone}; ssh2 ${tools.ssh2}; @azure/storage-blob ${tools.azureStorageBlob}; Azurite ${tools.azurite}`);
    return { id: 'storage', text: texts.join('\n'), data, targets };
  } finally {
    await sshd?.stop();
    await azurite?.stop();
    await removeTempDir(work);
  }
}
