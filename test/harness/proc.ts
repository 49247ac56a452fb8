/**
 * Process helpers shared by the server harnesses: free ports, running a command
 * with an error that carries its output, dropping root for daemons that refuse
 * it, checking that a process is alive, and reading the tail of a server log.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';

export interface Command {
  cmd: string;
  args: string[];
}

/** A port that was free on 127.0.0.1 a moment ago (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export const isRoot = process.getuid?.() === 0;

let runuserAvailable: boolean | undefined;

/**
 * The command that runs `cmd args` as the OS user `user` when we are root
 * (runuser, else su), or unchanged when we are not.
 */
export function asUser(user: string, cmd: string, args: string[]): Command {
  if (!isRoot) return { cmd, args };
  runuserAvailable ??= spawnSync('runuser', ['--help'], { stdio: 'ignore' }).status === 0;
  if (runuserAvailable) return { cmd: 'runuser', args: ['-u', user, '--', cmd, ...args] };
  return { cmd: 'su', args: [user, '-s', '/bin/sh', '-c', [cmd, ...args].map(shellQuote).join(' ')] };
}

/** Hands a directory tree to `user` when we are root, so a daemon running as that user can use it. */
export async function chownToUser(user: string, dir: string): Promise<void> {
  if (isRoot) await run(`chown ${dir}`, { cmd: 'chown', args: ['-R', `${user}:`, dir] });
}

function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Whether a process with this id exists and has not exited (a zombie has). Linux only: reads /proc. */
export function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The last `lines` lines of a log file, or a note that it does not exist. */
export function logTail(file: string, lines = 20): string {
  if (!existsSync(file)) return `(no log at ${file})`;
  return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
}

/** Long tool output cut to its first and last lines, where the cause and the final error tend to be. */
function headAndTail(output: string, keep = 15): string {
  const lines = output.trimEnd().split('\n');
  if (lines.length <= 2 * keep) return lines.join('\n');
  return [...lines.slice(0, keep), `[… ${lines.length - 2 * keep} lines …]`, ...lines.slice(-keep)].join('\n');
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * Runs a command to completion. Rejects with its exit status and output when it
 * cannot start or exits non-zero; `what` names the step in that error.
 */
export function run(what: string, { cmd, args }: Command, opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', (err) => reject(new Error(`${what}: cannot run ${cmd}: ${err.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) return resolve(output);
      const status = signal ? `signal ${signal}` : `exit code ${code}`;
      reject(new Error(`${what} failed (${status}): ${cmd} ${args.join(' ')}\n${headAndTail(output)}`));
    });
  });
}
