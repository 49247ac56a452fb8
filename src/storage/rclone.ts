// rclone driver: rclone:<remote>:<path>, any remote of the user's rclone config (Google Drive,
// Backblaze B2, SFTP, OneDrive, Dropbox, GCS with a service account, …), through the `rclone`
// binary. Loaded lazily by storage/index.ts. See docs/storage.md, "rclone remotes".
//
// - Every operation is one rclone process: `rcat` streams a put into a hidden temporary
//   ("<dir>/.tmp-<name>.<random>") and a server-side `moveto` publishes it; `cat` streams a get;
//   `lsjson` lists and stats; `deletefile` deletes; `about` tells the free space.
// - Credentials stay in rclone's config file, or in its environment (the `settings` option
//   becomes RCLONE_CONFIG_<REMOTE>_<KEY>): never on a command line, which any user of the host
//   can read in the process list. Nothing here prints the config file.
// - rclone retries whole operations itself by default; here it makes one attempt (`--retries 1`)
//   with a few low-level retries of single requests, and the retry wrapper (retry.ts) decides about
//   the rest from our classification of its exit code and last error line.
// - Exclusive puts: rclone has no create-if-absent (moveto overwrites), so they follow the claim
//   protocol restic uses for its locks on such stores; see publishExclusive().

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { ConfigError, StorageError, type StorageErrorReason } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/format.js';
import { TEMP_PREFIX } from '../core/id.js';
import { maskSecrets, registerSecret } from '../core/secrets.js';
import { byKey, parseDriverOptions, type ObjectInfo, type PutOptions, type PutResult, type Storage } from './storage.js';

const duration = (example: string) => z.string().refine((v) => parseDuration(v) !== undefined, `a duration such as ${example}`);

export const rcloneOptionsSchema = z
  .object({
    /** Path of the rclone.conf that defines the remote; default: rclone's own ($RCLONE_CONFIG, ~/.config/rclone/rclone.conf). */
    config: z.string().min(1).optional(),
    /** The rclone executable; default "rclone" from PATH. */
    binary: z.string().min(1).optional(),
    /**
     * Settings of the remote as rclone.conf would hold them (type, account, key, …), passed to
     * rclone through its environment (RCLONE_CONFIG_<REMOTE>_<KEY>), normally "${VAR}" references.
     */
    settings: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]).transform(String)).optional(),
    /**
     * Hashes in list and stat (returned as metadata, and checked by get): "auto" asks only for a
     * SHA-256 or MD5 the remote keeps (S3, GCS, Drive); "sha256" or "md5" also where rclone must read
     * every file to compute it (local, SFTP); "none" never.
     */
    hash: z.enum(['auto', 'sha256', 'md5', 'none']).optional(),
    /** Longest wait for a connection to the remote's server (rclone --contimeout); default 10s. */
    connectTimeout: duration('10s').optional(),
    /** Longest silence of a connection in the middle of a transfer (rclone --timeout); default 60s. */
    idleTimeout: duration('60s').optional(),
    /** Belongs to retention, not to the driver. */
    retention: z.unknown().optional(),
  })
  .strict();

export type RcloneOptions = z.infer<typeof rcloneOptionsSchema>;

export interface RcloneLocation {
  remote: string;
  /** Path inside the remote, without trailing slashes; "" for the remote's root. */
  root: string;
}

/** rclone's own rule for remote names, minus a leading "-" or space (it would read as a flag). */
const REMOTE_RE = /^[\p{L}\p{N}_.+@][\p{L}\p{N}_.+@ -]*$/u;

