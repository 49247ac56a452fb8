/**
 * Throwaway SSH/SFTP servers for tests: Debian's /usr/sbin/sshd in the foreground on a free port
 * of 127.0.0.1, with its own ed25519 host key, a throwaway user key for root (who may log in with
 * a key only), `Subsystem sftp internal-sftp`, and a data directory in a temp dir. Nothing
 * system-wide is created but /run/sshd, the privilege separation directory sshd insists on.
 *
 * sshd runs as root because we are root: the tests log in as root with the throwaway key, so no
 * system user is added. The server keeps its port across kill() and restart(), so a storage opened
 * on its URL can reconnect to it, as it would to a real server that came back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort, isRunning, logTail, run } from './proc.js';
import { atExit, removeTempDir, tempDir } from './tmp.js';

const SSHD = '/usr/sbin/sshd';
const PORT_ATTEMPTS = 5;

export interface SshServer {
  host: '127.0.0.1';
  port: number;
  user: 'root';
  /** The throwaway user key (OpenSSH format, no passphrase) that authorized_keys accepts. */
  userKey: string;
  /** The authorized_keys file of root on this server: append a public key line to let it in. */
  authorizedKeys: string;
  /** A known_hosts file with the server's host key under "[127.0.0.1]:PORT". */
  knownHosts: string;
  /** The host key's public line ("ssh-ed25519 AAAA…"). */
  hostKey: string;
  /** SHA256:… as ssh prints it. */
  hostKeyFingerprint: string;
  /** A directory the tests may use; sftp paths are absolute, so this is also its path over SFTP. */
  dataDir: string;
  /** Where the harness keeps its keys, config and log (not under dataDir). */
  root: string;
  /** sftp://root@127.0.0.1:PORT<dataDir>/<sub> */
  url(sub?: string): string;
  /** The listening sshd's pid. */
  readonly pid: number;
  /** SIGKILL the listening sshd and every session process below it (a server that dies mid-transfer). */
  kill(): void;
  /** SIGSTOP the listening sshd and its sessions: a server that hangs without closing connections. */
  freeze(): void;
  /** SIGCONT what freeze() stopped. */
  thaw(): void;
  /** Starts sshd again on the same port with the same keys (after kill() or stop of the daemon). */
  restart(): Promise<void>;
  /** Stops sshd and removes every file of the harness. Idempotent. */
  stop(): Promise<void>;
}

/** Process ids of every descendant of `pid` (read from /proc), children before their parents' siblings. */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // "pid (comm) state ppid …": comm may contain spaces and parentheses, so parse after the last ")".
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parentOf.set(Number(name), ppid);
    } catch {
      // The process ended while we looked.
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

function signalTree(pid: number, signal: NodeJS.Signals): void {
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, signal);
    } catch {
      // Already gone.
    }
  }
}

function fingerprint(publicKeyLine: string): string {
  const blob = Buffer.from(publicKeyLine.trim().split(/\s+/)[1], 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Resolves once `port` accepts TCP connections; rejects when `child` exits first or after `ms`. */
async function waitForListen(port: number, child: ChildProcess, logFile: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`[harness/sshd] sshd exited (${child.exitCode ?? child.signalCode}) before listening on ${port}\n--- ${logFile} ---\n${logTail(logFile)}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`[harness/sshd] sshd did not listen on ${port} within ${ms} ms\n--- ${logFile} ---\n${logTail(logFile)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Waits until `pid` has exited (polling: the child is unref'd, so its 'exit' event keeps nothing alive). */
async function gone(pid: number | undefined): Promise<void> {
  while (pid && isRunning(pid)) await new Promise((r) => setTimeout(r, 10));
}

export async function startSshd(): Promise<SshServer> {
  const root = tempDir('dbstash-sshd');
  const dataDir = path.join(root, 'data');
  mkdirSync(dataDir);
  // sshd refuses to start without its privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKeyFile = path.join(root, 'ssh_host_ed25519_key');
  const userKey = path.join(root, 'id_ed25519');
  const keygen = (file: string, comment: string) => run('[harness/sshd] ssh-keygen', { cmd: 'ssh-keygen', args: ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file] });
  await Promise.all([keygen(hostKeyFile, 'dbstash-test-host'), keygen(userKey, 'dbstash-test-user')]);
  const authorizedKeys = path.join(root, 'authorized_keys');
  writeFileSync(authorizedKeys, readFileSync(`${userKey}.pub`), { mode: 0o600 });
  const hostKey = readFileSync(`${hostKeyFile}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const configFile = path.join(root, 'sshd_config');
  const logFile = path.join(root, 'sshd.log');
  const knownHosts = path.join(root, 'known_hosts');

  const writeConfig = (port: number) =>
    writeFileSync(
      configFile,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKeyFile}`,
        `PidFile ${path.join(root, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authorizedKeys}`,
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        // The harness's files live in a temp dir whose modes sshd would otherwise refuse.
        'StrictModes no',
        'UsePAM no',
        'UseDNS no',
        'PrintMotd no',
        // Every test opens its own storage, and with it a connection: no throttling of new ones.
        'MaxStartups 100',
        'Subsystem sftp internal-sftp',
        'LogLevel VERBOSE',
        '',
      ].join('\n'),
    );

  let child: ChildProcess | undefined;
  let port = 0;
  const spawnSshd = async (): Promise<void> => {
    const log = openSync(logFile, 'a');
    try {
      child = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    child.unref();
    await waitForListen(port, child, logFile);
  };
  const killNow = () => {
    if (child?.pid && isRunning(child.pid)) signalTree(child.pid, 'SIGKILL');
  };
  const unregister = atExit(killNow);

  try {
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      writeConfig(port);
      try {
        await spawnSshd();
        break;
      } catch (err) {
        if (attempt < PORT_ATTEMPTS && /Address already in use/i.test(logTail(logFile))) continue;
        throw err;
      }
    }
  } catch (err) {
    killNow();
    unregister();
    await removeTempDir(root);
    throw err;
  }
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostKey}\n`);

  let stopped = false;
  const server: SshServer = {
    host: '127.0.0.1',
    port,
    user: 'root',
    userKey,
    authorizedKeys,
    knownHosts,
    hostKey,
    hostKeyFingerprint: fingerprint(hostKey),
    dataDir,
    root,
    url: (sub = '') => `sftp://root@127.0.0.1:${port}${dataDir}${sub ? `/${sub.replace(/^\/+/, '')}` : ''}`,
    get pid() {
      return child?.pid ?? 0;
    },
    kill() {
      killNow();
    },
    freeze() {
      if (child?.pid) signalTree(child.pid, 'SIGSTOP');
    },
    thaw() {
      if (child?.pid) signalTree(child.pid, 'SIGCONT');
    },
    async restart() {
      killNow();
      await gone(child?.pid);
      await spawnSshd();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      unregister();
      killNow();
      await gone(child?.pid);
      await removeTempDir(root);
    },
  };
  return server;
}
