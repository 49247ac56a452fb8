// SFTP storage driver: sftp://user@host[:port]/path, over one SSH connection per storage (ssh2).
// Loaded lazily by storage/index.ts. See docs/storage.md ("SFTP") for the options and a minimal
// server account.
//
// - The path is absolute on the server (inside the chroot of a chrooted account); "/~/dir" is
//   relative to the login directory, as curl reads sftp URLs.
// - The host key is checked against known_hosts (known-hosts.ts). An unknown host is refused
//   with its fingerprint and the way to accept it; a changed key is refused loudly. Nothing is
//   ever accepted silently: both are permanent errors.
// - Log in with the configured privateKey (+ passphrase); without one, with the agent at
//   SSH_AUTH_SOCK, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa, the order ssh tries them in.
// - put() writes ".tmp-<name>.<random>" beside the target (list() never shows it;
//   listTemporaries() does, so prune sweeps what a dropped connection left behind), fsyncs it
//   (fsync@openssh.com, where offered), checks its size, and publishes it by rename: the plain
//   SFTP rename for an exclusive put (OpenSSH's server links the new name, so it refuses an
//   existing target, atomically: of concurrent exclusive puts one wins), posix-rename@openssh.com
//   for a plain put (replaces atomically).
// - Writes and reads keep up to 1 MiB of requests in flight: with one request at a time, a
//   192 MiB object took 4 s each way on loopback instead of 0.5 s. Memory per stream stays at
//   about that window.
// - One connection per storage, opened on first use and again after it drops; the operation under
//   way then fails as transient (the retry wrapper tries it again). At most `concurrency` SFTP
//   operations at once. The socket holds the process open only while an operation or a read
//   stream is under way, so a command that never closes its storage still exits, and the
//   keepalive (an SFTP request when the server has been silent) runs on an unref'd timer.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ssh2 from 'ssh2';
import type { AnyAuthMethod, Client as SshClient, FileEntryWithStats, ParsedKey, SFTPWrapper, Stats } from 'ssh2';
import { z } from 'zod';
import { ConfigError, StorageError, type StorageErrorReason } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/format.js';
import { TEMP_PREFIX } from '../core/id.js';
import { eachLimited } from '../core/limit.js';
import { checkHostKey, fingerprint, hostKeyAlgorithms, knownHostName, keyTypeLabel, keyTypeOf, parseKnownHosts, type HostKeyVerdict, type KnownHostEntry } from './known-hosts.js';
import { byKey, parseDriverOptions, type ObjectInfo, type PutOptions, type PutResult, type Storage } from './storage.js';

const { Client, utils } = ssh2;
const posix = path.posix;

/** SFTP status codes (draft-ietf-secsh-filexfer-02), as ssh2 puts them in err.code. */
const FX = { EOF: 1, NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4, BAD_MESSAGE: 5, NO_CONNECTION: 6, CONNECTION_LOST: 7, OP_UNSUPPORTED: 8 } as const;

const MiB = 1024 * 1024;
/** Bytes of write or read requests in flight per stream. */
const WINDOW = MiB;
/** Directories read at once by one list(). */
const LIST_AHEAD = 8;
/** Rounds of silence (keepaliveInterval each) after which the connection is given up. */
const KEEPALIVE_COUNT = 3;
/** An unused connection is closed after this long, and opened again when needed. */
const IDLE_CLOSE_MS = 5 * 60_000;
const DEFAULT_FILE_MODE = 0o600;
const DEFAULT_DIR_MODE = 0o700;
const DEFAULT_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa'];
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'ECONNLOST']);

const duration = (example: string) => z.string().refine((v) => parseDuration(v) !== undefined, `a duration such as ${example}`);

export const sftpOptionsSchema = z
  .object({
    /** Path of the private key to log in with (OpenSSH or PEM format); default: the agent, then ~/.ssh/id_*. */
    privateKey: z.string().min(1).optional(),
    /** Passphrase of an encrypted key, normally a "${VAR}" reference. */
    passphrase: z.string().min(1).optional(),
    /** known_hosts file to check the host key against; default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts. */
    knownHosts: z.string().min(1).optional(),
    /** Longest wait for the connection, host key check and login together; default 10s. */
    connectTimeout: duration('10s').optional(),
    /** After this long without a word from the server it is asked for one; after 3 such rounds the connection is dropped. Default 15s. */
    keepaliveInterval: duration('15s').optional(),
    /** Mode of every file written, octal ("0640" for a group of operators); default "0600". At most 0640. */
    fileMode: z.union([z.string(), z.number()]).optional(),
    /** Mode of every directory made; default "0700". At most 0750. */
    dirMode: z.union([z.string(), z.number()]).optional(),
    /** SFTP operations at once on the connection; default 8. */
    concurrency: z.number().int().min(1).max(64).optional(),
    /** Belongs to retention, not to the driver. */
    retention: z.unknown().optional(),
  })
  .strict();

export type SftpOptions = z.infer<typeof sftpOptionsSchema>;

/** An octal mode from the config ("0640", or 640 as YAML reads an unquoted one), within `max`. */
function parseMode(value: string | number | undefined, what: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const text = typeof value === 'number' ? String(value) : value;
  const mode = /^0?[0-7]{3}$/.test(text) ? parseInt(text, 8) : NaN;
  if (Number.isNaN(mode) || (mode & ~max) !== 0) {
    throw new ConfigError(`[sftp] option "${what}": "${value}" is not an octal mode within ${max.toString(8).padStart(4, '0')}`, {
      hint: `a backup holds a whole database: e.g. ${what}: "${max.toString(8).padStart(4, '0')}" for a group of operators, no wider`,
    });
  }
  return mode;
}