export function parseRcloneUrl(url: string): RcloneLocation {
  const m = /^rclone:([^:/]*):(.*)$/is.exec(url);
  if (!m || !m[1]) {
    throw new ConfigError(`[rclone] "${url}" is not an rclone:<remote>:<path> URL`, { hint: 'e.g. --storage rclone:b2:my-bucket/dbstash (the remote as named in rclone.conf)' });
  }
  if (m[1].includes(',') || !REMOTE_RE.test(m[1])) {
    throw new ConfigError(`[rclone] "${m[1]}" is not the name of a remote`, {
      hint: 'name a remote defined in rclone.conf (rclone config), or give its settings under settings: in the storage entry; parameters and credentials do not belong in the URL',
    });
  }
  const root = m[2] === '/' ? '/' : m[2].replace(/\/+$/, '');
  return { remote: m[1], root };
}

export function parseRcloneOptions(options: Record<string, unknown>): RcloneOptions {
  const data = parseDriverOptions('rclone', rcloneOptionsSchema, options);
  return data;
}

/** The environment variable rclone reads a remote's setting from (its configmap rule: upper case, "-" as "_"). */
export function settingEnvName(remote: string, key: string): string {
  return `RCLONE_CONFIG_${remote}_${key}`.toUpperCase().replace(/-/g, '_');
}

/** Where a remote's claims live: one small folder per folder of keys, so claims are listed without listing the keys. */
const CLAIMS_DIR = `${TEMP_PREFIX}claims`;
/** A claim not refreshed for this long belongs to a process that died; it no longer blocks anyone. */
export const CLAIM_STALE_MS = 10 * 60_000;
const CLAIM_REFRESH_MS = CLAIM_STALE_MS / 4;
/** Rounds of the claim protocol an exclusive put tries before a tie is reported as "exists". */
const CLAIM_ROUNDS = 3;
/** stderr kept per rclone run: its last error lines are what we classify and report. */
const STDERR_KEEP = 16 * 1024;

