/**
 * Runs the compiled dbstash CLI in a child process, the way users run it.
 * `runCli` waits for it and collects its output; `spawnCli` hands back the
 * process for tests that signal or kill it mid-way. A CLI still running when the
 * test process exits is killed.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { atExit } from './tmp.js';
import { asUser } from './proc.js';

/** The compiled entry point: dist/test/harness/run.js → dist/src/cli/main.js. */
export const CLI_PATH = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliOptions {
  /** Merged over the test process's environment; an undefined value removes that variable. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Runs the CLI under this umask (as a shell would set it before starting it). */
  umask?: number;
  /** Runs the CLI as this OS user (we are root): as PostgreSQL's archive_command would run it. */
  user?: string;
}

export interface RunCliOptions extends CliOptions {
  /** Written to stdin. stdin is closed either way, so a prompt sees end of input instead of hanging. */
  input?: string | Buffer;
  /** Kills the CLI and rejects after this long. Default 60 s. */
  timeoutMs?: number;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function spawnCli(args: string[], opts: CliOptions = {}): ChildProcessWithoutNullStreams {
  if (opts.user) {
    const as = asUser(opts.user, process.execPath, [CLI_PATH, ...args]);
    const child = spawn(as.cmd, as.args, { cwd: opts.cwd, env: mergeEnv(opts.env) });
    const unregister = atExit(() => child.kill('SIGKILL'));
    child.once('exit', unregister);
    return child;
  }
  const child =
    opts.umask === undefined
      ? spawn(process.execPath, [CLI_PATH, ...args], { cwd: opts.cwd, env: mergeEnv(opts.env) })
      : spawn('/bin/sh', ['-c', `umask ${opts.umask.toString(8).padStart(3, '0')} && exec "$0" "$@"`, process.execPath, CLI_PATH, ...args], { cwd: opts.cwd, env: mergeEnv(opts.env) });
  const unregister = atExit(() => child.kill('SIGKILL'));
  child.once('exit', unregister);
  return child;
}

export function runCli(args: string[], opts: RunCliOptions = {}): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const child = spawnCli(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  // The CLI may exit without reading its input; that is its business, not an error here.
  child.stdin.on('error', () => {});
  child.stdin.end(opts.input);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`[harness/run] dbstash ${args.join(' ')} still running after ${timeoutMs} ms, killed\n` +
        `--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`[harness/run] cannot start ${process.execPath} ${CLI_PATH}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function mergeEnv(overrides: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...overrides };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  return env;
}

/** Asserts a CLI run's exit code (and, optionally, its output), showing both streams on failure. */
export function expectExit(r: CliResult, code: number, pattern?: RegExp): void {
  assert.equal(r.code, code, `expected exit ${code}, got ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  if (pattern) assert.match(r.stderr + r.stdout, pattern);
}

/** Runs a prod backup of `url` into `dir` with --json and returns the new backup's id. */
export async function backupId(url: string, dir: string, ...extra: string[]): Promise<string> {
  const r = await runCli(['backup', url, '--output-dir', dir, '--env', 'prod', '--json', ...extra]);
  expectExit(r, 0);
  return (JSON.parse(r.stdout) as { id: string }).id;
}