export interface SftpLocation {
  user: string;
  host: string;
  port: number;
  /** Absolute path, or "~" / "~/dir" for one relative to the login directory. Never ends in "/" (but "/"). */
  path: string;
}

/** The URL with any password masked, for messages about a URL that cannot be used. */
function masked(url: string): string {
  return url.replace(/^(sftp:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
}

export function parseSftpUrl(url: string, env: NodeJS.ProcessEnv = process.env): SftpLocation {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {
    // reported below
  }
  if (!u || u.protocol !== 'sftp:' || !u.hostname || u.search || u.hash) {
    throw new ConfigError(`[sftp] "${masked(url)}" is not an sftp://user@host[:port]/path URL`, { hint: 'e.g. --storage sftp://backup@files.example.com/srv/dbstash' });
  }
  if (u.password) {
    throw new ConfigError('[sftp] a password does not belong in the storage URL', {
      hint: 'dbstash logs in with a key: set privateKey (and passphrase: ${VAR} for an encrypted key) in the storage\'s config entry, or load the key into ssh-agent',
    });
  }
  let p = decodeURIComponent(u.pathname || '/');
  if (p === '/~' || p.startsWith('/~/')) p = p.slice(1);
  p = posix.normalize(p);
  if (p.length > 1) p = p.replace(/\/+$/, '');
  const user = decodeURIComponent(u.username) || env.USER || os.userInfo().username;
  return { user, host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port ? Number(u.port) : 22, path: p };
}

export function parseSftpOptions(options: Record<string, unknown>): SftpOptions {
  const o = parseDriverOptions('sftp', sftpOptionsSchema, options);
  if (o.passphrase && !o.privateKey) {
    throw new ConfigError('[sftp] option "passphrase" needs "privateKey"', { hint: 'set privateKey: the path of the encrypted key the passphrase opens' });
  }
  return o;
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  return reason instanceof Error ? reason : Object.assign(new Error('the operation was aborted'), { name: 'AbortError' });
}

/** Settles with `promise`, or rejects at once when `signal` aborts; a result that comes later goes to `late`. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, late?: (value: T) => void): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      reject(abortError(signal));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        if (aborted) late?.(value);
        else resolve(value);
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        if (!aborted) reject(err);
      },
    );
  });
}

/** A counting semaphore whose waiters can be aborted; a released slot passes straight to the next waiter. */
class Limiter {
  private running = 0;
  private waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) throw abortError(signal);
    if (this.running < this.max) this.running++;
    else {
      await new Promise<void>((resolve, reject) => {
        const go = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          this.waiting = this.waiting.filter((w) => w !== go);
          reject(abortError(signal!));
        };
        this.waiting.push(go);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    };
  }
}

interface Session {
  client: SshClient;
  sftp: SFTPWrapper;
  socket: net.Socket;
  /** The storage's directory on the server, absolute. */
  root: string;
  closed: boolean;
  /** Why the connection ended, when it was not closed on purpose. */
  lostBecause?: string;
  ext: { posixRename: boolean; fsync: boolean; statvfs: boolean };
  maxWrite: number;
  maxRead: number;
  /** Rejecters of the requests under way, called when the connection ends. */
  pending: Set<(err: Error) => void>;
  lastReceived: number;
  lastUsed: number;
}

type Callback<T> = (err: Error | undefined | null, value?: T) => void;

/** Why a request could not be answered: the connection is gone (transient). */
function connectionLost(s: Session, where: string): Error {
  return Object.assign(new Error(`the connection to ${where} was lost${s.lostBecause ? ` (${s.lostBecause})` : ''}`), { code: 'ECONNLOST' });
}

/** Sends one SFTP request; rejects at once when the connection is gone or goes while it waits. */
function call<T>(s: Session, where: string, send: (cb: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (s.closed) return reject(connectionLost(s, where));
    s.lastUsed = Date.now();
    let done = false;
    const lost = (err: Error) => {
      if (done) return;
      done = true;
      reject(err);
    };
    s.pending.add(lost);
    try {
      send((err, value) => {
        s.pending.delete(lost);
        if (done) return;
        done = true;
        if (err) reject(err);
        else resolve(value as T);
      });
    } catch (err) {
      // ssh2 throws synchronously for a request the server does not support.
      s.pending.delete(lost);
      done = true;
      reject(err);
    }
  });
}

const isDirMode = (mode: number) => (mode & 0o170000) === 0o040000;
const isFileMode = (mode: number) => (mode & 0o170000) === 0o100000;

/**
 * A Writable into an open remote file: each chunk is cut into requests of the server's largest
 * write, and up to WINDOW bytes of them are in flight at once. A failed write fails the stream.
 */
class RemoteFileWriter extends Writable {
  bytes = 0;
  private inflight = 0;
  private failed?: Error;
  private waiter?: () => void;
  private finalCb?: (err?: Error | null) => void;

  constructor(
    private readonly s: Session,
    private readonly handle: Buffer,
    private readonly where: string,
  ) {
    super({ highWaterMark: WINDOW });
    // A connection that drops while the source is quiet fails the put now, not at the next chunk.
    s.pending.add(this.lost);
  }