/** The outcome of one rclone run. */
interface Ran {
  /** Exit code; null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Spawned {
  child: ChildProcess;
  /** Settles when the process has exited and its output is read; rejects only when it could not start. */
  done: Promise<Ran>;
  /** Ends the process (SIGTERM, SIGKILL if it lingers); true when it was still running. */
  kill(): boolean;
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  return reason instanceof Error ? reason : Object.assign(new Error('the operation was aborted'), { name: 'AbortError' });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The line of rclone's stderr that says what failed, without its timestamp and log level; URLs lose their query (signed URLs, tokens). */
export function rcloneErrorLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d(\.\d+)?\s+/, '').trim())
    .filter((l) => l && !/^NOTICE:/.test(l) && !/^(Usage:|Flags:|Use "rclone|\s*-)/.test(l));
  const line = [...lines].reverse().find((l) => /^(Failed to|Fatal error|CRITICAL|ERROR)/.test(l)) ?? lines.at(-1) ?? '';
  const text = line
    .replace(/^(ERROR|CRITICAL)\s*:\s*/, '')
    .replace(/^Failed to [a-z]+( with \d+ errors: last error was)?:\s*/, '')
    .replace(/^Fatal error:\s*/, '')
    .replace(/(https?:\/\/[^\s"'?]*)\?[^\s"']*/g, '$1?…');
  return maskSecrets(text.length > 300 ? `${text.slice(0, 300)}…` : text);
}

const NOT_FOUND_RE = /doesn't exist|does not exist|object not found|file not found|directory not found|not found in|no such file/i;
const AUTH_RE =
  /\b(401|403)\b|unauthori[sz]ed|forbidden|access ?denied|permission denied|invalid_grant|token (has )?expired|invalid[_ ]?(credentials|client|token)|SignatureDoesNotMatch|InvalidAccessKeyId|bad_auth_token|unauthenticated|authenticat/i;
const SPACE_RE = /no space left|quota|insufficient storage|storage (limit|full)|storageQuotaExceeded|cap_exceeded/i;
const NETWORK_RE =
  /connection (refused|reset|timed out)|i\/o timeout|timeout|timed out|no such host|network is unreachable|host is unreachable|broken pipe|TLS handshake|unexpected EOF|\b(429|500|502|503|504)\b|too many requests|rate ?limit|service unavailable|temporar|try again|server misbehaving/i;

export function createRcloneStorage(url: string, rawOptions: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): Storage {
  const loc = parseRcloneUrl(url);
  const o = parseRcloneOptions(rawOptions);
  const binary = o.binary ?? 'rclone';
  const timeouts = { connectMs: parseDuration(o.connectTimeout ?? '10s')!, idleMs: parseDuration(o.idleTimeout ?? '60s')! };
  const childEnv: NodeJS.ProcessEnv = { ...env };
  if (o.settings) {
    if (!/^[A-Za-z0-9_-]+$/.test(loc.remote)) {
      throw new ConfigError(`[rclone] option "settings": the remote's name "${loc.remote}" cannot be carried in an environment variable`, {
        hint: 'use a name of letters, digits, "_" and "-" for a remote given by settings:',
      });
    }
    for (const [key, value] of Object.entries(o.settings)) {
      if (!/^[A-Za-z0-9_-]+$/.test(key)) throw new ConfigError(`[rclone] option "settings.${key}" is not an rclone setting name`, { hint: 'use the names rclone.conf uses: type, account, key, …' });
      childEnv[settingEnvName(loc.remote, key)] = value;
      if (/key|secret|pass|token|credential|account_file|sas|auth/i.test(key)) registerSecret(value);
    }
  }
  const common = [
    ...(o.config ? ['--config', o.config] : []),
    // An encrypted config without RCLONE_CONFIG_PASS must fail, not wait for a password on a terminal.
    '--ask-password=false',
    '--retries',
    '1',
    '--low-level-retries',
    '3',
    '--contimeout',
    `${timeouts.connectMs}ms`,
    '--timeout',
    `${timeouts.idleMs}ms`,
  ];
  const label = `rclone:${loc.remote}:${loc.root}`;
  const pathOf = (rel: string) => (!rel ? loc.root : !loc.root ? rel : loc.root.endsWith('/') ? `${loc.root}${rel}` : `${loc.root}/${rel}`);
  const spec = (rel: string) => `${loc.remote}:${pathOf(rel)}`;

  const checkKey = (key: string): string => {
    if (!key || key.startsWith('/') || key.split('/').some((s) => s === '' || s === '.' || s === '..')) {
      throw new StorageError('permanent', `[rclone] "${key}" is not a valid key`);
    }
    return key;
  };

  /** Starts `rclone <command> <flags> -- <paths>`; an abort of `signal` ends the process. */
  function start(command: string, flags: string[], paths: string[], opts: { stdin?: boolean; signal?: AbortSignal; stdout?: 'collect' | 'stream' } = {}): Spawned {
    // In a process group of its own: a Ctrl-C at the terminal reaches dbstash, which ends what it
    // must through `signal` (and lets a lock's removal finish), not every rclone at once.
    const child = spawn(binary, [command, ...common, ...flags, '--', ...paths], { env: childEnv, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    // Decoded as streams: a file name's character split between two chunks stays whole.
    if (opts.stdout !== 'stream') child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      if (stderr.length > 2 * STDERR_KEEP) stderr = stderr.slice(-STDERR_KEEP);
    });
    let killTimer: NodeJS.Timeout | undefined;
    const running = () => child.exitCode === null && child.signalCode === null;
    const kill = () => {
      if (!running()) return false;
      child.kill('SIGTERM');
      killTimer ??= setTimeout(() => running() && child.kill('SIGKILL'), 3000).unref();
      return true;
    };
    const onAbort = () => kill();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const done = new Promise<Ran>((resolve, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) => {
        opts.signal?.removeEventListener('abort', onAbort);
        if (err.code === 'ENOENT') {
          reject(
            new StorageError('permanent', `[rclone] cannot run "${binary}": ${binary.includes('/') ? 'no such file' : 'not found on PATH'}`, {
              cause: err,
              hint: 'install rclone (apt install rclone, or https://rclone.org/install/), or set binary: to its full path in the storage\'s config entry',
            }),
          );
        } else {
          reject(new StorageError('permanent', `[rclone] cannot run "${binary}": ${err.message}`, { cause: err, hint: 'check that binary: names an executable rclone' }));
        }
      });
      child.once('close', (code, signal) => {
        opts.signal?.removeEventListener('abort', onAbort);
        clearTimeout(killTimer);
        resolve({ code, signal, stdout, stderr });
      });
    });
    if (opts.signal?.aborted) kill();
    return { child, done, kill };
  }

  /** Runs a command to its end; rejects with the abort's reason when `signal` ended it. */
  async function run(command: string, flags: string[], paths: string[], signal?: AbortSignal): Promise<Ran> {
    if (signal?.aborted) throw abortError(signal);
    const ran = await start(command, flags, paths, { signal }).done;
    if (signal?.aborted) throw abortError(signal);
    return ran;
  }

  let configPath: Promise<string> | undefined;
  /** The config file rclone reads (for messages: the path, never the contents). */
  const usedConfig = () =>
    (configPath ??= o.config
      ? Promise.resolve(o.config)
      : env.RCLONE_CONFIG
        ? Promise.resolve(env.RCLONE_CONFIG)
        : start('config', [], ['file'])
            .done.then((r) => r.stdout.trim().split('\n').at(-1)?.trim() || 'rclone\'s default config file')
            .catch(() => 'rclone\'s default config file'));

  /** A StorageError for a failed run: the component, what failed, rclone's own words, what to do. */
  async function failure(ran: Ran, what: string): Promise<StorageError> {
    const line = rcloneErrorLine(ran.stderr);
    const code = ran.code;
    let reason: StorageErrorReason = 'permanent';
    let detail = line || (code === null ? `rclone was ended by ${ran.signal}` : `rclone exited with code ${code}`);
    let hint: string | undefined;
    if (/didn't find section in config file/i.test(ran.stderr)) {
      const config = await usedConfig();
      const missing = config.startsWith('/') && !existsSync(config) ? ' (the file does not exist)' : '';
      detail = `remote "${loc.remote}" is not defined in ${config}${missing}`;
      hint = `create it with: rclone config${o.config ? ` --config ${o.config}` : ''} (or give its settings under settings: in the storage entry), or fix the remote's name in ${label}`;
    } else if (/unable to decrypt configuration|not allowed to ask for password/i.test(ran.stderr)) {
      detail = `the rclone config ${await usedConfig()} is encrypted`;
      hint = 'set RCLONE_CONFIG_PASS (or RCLONE_PASSWORD_COMMAND) in dbstash\'s environment';
    } else if (code === 3 || code === 4) {
      reason = 'not-found';
    } else if (code === 8) {
      hint = 'a transfer limit (--max-transfer, e.g. from RCLONE_MAX_TRANSFER) stopped rclone; remove it from the environment';
    } else if (code === null) {
      reason = 'transient';
    } else if (SPACE_RE.test(line)) {
      hint = `free space (or raise the quota) on ${label}`;
    } else if (AUTH_RE.test(line)) {
      hint = `check the credentials of remote "${loc.remote}" in ${await usedConfig()} (for OAuth remotes: rclone config reconnect ${loc.remote}:); dbstash needs to read, write and delete under ${label}`;
    } else if (code === 5 || NETWORK_RE.test(line)) {
      reason = 'transient';
      hint = 'the remote is unreachable or overloaded; retry later';
    } else if (code === 1 && NOT_FOUND_RE.test(line)) {
      reason = 'not-found';
    }
    return new StorageError(reason, `[rclone] ${what}: ${detail}`, { hint });
  }

  /** Streams `data` into `rel` with rcat; a failed source or an abort ends rclone before it can finish the file. */
  async function upload(rel: string, data: Readable | Uint8Array, what: string, signal?: AbortSignal): Promise<number> {
    if (signal?.aborted) throw abortError(signal);
    let size = 0;
    const proc = start('rcat', [], [spec(rel)], { stdin: true, signal });
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        done(null, chunk);
      },
    });
    const source = data instanceof Uint8Array ? Readable.from([Buffer.from(data)]) : data;
    let feedError: Error | undefined;
    const fed = pipeline(source, counter, proc.child.stdin!, signal ? { signal } : {}).catch((err: Error) => {
      feedError = err;
      // rclone reads the closed pipe as the end of the data: it must die before it stores a cut file.
      proc.kill();
    });
    let ran: Ran;
    try {
      ran = await proc.done;
    } finally {
      await fed;
    }
    if (signal?.aborted) throw abortError(signal);
    const pipeBroke = feedError && ['EPIPE', 'ERR_STREAM_DESTROYED', 'ECONNRESET'].includes((feedError as NodeJS.ErrnoException).code ?? '');
    if (ran.code !== 0 && (!feedError || pipeBroke)) throw await failure(ran, what);
    if (feedError) {
      if (feedError instanceof StorageError) throw feedError;
      throw new StorageError('permanent', `[rclone] ${what}: the data to store failed: ${feedError.message}`, { cause: feedError });
    }
    return size;
  }

  async function remove(rel: string, what: string): Promise<void> {
    const ran = await run('deletefile', [], [spec(rel)]);
    if (ran.code === 0) return;
    const e = await failure(ran, what);
    if (e.reason !== 'not-found') throw e;
  }

  async function moveTo(from: string, to: string, what: string, signal?: AbortSignal): Promise<void> {
    const ran = await run('moveto', [], [spec(from), spec(to)], signal);
    if (ran.code === 0) return;
    const e = await failure(ran, what);
    // The temporary was uploaded a moment ago: not finding it is the remote's hiccup, not a missing key.
    throw e.reason === 'not-found' ? new StorageError('transient', e.message, { hint: e.hint }) : e;
  }

  interface Features {
    hashes: string[];
    slowHash: boolean;
  }
  let features: Promise<Features> | undefined;
  /** The hash to ask lsjson for, if any: by default only one the remote stores (computing one reads every file). */
  async function hashType(): Promise<string | undefined> {
    if (o.hash === 'none') return undefined;
    if (o.hash === 'sha256' || o.hash === 'md5') return o.hash;
    features ??= (async () => {
      // Without the caller's signal: other callers may be waiting for the same answer.
      const ran = await run('backend', [], ['features', spec('')]);
      if (ran.code !== 0) throw await failure(ran, `cannot read the features of ${label}`);
      const f = JSON.parse(ran.stdout) as { Hashes?: string[]; Features?: { SlowHash?: boolean } };
      return { hashes: f.Hashes ?? [], slowHash: !!f.Features?.SlowHash };
    })();
    let f: Features;
    try {
      f = await features;
    } catch (err) {
      features = undefined;
      throw err;
    }
    if (f.slowHash) return undefined;
    return ['sha256', 'md5'].find((h) => f.hashes.includes(h));
  }

  interface Entry {
    Path: string;
    Name: string;
    Size: number;
    ModTime: string;
    IsDir: boolean;
    Hashes?: Record<string, string>;
  }
  const infoOf = (key: string, e: Entry): ObjectInfo => {
    const metadata: Record<string, string> = {};
    for (const [type, value] of Object.entries(e.Hashes ?? {})) if (value) metadata[type] = value;
    return { key, size: e.Size, modifiedAt: new Date(e.ModTime), metadata };
  };

  /** lsjson of a folder; a folder that does not exist lists as empty. */
  async function lsjson(rel: string, flags: string[], what: string, signal?: AbortSignal): Promise<Entry[]> {
    const ran = await run('lsjson', ['--files-only', '--no-mimetype', ...flags], [spec(rel)], signal);
    if (ran.code === 0) return JSON.parse(ran.stdout) as Entry[];
    const e = await failure(ran, what);
    if (e.reason !== 'not-found') throw e;
    // Missing from the start, rclone prints only "[": a folder that vanished in the middle of a
    // recursive listing leaves entries behind, and that listing is not the whole truth.
    if (/^\s*\[?\s*\]?\s*$/.test(ran.stdout)) return [];
    throw new StorageError('transient', `[rclone] ${what}: a folder vanished while it was listed`, { hint: 'retry' });
  }

  const hidden = (key: string) => key.split('/').some((s) => s.startsWith(TEMP_PREFIX));

  async function list(prefix: string, temporaries: boolean, signal?: AbortSignal): Promise<ObjectInfo[]> {
    const slash = prefix.lastIndexOf('/');
    const dir = slash >= 0 ? prefix.slice(0, slash) : '';
    if (dir) checkKey(dir);
    const hash = temporaries ? undefined : await hashType();
    const entries = await lsjson(dir, ['--recursive', '--fast-list', ...(hash ? ['--hash', '--hash-type', hash] : [])], `cannot list ${prefix || 'the stash'} in ${label}`, signal);
    const out: ObjectInfo[] = [];
    for (const e of entries) {
      const key = dir ? `${dir}/${e.Path}` : e.Path;
      if (key.startsWith(prefix) && hidden(key) === temporaries) out.push(infoOf(key, e));
    }
    return out.sort(byKey);
  }

  async function stat(key: string, opts: { signal?: AbortSignal; hash?: boolean } = {}): Promise<ObjectInfo | undefined> {
    checkKey(key);
    const hash = opts.hash === false ? undefined : await hashType();
    const ran = await run('lsjson', ['--stat', '--no-mimetype', ...(hash ? ['--hash', '--hash-type', hash] : [])], [spec(key)], opts.signal);
    if (ran.code === 0) {
      const e = JSON.parse(ran.stdout) as Entry;
      return e.IsDir ? undefined : infoOf(key, e);
    }
    const e = await failure(ran, `cannot stat ${key} in ${label}`);
    if (e.reason === 'not-found') return undefined;
    throw e;
  }

  const splitKey = (key: string) => {
    const slash = key.lastIndexOf('/');
    return { dir: slash >= 0 ? key.slice(0, slash) : '', base: key.slice(slash + 1) };
  };
  const join = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);
  const exists = (key: string, why: string) => new StorageError('exists', `[rclone] ${key} ${why}`);

  /**
   * Publishes an uploaded temporary under `key` unless the key exists, with claims (restic's lock
   * protocol for stores without a conditional write). Each writer, its bytes already uploaded:
   *   1. writes a claim "<dir>/.tmp-claims/<name>.claim-<random>";
   *   2. lists the claims of the key: any other live claim → it withdraws (removes its claim) and
   *      tries again after a random pause, or reports "exists" after CLAIM_ROUNDS;
   *   3. alone: stats the key, "exists" if it is there, else moves the temporary onto it;
   *   4. removes its claim.
   * At most one succeeds: take two writers A and B that both publish, each having written its claim
   * before listing. Say A's listing began first. B's claim was complete before B's listing, and
   * A's claim before A's listing. If B's claim was complete when A's listing began, A saw it and
   * withdrew. If not, B's claim was written after A's listing began, hence after A's claim was
   * written, and B's listing came after that: B saw A's claim, unless A had removed it, which A
   * does only after its move completed; then B's stat (after its listing) saw the key. Either way
   * one of them did not publish. A tie can make both withdraw: "at most one", never "exactly one".
   * What it assumes of the remote: a listing (and a stat) started after a write has completed
   * shows that write (read-after-write consistent listings: local disks, SFTP, S3, GCS, Azure, B2,
   * Drive); claims older than CLAIM_STALE_MS, by the writers' clocks, count as left by a dead
   * process, so the hosts' clocks must agree within minutes. A claim is rewritten every
   * CLAIM_REFRESH_MS while its writer lives (a server-side move of a large file can take long).
   */
  async function publishExclusive(key: string, temp: string, signal?: AbortSignal): Promise<void> {
    const { dir, base } = splitKey(key);
    const claimsDir = join(dir, CLAIMS_DIR);
    const claimRe = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.claim-[0-9a-f]{16}$`);
    const what = `cannot write ${key} to ${label}`;
    for (let round = 1; ; round++) {
      const began = Date.now();
      const name = `${base}.claim-${randomBytes(8).toString('hex')}`;
      const claim = join(claimsDir, name);
      const body = Buffer.from(`${JSON.stringify({ key, host: os.hostname(), pid: process.pid, at: new Date().toISOString() })}\n`);
      let alone = false;
      let refreshing: Promise<unknown> = Promise.resolve();
      let timer: NodeJS.Timeout | undefined;
      try {
        await upload(claim, body, `${what} (its claim)`, signal);
        timer = setInterval(() => {
          refreshing = refreshing.then(() => upload(claim, body, `${what} (renewing its claim)`).catch(() => {}));
        }, CLAIM_REFRESH_MS);
        timer.unref();
        const claims = (await lsjson(claimsDir, [], `${what} (listing its claims)`, signal)).filter((e) => claimRe.test(e.Name));
        const mine = claims.find((c) => c.Name === name);
        if (!mine) {
          throw new StorageError('permanent', `[rclone] ${what}: the remote did not list a claim just written, so it cannot refuse a second writer`, {
            hint: 'exclusive writes (locks, backups) need a remote whose listings show what was just written; see "rclone remotes" in docs/storage.md',
          });
        }
        const since = new Date(mine.ModTime).getTime() - CLAIM_STALE_MS;
        alone = !claims.some((c) => c !== mine && new Date(c.ModTime).getTime() > since);
        if (alone) {
          if (await stat(key, { signal, hash: false })) throw exists(key, 'already exists');
          await moveTo(temp, key, what, signal);
          return;
        }
      } finally {
        clearInterval(timer);
        await refreshing;
        await remove(claim, `cannot remove the claim ${claim}`).catch(() => {});
      }
      if (round >= CLAIM_ROUNDS) throw exists(key, 'is being written by another process at the same time');
      // Writers that tied pause for random spans of a few rounds' length (rounds are slow where
      // rclone starts slowly or the remote is far): the next round is then seldom a tie.
      await sleep(Math.random() * 2 * round * (Date.now() - began), signal);
      if (await stat(key, { signal, hash: false })) throw exists(key, 'already exists');
    }
  }

  async function put(key: string, data: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const { dir, base } = splitKey(key);
    const temp = join(dir, `${TEMP_PREFIX}${base}.${randomBytes(6).toString('hex')}`);
    const what = `cannot write ${key} to ${label}`;
    // A stream is checked first so that an existing key costs no upload (publishExclusive() decides).
    if (opts.exclusive && !(data instanceof Uint8Array) && (await stat(key, { signal: opts.signal, hash: false }))) throw exists(key, 'already exists');
    if (opts.signal?.aborted) throw abortError(opts.signal);
    try {
      const size = await upload(temp, data, what, opts.signal);
      if (opts.exclusive) await publishExclusive(key, temp, opts.signal);
      else await moveTo(temp, key, what, opts.signal);
      return { size };
    } catch (err) {
      // Nothing is removed while rclone still writes the temporary: upload() returns only once it has exited.
      await remove(temp, `cannot remove ${temp}`).catch(() => {});
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw err;
    }
  }

  /** cat of a file whose size (and maybe hash) is known: the stream errors unless rclone exits 0 after exactly that many bytes. */
  function catStream(key: string, info: ObjectInfo, signal?: AbortSignal): Readable {
    const proc = start('cat', [], [spec(key)], { signal, stdout: 'stream' });
    const expected = info.metadata?.sha256 ? { type: 'sha256', value: info.metadata.sha256 } : info.metadata?.md5 ? { type: 'md5', value: info.metadata.md5 } : undefined;
    const hash: Hash | undefined = expected ? createHash(expected.type) : undefined;
    const stdout = proc.child.stdout!;
    let bytes = 0;
    const out = new Readable({
      highWaterMark: 1 << 20,
      read() {
        stdout.resume();
      },
      destroy(err, callback) {
        proc.kill();
        callback(err);
      },
    });
    stdout.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash?.update(chunk);
      if (!out.push(chunk)) stdout.pause();
    });
    const what = `reading ${key} from ${label}`;
    proc.done.then(
      async (ran) => {
        if (out.destroyed) return;
        if (signal?.aborted) return out.destroy(abortError(signal));
        if (ran.code !== 0) return out.destroy(await failure(ran, what));
        if (bytes !== info.size) return out.destroy(new StorageError('transient', `[rclone] ${what}: the data ended after ${bytes} of ${info.size} bytes`));
        if (hash && expected && hash.digest('hex') !== expected.value) {
          return out.destroy(new StorageError('permanent', `[rclone] ${what}: the ${expected.type} of the data differs from the one the remote holds`));
        }
        out.push(null);
      },
      (err: Error) => out.destroy(err),
    );
    return out;
  }

  return {
    url: label,
    properties: { kind: 'rclone', local: false, maxParallelism: 4 },
    put,
    async get(key, opts = {}) {
      const info = await stat(key, { signal: opts.signal });
      if (!info) throw new StorageError('not-found', `[rclone] cannot read ${key}: no such file in ${label}`);
      return catStream(key, info, opts.signal);
    },
    stat: (key, opts) => stat(key, { signal: opts?.signal }),
    list: (prefix, opts) => list(prefix, false, opts?.signal),
    listTemporaries: (prefix) => list(prefix, true),
    delete: (key) => remove(checkKey(key), `cannot delete ${key} from ${label}`),
    /** What `rclone about` says is free, at the stash or the nearest folder above it that exists; undefined where the remote cannot tell. */
    async freeSpace() {
      const parent = (p: string) => {
        const slash = p.lastIndexOf('/');
        return slash > 0 ? p.slice(0, slash) : slash === 0 ? '/' : '';
      };
      for (let path = loc.root; ; path = parent(path)) {
        const ran = await run('about', ['--json'], [`${loc.remote}:${path}`]);
        if (ran.code === 0) {
          const free = (JSON.parse(ran.stdout) as { free?: number }).free;
          return typeof free === 'number' ? free : undefined;
        }
        // Anything but a missing folder: the remote has no free space to tell (S3, B2), or cannot now.
        if ((ran.code !== 3 && ran.code !== 4) || path === '' || path === '/') return undefined;
      }
    },
    async check(signal?: AbortSignal) {
      const limitMs = 2 * (timeouts.connectMs + timeouts.idleMs);
      const deadline = AbortSignal.timeout(limitMs);
      const both = signal ? AbortSignal.any([signal, deadline]) : deadline;
      const probe = `${TEMP_PREFIX}check.${randomBytes(6).toString('hex')}`;
      try {
        // A small file written and removed proves remote, credentials, path and rights at once.
        await upload(probe, Buffer.from('dbstash check\n'), `cannot write to ${label}`, both);
        await remove(probe, `cannot delete from ${label}`);
      } catch (err) {
        await remove(probe, `cannot remove ${probe}`).catch(() => {});
        if (signal?.aborted) throw abortError(signal);
        if (deadline.aborted) {
          throw new StorageError('permanent', `[rclone] no answer from ${label} within ${formatDuration(limitMs)}`, {
            cause: err,
            hint: 'the remote is unreachable or hung; if it is only slow, raise connectTimeout/idleTimeout in the storage\'s config entry',
          });
        }
        throw err;
      }
    },
  };
}