  private readonly lost = (err: Error) => {
    this.failed ??= err;
    this.destroy(err);
  };

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    let off = 0;
    const issue = () => {
      this.waiter = undefined;
      // The requests of one chunk leave in one writev instead of a socket write per SSH packet: a
      // 1 GiB upload fed from memory in 64 KiB chunks went from 3.71 s to 3.40 s (docs/performance.md).
      const socket = this.s.socket;
      socket.cork();
      process.nextTick(() => socket.uncork());
      while (off < chunk.length && this.inflight < WINDOW && !this.failed) {
        const n = Math.min(this.s.maxWrite, chunk.length - off);
        const from = off;
        const position = this.bytes;
        off += n;
        this.bytes += n;
        this.inflight += n;
        call<void>(this.s, this.where, (done) => this.s.sftp.write(this.handle, chunk, from, n, position, done)).then(
          () => this.settled(n),
          (err) => {
            this.failed ??= err as Error;
            this.settled(n);
          },
        );
      }
      if (this.failed) cb(this.failed);
      else if (off >= chunk.length) cb();
      else this.waiter = issue;
    };
    issue();
  }

  private settled(n: number): void {
    this.inflight -= n;
    if (this.destroyed) return;
    if (this.waiter) this.waiter();
    else if (this.finalCb && this.inflight === 0) {
      const cb = this.finalCb;
      this.finalCb = undefined;
      cb(this.failed);
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.inflight === 0) cb(this.failed);
    else this.finalCb = cb;
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.s.pending.delete(this.lost);
    this.waiter = undefined;
    this.finalCb = undefined;
    cb(err);
  }
}

/**
 * A Readable of an open remote file of known size, with up to WINDOW bytes of read requests in
 * flight, delivered in order. The file ending before `size` bytes (a short read) is a stream
 * error, never a clean end; so is a connection that drops.
 */
class RemoteFileReader extends Readable {
  private requested = 0;
  private delivered = 0;
  private queue: { pos: number; len: number; buf: Buffer; done: boolean; n: number; err?: Error; dropped: boolean }[] = [];
  private wanted = false;
  private ended = false;

  constructor(
    private readonly s: Session,
    private readonly handle: Buffer,
    private readonly size: number,
    private readonly label: string,
    private readonly where: string,
    private readonly classify: (err: unknown, what: string) => StorageError,
    private readonly onClose: () => void,
  ) {
    super({ highWaterMark: WINDOW });
  }

  override _read(): void {
    this.wanted = true;
    this.pump();
  }

  private pump(): void {
    if (this.destroyed || this.ended) return;
    if (this.delivered >= this.size && this.queue.length === 0) {
      this.ended = true;
      this.push(null);
      return;
    }
    while (this.wanted && this.requested < this.size && this.queue.length * this.s.maxRead < WINDOW) {
      const len = Math.min(this.s.maxRead, this.size - this.requested);
      const req = { pos: this.requested, len, buf: Buffer.allocUnsafe(len), done: false, n: 0, err: undefined as Error | undefined, dropped: false };
      this.requested += len;
      this.queue.push(req);
      call<number>(this.s, this.where, (cb) => this.s.sftp.read(this.handle, req.buf, 0, len, req.pos, cb)).then(
        (n) => {
          req.n = n ?? 0;
          req.done = true;
          if (!req.dropped) this.flush();
        },
        (err) => {
          req.err = err as Error;
          req.done = true;
          if (!req.dropped) this.flush();
        },
      );
    }
  }

  private flush(): void {
    if (this.destroyed) return;
    while (this.queue[0]?.done) {
      const r = this.queue.shift()!;
      if (r.err) return void this.destroy(this.classify(r.err, this.label));
      if (r.n === 0) {
        return void this.destroy(
          new StorageError('permanent', `[sftp] ${this.label}: the file ended after ${this.delivered} of ${this.size} bytes (it was truncated or replaced on the server while being read)`),
        );
      }
      this.delivered += r.n;
      if (r.n < r.len) {
        // The server sent less than asked without reaching the end: ask again from there, and
        // drop the requests already sent for what follows.
        for (const q of this.queue) q.dropped = true;
        this.queue = [];
        this.requested = r.pos + r.n;
      }
      if (!this.push(r.buf.subarray(0, r.n))) this.wanted = false;
    }
    this.pump();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    for (const q of this.queue) q.dropped = true;
    this.queue = [];
    // Not awaited: on a lost connection the answer never comes, and the handle is gone with it.
    call<void>(this.s, this.where, (done) => this.s.sftp.close(this.handle, done)).catch(() => {});
    this.onClose();
    cb(err);
  }
}

function expandHome(p: string, home: string): string {
  return p === '~' ? home : p.startsWith('~/') ? path.join(home, p.slice(2)) : p;
}

/** Why a private key cannot be used, in words, or the parsed key. Never echoes the passphrase. */
function loadKey(file: string, passphrase: string | undefined): ParsedKey | string {
  let text: Buffer;
  try {
    text = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied (the key file must be readable by this user)' : (err as Error).message;
  }
  const parsed = utils.parseKey(text, passphrase);
  if (parsed instanceof Error) {
    if (/no passphrase/i.test(parsed.message)) return 'the key is encrypted: set passphrase (e.g. passphrase: ${SFTP_KEY_PASSPHRASE}) in the storage\'s config entry';
    if (passphrase && /decrypt|bad|passphrase|integrity/i.test(parsed.message)) return 'the passphrase does not open this key';
    return `not a private key ssh2 can read (${parsed.message.replace(/\s+/g, ' ')})`;
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key.getPrivatePEM() === null) return 'it holds a public key, not a private one';
  return key;
}

export function createSftpStorage(url: string, rawOptions: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): Storage {
  const loc = parseSftpUrl(url, env);
  const o = parseSftpOptions(rawOptions);
  const home = env.HOME || os.homedir();
  const connectMs = parseDuration(o.connectTimeout ?? '10s')!;
  const keepaliveMs = parseDuration(o.keepaliveInterval ?? '15s')!;
  const limiter = new Limiter(o.concurrency ?? 8);
  const fileMode = parseMode(o.fileMode, 'fileMode', DEFAULT_FILE_MODE, 0o640);
  const dirMode = parseMode(o.dirMode, 'dirMode', DEFAULT_DIR_MODE, 0o750);
  const hostPort = loc.port === 22 ? loc.host.includes(':') ? `[${loc.host}]` : loc.host : `${loc.host.includes(':') ? `[${loc.host}]` : loc.host}:${loc.port}`;
  const safeUrl = `sftp://${loc.user}@${hostPort}${loc.path.startsWith('~') ? `/${loc.path}` : loc.path}`;
  const where = `${loc.user}@${hostPort}`;
  const knownName = knownHostName(loc.host, loc.port);
  const knownHostsFiles = o.knownHosts ? [expandHome(o.knownHosts, home)] : [path.join(home, '.ssh', 'known_hosts'), '/etc/ssh/ssh_known_hosts'];
  const accountHint = `the account ${loc.user} needs read and write access to ${loc.path} on ${loc.host}; docs/storage.md (SFTP) shows a minimal account`;

  /** What an ssh2 or SFTP error means: its class, a few words for the message, and the fix. */
  function describe(err: unknown): { reason: StorageErrorReason; detail: string; hint?: string } {
    const e = err as { code?: unknown; level?: string; message?: string };
    const message = e.message ?? String(err);
    const unreachable = 'the server is unreachable or restarting; retry later';
    if (e.code === FX.NO_SUCH_FILE) return { reason: 'not-found', detail: 'no such file or directory' };
    if (e.code === FX.PERMISSION_DENIED) return { reason: 'permanent', detail: `permission denied for ${loc.user}`, hint: accountHint };
    if (e.code === FX.FAILURE) {
      return {
        reason: 'permanent',
        detail: `the server failed the request (${message})`,
        hint: 'a full disk or quota on the server is the usual cause; the server\'s log (journalctl -u ssh) says more',
      };
    }
    if (e.code === FX.OP_UNSUPPORTED) return { reason: 'permanent', detail: `the server does not support this request (${message})` };
    if (e.code === FX.NO_CONNECTION || e.code === FX.CONNECTION_LOST || e.code === 'ECONNLOST') return { reason: 'transient', detail: message, hint: unreachable };
    if (typeof e.code === 'string' && TRANSIENT_CODES.has(e.code)) {
      return { reason: 'transient', detail: e.code === 'ETIMEDOUT' ? message : `${e.code}: cannot reach ${loc.host}:${loc.port}`, hint: unreachable };
    }
    if (e.code === 'ENOTFOUND') return { reason: 'permanent', detail: `cannot resolve the host name ${loc.host}`, hint: 'check the host in the storage URL' };
    if (/No response from server|Not connected|Connection lost before handshake|Keepalive timeout|Timed out/i.test(message) || e.level === 'client-timeout' || e.level === 'client-socket') {
      return { reason: 'transient', detail: `the connection to ${where} was lost (${message})`, hint: unreachable };
    }
    return { reason: 'permanent', detail: message };
  }

  function classify(err: unknown, what: string): StorageError {
    if (err instanceof StorageError) return err;
    const { reason, detail, hint } = describe(err);
    return new StorageError(reason, `[sftp] ${what}: ${detail}`, { cause: err, hint });
  }

  function loadKnownHosts(): KnownHostEntry[] {
    const entries: KnownHostEntry[] = [];
    for (const file of knownHostsFiles) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new StorageError('permanent', `[sftp] cannot read the known_hosts file ${file}: ${(err as Error).message}`, { hint: 'make it readable by this user, or point knownHosts: at another file' });
      }
      entries.push(...parseKnownHosts(text, file));
    }
    return entries;
  }

  let keys: { methods: AnyAuthMethod[]; tried: string; skipped: string[] } | undefined;
  /** How to log in, worked out once (decrypting a key costs a bcrypt round per connection otherwise). */
  function authMethods(): { methods: AnyAuthMethod[]; tried: string; skipped: string[] } {
    if (keys) return keys;
    const username = loc.user;
    if (o.privateKey) {
      const file = expandHome(o.privateKey, home);
      const key = loadKey(file, o.passphrase);
      if (typeof key === 'string') {
        throw new StorageError('permanent', `[sftp] cannot use the private key ${file}: ${key}`, { hint: 'fix privateKey (and passphrase) in the storage\'s config entry' });
      }
      return (keys = { methods: [{ type: 'publickey', username, key }], tried: `the key ${file}`, skipped: [] });
    }
    const methods: AnyAuthMethod[] = [];
    const tried: string[] = [];
    const skipped: string[] = [];
    if (env.SSH_AUTH_SOCK) {
      methods.push({ type: 'agent', username, agent: env.SSH_AUTH_SOCK });
      tried.push('the keys of the agent at SSH_AUTH_SOCK');
    }
    for (const name of DEFAULT_KEYS) {
      const file = path.join(home, '.ssh', name);
      const key = loadKey(file, undefined);
      if (typeof key !== 'string') {
        methods.push({ type: 'publickey', username, key });
        tried.push(file);
      } else if (key !== 'no such file') skipped.push(`${file}: ${key}`);
    }
    if (methods.length === 0) {
      throw new StorageError('permanent', `[sftp] no SSH key to log in to ${where} with${skipped.length ? ` (${skipped.join('; ')})` : ''}`, {
        hint: `set privateKey: /path/to/key in the storage's config entry, or load a key into ssh-agent (SSH_AUTH_SOCK), or create ${path.join(home, '.ssh', 'id_ed25519')} (ssh-keygen -t ed25519) and add its .pub to the account's authorized_keys`,
      });
    }
    return (keys = { methods, tried: tried.join(', '), skipped });
  }

  function hostKeyError(verdict: HostKeyVerdict, blob: Buffer): StorageError {
    const type = keyTypeLabel(keyTypeOf(blob));
    const print = fingerprint(blob);
    const files = knownHostsFiles.join(' and ');
    const hostArg = loc.port === 22 ? loc.host : `-p ${loc.port} ${loc.host}`;
    if (verdict.status === 'revoked') {
      return new StorageError('permanent', `[sftp] the host key of ${knownName} (${type} ${print}) is marked @revoked in ${verdict.entry.file} line ${verdict.entry.line}: refusing to connect`, {
        hint: 'the server presents a key that was revoked; ask its administrator which key it should have',
      });
    }
    if (verdict.status === 'changed') {
      const known = verdict.entries.map((e) => `${keyTypeLabel(e.keyType)} ${fingerprint(e.key)} (${e.file} line ${e.line})`).join(', ');
      return new StorageError(
        'permanent',
        `[sftp] WARNING: the host key of ${knownName} has CHANGED: it presents ${type} ${print}, known_hosts has ${known}. Someone may be intercepting the connection (man-in-the-middle attack), or the server's key was replaced; refusing to connect`,
        {
          hint: `do not connect until you know why; if the server's key was replaced on purpose, check the new fingerprint with its administrator, then: ssh-keygen -R '${knownName}' -f ${verdict.entries[0].file} && ssh-keyscan ${hostArg} >> ${verdict.entries[0].file}`,
        },
      );
    }
    return new StorageError('permanent', `[sftp] the host ${knownName} is not in known_hosts (${files}); its ${type} key fingerprint is ${print}. Refusing to connect to a server whose identity is not confirmed`, {
      hint: `check that fingerprint with the server's administrator (on the server: ssh-keygen -lf /etc/ssh/ssh_host_${type.toLowerCase()}_key.pub), then accept it: ssh-keyscan ${hostArg} >> ${o.knownHosts ? expandHome(o.knownHosts, home) : '~/.ssh/known_hosts'} (or log in once with ssh ${loc.port === 22 ? '' : `-p ${loc.port} `}${loc.user}@${loc.host} and answer yes)`,
    });
  }

  /** Opens the SSH connection and its SFTP channel, or fails with a classified error within connectMs. */
  function connect(): Promise<Session> {
    let entries: KnownHostEntry[];
    let auth: ReturnType<typeof authMethods>;
    try {
      entries = loadKnownHosts();
      auth = authMethods();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Session>((resolve, reject) => {
      const client = new Client();
      const socket = net.connect({ host: loc.host, port: loc.port });
      socket.setNoDelay(true);
      let verdict: HostKeyVerdict | undefined;
      let presented: Buffer | undefined;
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.end();
        socket.destroy();
        if (verdict && verdict.status !== 'known' && presented) return reject(hostKeyError(verdict, presented));
        const e = err as { level?: string; message?: string };
        if (e.level === 'client-authentication') {
          return reject(
            new StorageError('permanent', `[sftp] ${loc.host}:${loc.port} refused the login of ${loc.user} (tried ${auth.tried})`, {
              hint: `add the public key (the .pub beside the key) to ${loc.user}'s authorized_keys on the server, or set privateKey: in the storage's config entry${auth.skipped.length ? `; not usable: ${auth.skipped.join('; ')}` : ''}`,
            }),
          );
        }
        reject(classify(err, `cannot connect to ${where}`));
      };
      const timer = setTimeout(() => {
        const err = Object.assign(new Error(`no connection within ${formatDuration(connectMs)} (connectTimeout)`), { code: 'ETIMEDOUT' });
        fail(err);
      }, connectMs);
      client.on('error', fail);
      client.on('close', () => fail(Object.assign(new Error('the server closed the connection during the handshake'), { code: 'ECONNRESET' })));
      client.once('ready', () => {
        client.sftp((err, sftp) => {
          if (err) {
            return fail(
              new StorageError('permanent', `[sftp] ${where} has no SFTP subsystem (${err.message})`, {
                hint: 'the server\'s sshd_config needs "Subsystem sftp internal-sftp" (or the sftp-server path); an account whose ForceCommand is anything but internal-sftp cannot use SFTP',
              }),
            );
          }
          const finish = (root: string) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            client.removeAllListeners('error');
            client.removeAllListeners('close');
            resolve(makeSession(client, sftp, socket, root));
          };
          if (!loc.path.startsWith('~')) return finish(loc.path);
          sftp.realpath('.', (e, home) => (e ? fail(e) : finish(posix.join(home, loc.path.slice(1)))));
        });
      });
      try {
        client.connect({
          sock: socket,
          username: loc.user,
          readyTimeout: 0,
          keepaliveInterval: 0,
          algorithms: { serverHostKey: hostKeyAlgorithms(entries, knownName) as never },
          authHandler: auth.methods,
          hostVerifier: (key: Buffer) => {
            presented = Buffer.from(key);
            verdict = checkHostKey(entries, knownName, presented);
            return verdict.status === 'known';
          },
        });
      } catch (err) {
        fail(err);
      }
    });
  }

  let current: Promise<Session> | undefined;
  let live: Session | undefined;
  let closedForGood = false;
  /** Operations and read streams under way: the socket keeps the process alive only while there are some. */
  let active = 0;

  function makeSession(client: SshClient, sftp: SFTPWrapper, socket: net.Socket, root: string): Session {
    const ext = (sftp as unknown as { _extensions: Record<string, string> })._extensions ?? {};
    const limits = sftp as unknown as { _maxWriteLen?: number; _maxReadLen?: number };
    const s: Session = {
      client,
      sftp,
      socket,
      root,
      closed: false,
      ext: { posixRename: ext['posix-rename@openssh.com'] === '1', fsync: ext['fsync@openssh.com'] === '1', statvfs: ext['statvfs@openssh.com'] === '2' },
      maxWrite: limits._maxWriteLen && limits._maxWriteLen > 0 ? limits._maxWriteLen : 32 * 1024,
      maxRead: limits._maxReadLen && limits._maxReadLen > 0 ? limits._maxReadLen : 32 * 1024,
      pending: new Set(),
      lastReceived: Date.now(),
      lastUsed: Date.now(),
    };
    socket.on('data', () => (s.lastReceived = Date.now()));
    let probing = false;
    const timer = setInterval(() => {
      const now = Date.now();
      if (active === 0 && now - s.lastUsed > IDLE_CLOSE_MS) return void end();
      const silent = now - s.lastReceived;
      if (silent >= keepaliveMs * KEEPALIVE_COUNT) {
        s.lostBecause = `no answer from the server for ${formatDuration(silent)}`;
        socket.destroy();
      } else if (silent >= keepaliveMs && !probing) {
        probing = true;
        sftp.realpath('.', () => (probing = false));
      }
    }, Math.max(100, Math.min(keepaliveMs, IDLE_CLOSE_MS))).unref();
    const end = () => {
      if (s.closed) return;
      s.closed = true;
      clearInterval(timer);
      if (live === s) {
        live = undefined;
        current = undefined;
      }
      const err = connectionLost(s, where);
      for (const reject of [...s.pending]) reject(err);
      s.pending.clear();
      client.end();
      socket.destroy();
    };
    client.on('error', (err) => (s.lostBecause ??= err.message));
    client.on('close', end);
    sftp.on('error', (err: Error) => (s.lostBecause ??= err.message));
    sftp.on('close', end);
    if (active === 0) socket.unref();
    live = s;
    return s;
  }

  function session(signal?: AbortSignal): Promise<Session> {
    if (closedForGood) return Promise.reject(new StorageError('permanent', `[sftp] ${safeUrl}: the storage was closed`));
    if (!current) {
      const attempt = connect();
      current = attempt;
      attempt.catch(() => {
        if (current === attempt) current = undefined;
      });
    }
    return abortable(current, signal);
  }

  function hold(): () => void {
    if (active++ === 0) live?.socket.ref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--active === 0) live?.socket.unref();
    };
  }

  /** Runs fn on the connection within one of the `concurrency` slots. */
  async function op<T>(fn: (s: Session) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = hold();
    try {
      const slot = await limiter.acquire(signal);
      try {
        return await fn(await session(signal));
      } finally {
        slot();
      }
    } finally {
      release();
    }
  }

  const validKey = (key: string): string => {
    const norm = posix.normalize(key);
    if (!key || key.startsWith('/') || norm.startsWith('../') || norm === '..' || norm === '.') {
      throw new StorageError('permanent', `[sftp] key escapes the storage directory: ${key}`);
    }
    return norm;
  };
  const abs = (s: Session, key: string) => (key ? posix.join(s.root, key) : s.root);
  const req = <T>(s: Session, send: (cb: Callback<T>) => void) => call<T>(s, where, send);

  async function statFile(s: Session, file: string, signal?: AbortSignal): Promise<Stats | undefined> {
    try {
      return await abortable(
        req<Stats>(s, (cb) => s.sftp.stat(file, cb)),
        signal,
      );
    } catch (err) {
      if ((err as { code?: unknown }).code === FX.NO_SUCH_FILE) return undefined;
      throw err;
    }
  }

  /** mkdir -p: makes what is missing of `dir`, and accepts directories that exist (or appear meanwhile). */
  async function mkdirs(s: Session, dir: string): Promise<void> {
    try {
      await req<void>(s, (cb) => s.sftp.mkdir(dir, { mode: dirMode }, cb));
      return;
    } catch (err) {
      if ((await statFile(s, dir).catch(() => undefined))?.isDirectory()) return;
      const parent = posix.dirname(dir);
      if ((err as { code?: unknown }).code !== FX.NO_SUCH_FILE || parent === dir) throw err;
      await mkdirs(s, parent);
    }
    try {
      await req<void>(s, (cb) => s.sftp.mkdir(dir, { mode: dirMode }, cb));
    } catch (err) {
      if (!(await statFile(s, dir).catch(() => undefined))?.isDirectory()) throw err;
    }
  }

  async function openNew(s: Session, file: string): Promise<Buffer> {
    const open = () => req<Buffer>(s, (cb) => s.sftp.open(file, 'wx', { mode: fileMode }, cb));
    try {
      return await open();
    } catch (err) {
      if ((err as { code?: unknown }).code !== FX.NO_SUCH_FILE) throw err;
    }
    await mkdirs(s, posix.dirname(file));
    return open();
  }

  async function publish(s: Session, temp: string, file: string, key: string, exclusive: boolean | undefined): Promise<void> {
    if (exclusive) {
      try {
        await req<void>(s, (cb) => s.sftp.rename(temp, file, cb));
      } catch (err) {
        // OpenSSH answers a plain failure when the target exists (its rename links the new name).
        if ((err as { code?: unknown }).code === FX.FAILURE && (await lstat(s, file))) {
          throw new StorageError('exists', `[sftp] ${key} already exists in ${safeUrl}`);
        }
        throw err;
      }
    } else if (s.ext.posixRename) {
      await req<void>(s, (cb) => s.sftp.ext_openssh_rename(temp, file, cb));
    } else {
      // Without posix-rename the SFTP rename refuses an existing target: the key is missing for
      // a moment, between the two requests.
      await req<void>(s, (cb) => s.sftp.unlink(file, cb)).catch((err) => {
        if ((err as { code?: unknown }).code !== FX.NO_SUCH_FILE) throw err;
      });
      await req<void>(s, (cb) => s.sftp.rename(temp, file, cb));
    }
  }

  async function lstat(s: Session, file: string): Promise<Stats | undefined> {
    try {
      return await req<Stats>(s, (cb) => s.sftp.lstat(file, cb));
    } catch {
      return undefined;
    }
  }

  async function put(key: string, data: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    const rel = validKey(key);
    const signal = opts.signal;
    const what = `cannot write ${key} to ${safeUrl}`;
    // Connecting and opening the temporary take round trips before the source is piped: a source
    // that fails meanwhile must fail this put, not the process (an 'error' nobody listens to).
    let sourceError: unknown;
    const onSourceError = (err: unknown) => (sourceError ??= err);
    if (!(data instanceof Uint8Array)) data.on('error', onSourceError);
    return op(async (s) => {
      const file = abs(s, rel);
      const temp = posix.join(posix.dirname(file), `${TEMP_PREFIX}${posix.basename(file)}.${randomBytes(6).toString('hex')}`);
      let handle: Buffer | undefined;
      let created = false;
      let published = false;
      try {
        if (opts.exclusive && (await statFile(s, file, signal))) throw new StorageError('exists', `[sftp] ${key} already exists in ${safeUrl}`);
        handle = await openNew(s, temp);
        created = true;
        if (signal?.aborted) throw abortError(signal);
        if (sourceError) throw sourceError;
        const writer = new RemoteFileWriter(s, handle, where);
        const source = data instanceof Uint8Array ? Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]) : data;
        await pipeline(source, writer, signal ? { signal } : {});
        const h = handle;
        if (s.ext.fsync) await req<void>(s, (cb) => s.sftp.ext_openssh_fsync(h, cb as never));
        const stored = await req<Stats>(s, (cb) => s.sftp.fstat(h, cb));
        if (stored.size !== writer.bytes) {
          throw new StorageError('permanent', `[sftp] ${what}: the server holds ${stored.size} bytes after ${writer.bytes} were written`, {
            hint: 'a full disk or quota on the server is the usual cause',
          });
        }
        handle = undefined;
        await req<void>(s, (cb) => s.sftp.close(h, cb));
        if (signal?.aborted) throw abortError(signal);
        await publish(s, temp, file, key, opts.exclusive);
        published = true;
        if (signal?.aborted) {
          // The abort came while the rename was under way: what it published must not stay.
          await req<void>(s, (cb) => s.sftp.unlink(file, cb)).catch(() => {});
          throw abortError(signal);
        }
        return { size: writer.bytes };
      } catch (err) {
        const h = handle;
        if (h) await req<void>(s, (cb) => s.sftp.close(h, cb)).catch(() => {});
        // On a lost connection this cannot reach the server: the temporary stays, hidden from
        // list(), until prune removes it (listTemporaries).
        if (created && !published) await req<void>(s, (cb) => s.sftp.unlink(temp, cb)).catch(() => {});
        if (signal?.aborted) throw abortError(signal);
        throw classify(err, what);
      }
    }, signal)
      .catch((err) => {
        if (signal?.aborted) throw abortError(signal);
        throw classify(err, what);
      })
      .finally(() => {
        if (!(data instanceof Uint8Array)) data.off('error', onSourceError);
      });
  }

  async function get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    const rel = validKey(key);
    const signal = opts.signal;
    const release = hold();
    try {
      return await op(async (s) => {
        const closeLate = (h: Buffer) => void req<void>(s, (cb) => s.sftp.close(h, cb)).catch(() => {});
        const handle = await abortable(
          req<Buffer>(s, (cb) => s.sftp.open(abs(s, rel), 'r', cb)),
          signal,
          closeLate,
        );
        let st: Stats;
        try {
          st = await abortable(
            req<Stats>(s, (cb) => s.sftp.fstat(handle, cb)),
            signal,
          );
        } catch (err) {
          closeLate(handle);
          throw err;
        }
        if (!isFileMode(st.mode)) {
          closeLate(handle);
          throw Object.assign(new Error('not a file'), { code: FX.NO_SUCH_FILE });
        }
        const stream = new RemoteFileReader(s, handle, st.size, `reading ${key}`, where, classify, release);
        if (signal) {
          const onAbort = () => stream.destroy(abortError(signal));
          signal.addEventListener('abort', onAbort, { once: true });
          stream.once('close', () => signal.removeEventListener('abort', onAbort));
        }
        return stream;
      }, signal);
    } catch (err) {
      release();
      if (signal?.aborted) throw abortError(signal);
      throw classify(err, `cannot read ${key} from ${safeUrl}`);
    }
  }

  async function stat(key: string, opts: { signal?: AbortSignal } = {}): Promise<ObjectInfo | undefined> {
    const rel = validKey(key);
    try {
      return await op(async (s) => {
        const st = await statFile(s, abs(s, rel), opts.signal);
        return st && isFileMode(st.mode) ? { key, size: st.size, modifiedAt: new Date(st.mtime * 1000) } : undefined;
      }, opts.signal);
    } catch (err) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw classify(err, `cannot stat ${key} in ${safeUrl}`);
    }
  }

  async function list(prefix: string, temporaries: boolean, signal?: AbortSignal): Promise<ObjectInfo[]> {
    if (prefix.startsWith('/') || prefix.split('/').includes('..')) throw new StorageError('permanent', `[sftp] prefix escapes the storage directory: ${prefix}`);
    const start = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')).replace(/\/+$/, '') : '';
    const out: ObjectInfo[] = [];
    try {
      await op(async (s) => {
        const walk = async (rel: string): Promise<void> => {
          let entries: FileEntryWithStats[];
          try {
            entries = await abortable(
              req<FileEntryWithStats[]>(s, (cb) => s.sftp.readdir(abs(s, rel), cb as never)),
              signal,
            );
          } catch (err) {
            if ((err as { code?: unknown }).code === FX.NO_SUCH_FILE) return;
            throw err;
          }
          const dirs: string[] = [];
          for (const entry of entries) {
            if (entry.filename === '.' || entry.filename === '..') continue;
            const key = rel ? `${rel}/${entry.filename}` : entry.filename;
            if (isDirMode(entry.attrs.mode)) {
              if (prefix.startsWith(`${key}/`) || key.startsWith(prefix)) dirs.push(key);
            } else if (isFileMode(entry.attrs.mode) && key.startsWith(prefix) && entry.filename.startsWith(TEMP_PREFIX) === temporaries) {
              out.push({ key, size: entry.attrs.size, modifiedAt: new Date(entry.attrs.mtime * 1000) });
            }
          }
          await eachLimited(dirs, LIST_AHEAD, walk);
        };
        await walk(start);
      }, signal);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      throw classify(err, `cannot list ${safeUrl}/${prefix}`);
    }
    return out.sort(byKey);
  }

  async function del(key: string): Promise<void> {
    const rel = validKey(key);
    try {
      await op(async (s) => {
        await req<void>(s, (cb) => s.sftp.unlink(abs(s, rel), cb)).catch((err) => {
          if ((err as { code?: unknown }).code !== FX.NO_SUCH_FILE) throw err;
        });
      });
    } catch (err) {
      throw classify(err, `cannot delete ${key} from ${safeUrl}`);
    }
  }

  async function freeSpace(): Promise<number | undefined> {
    try {
      return await op(async (s) => {
        if (!s.ext.statvfs) return undefined;
        // The storage directory may not exist yet: ask about the nearest directory that does.
        for (let dir = s.root; ; dir = posix.dirname(dir)) {
          try {
            const st = await req<{ f_bavail: number; f_frsize: number; f_bsize: number }>(s, (cb) => s.sftp.ext_openssh_statvfs(dir, cb as never));
            return Number(st.f_bavail) * Number(st.f_frsize || st.f_bsize);
          } catch (err) {
            const code = (err as { code?: unknown }).code;
            if (code === FX.NO_SUCH_FILE && posix.dirname(dir) !== dir) continue;
            if (code === FX.NO_SUCH_FILE || code === FX.PERMISSION_DENIED || code === FX.OP_UNSUPPORTED || code === FX.FAILURE) return undefined;
            throw err;
          }
        }
      });
    } catch (err) {
      throw classify(err, `cannot read the free space of ${safeUrl}`);
    }
  }

  async function check(signal?: AbortSignal): Promise<void> {
    const budget = connectMs + 20_000;
    const deadline = AbortSignal.timeout(budget);
    const both = signal ? AbortSignal.any([signal, deadline]) : deadline;
    try {
      await op(async (s) => {
        const probe = posix.join(s.root, `${TEMP_PREFIX}check.${randomBytes(6).toString('hex')}`);
        await abortable(mkdirs(s, s.root), both);
        // Writing is the only proof of write access SFTP offers; the probe is a temporary, so
        // even one left behind by a lost connection is never listed, and prune removes it.
        const handle = await abortable(openNew(s, probe), both);
        await req<void>(s, (cb) => s.sftp.close(handle, cb));
        await req<void>(s, (cb) => s.sftp.unlink(probe, cb));
      }, both);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (deadline.aborted) {
        throw new StorageError('permanent', `[sftp] no answer from ${where} for ${safeUrl} within ${formatDuration(budget)}`, {
          cause: err,
          hint: 'the server is unreachable or hung; if it is only slow, raise connectTimeout in the storage\'s config entry',
        });
      }
      if (err instanceof StorageError) throw err;
      const { reason, detail, hint } = describe(err);
      if (reason === 'transient') throw classify(err, `cannot use ${safeUrl}`);
      throw new StorageError('permanent', `[sftp] cannot create or write the directory ${loc.path} on ${where}: ${detail}`, { cause: err, hint: hint ?? accountHint });
    }
  }

  return {
    url: safeUrl,
    properties: { kind: 'sftp', local: false, maxParallelism: 2 },
    put,
    get,
    stat,
    list: (prefix, opts) => list(prefix, false, opts?.signal),
    listTemporaries: (prefix) => list(prefix, true),
    delete: del,
    freeSpace,
    check,
    async close() {
      closedForGood = true;
      const s = live ?? (await current?.catch(() => undefined));
      current = undefined;
      if (s && !s.closed) {
        s.client.end();
        s.socket.destroy();
      }
    },
  };
}
