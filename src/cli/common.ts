// What every command shares: the common flags, the context they resolve to, and the one place
// where typed errors become a message, a hint and an exit code.

import { Command, Option } from 'commander';
import { DbstashError, ExitCode, InterruptedError } from '../core/errors.js';
import { runForcedExitActions } from '../core/forced-exit.js';
import { emptyConfig, loadConfig, loadDotenv, type LoadedConfig } from '../config/load.js';
import { resolveEnvName } from '../config/resolve.js';
import { Output } from './output.js';
import { maskSecrets } from '../core/secrets.js';

export interface CommonOptions {
  config?: string;
  env?: string;
  json?: boolean;
  quiet?: boolean;
  debug?: boolean;
  logFile?: string;
  yes?: boolean;
  dryRun?: boolean;
  outputDir?: string;
  storage?: string[];
  allowWorldReadable?: boolean;
}

export interface Context {
  out: Output;
  loaded: LoadedConfig;
  envName: string;
  /** Aborted on SIGINT/SIGTERM with an InterruptedError as the reason. */
  signal: AbortSignal;
}

const EXIT_CODES: [number, string][] = [
  [0, 'success'],
  [1, 'internal error (a bug: please report it with the --debug output)'],
  [2, 'usage or configuration error'],
  [3, 'connection or authentication failure'],
  [4, 'preflight failure (missing or too old tool, missing database, no space, unwritable destination)'],
  [5, 'backup failed'],
  [6, 'lock held by another dbstash run'],
  [7, 'verification failed (the backup is damaged or incomplete)'],
  [8, 'could not verify (missing tools, no scratch server)'],
  [9, 'restore failed'],
  [10, 'decryption failed (wrong key or passphrase)'],
  [11, 'storage error (unreachable bucket, missing object)'],
  [12, 'degraded (an optional destination failed)'],
  [13, 'unhealthy (status found a problem)'],
  [130, 'interrupted (SIGINT); 143 terminated (SIGTERM)'],
];

/** The exit-code table, whole (top-level help) or with the codes one command can return. */
export function exitCodesHelp(codes?: number[]): string {
  const rows = EXIT_CODES.filter(([code]) => !codes || codes.includes(code) || code <= 2);
  return `\nExit codes:\n${rows.map(([code, text]) => `  ${String(code).padEnd(4)} ${text}`).join('\n')}`;
}

export const EXIT_CODES_HELP = exitCodesHelp();

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** --output-dir and --storage: where the stash is, for every command that reads or writes it. */
export function stashOptions(cmd: Command): Command {
  return cmd
    .option('--output-dir <dir>', 'local stash directory (default: ./backups or the config\'s stash)')
    .option('--storage <url>', 'storage URL or configured storage name (repeatable)', collect)
    .option('--allow-world-readable', 'let a local stash\'s fileMode/dirMode be wider than 0640/0750');
}

/**
 * The flags every command shares, and those only some take: --yes where there is something to
 * confirm, --dry-run where there is something to change. `codes`: the exit codes it can return.
 */
export function commonOptions(cmd: Command, opts: { yes?: boolean; dryRun?: boolean | string; codes?: number[] } = {}): Command {
  cmd
    .option('--config <file>', 'config file (default: ./dbstash.yaml when present)')
    .addOption(new Option('--env <name>', 'environment: dev, prod, staging, … or auto (ENV_MODE, then NODE_ENV)'))
    .option('--json', 'machine-readable output on stdout (failures too)')
    .option('--quiet', 'print nothing but errors');
  if (opts.yes) cmd.option('--yes', 'answer yes to confirmations (needed without a TTY)');
  if (opts.dryRun) cmd.option('--dry-run', typeof opts.dryRun === 'string' ? opts.dryRun : 'check everything and print the plan; change nothing');
  return cmd
    .option('--debug', 'show stack traces and debug lines')
    .option('--log-file <file>', 'append JSON lines of every event to this file')
    .addHelpText('after', exitCodesHelp(opts.codes));
}

function exitCodeFor(err: unknown): number {
  if (err instanceof DbstashError) return err.exitCode;
  return ExitCode.internal;
}

export function reportError(out: Output, err: unknown, opts: { stdout?: boolean } = {}): number {
  const code = exitCodeFor(err);
  const [message, hint, kind] =
    err instanceof DbstashError
      ? [err.message, err.hint, err.kind]
      : [`internal error: ${(err as Error)?.message ?? String(err)}`, 'run again with --debug for the stack trace, and report it', 'internal'];
  out.error(message, hint, { kind });
  // Scripts read --json from stdout: a failure is a JSON object there too, never only stderr.
  if (out.json && opts.stdout !== false) out.result({ ok: false, exitCode: code, kind, error: message, ...(hint ? { hint } : {}) }, () => '');
  if (out.debugEnabled && err instanceof Error && err.stack) {
    process.stderr.write(maskSecrets(err.stack) + '\n');
    let cause = (err as { cause?: unknown }).cause;
    while (cause instanceof Error) {
      process.stderr.write(maskSecrets(`caused by: ${cause.stack ?? cause.message}`) + '\n');
      cause = (cause as { cause?: unknown }).cause;
    }
  }
  return code;
}

/**
 * A second signal this soon after the first is the same request delivered twice: GNU timeout, for
 * one, signals the command and then its whole process group, a few milliseconds apart.
 */
export const DUPLICATE_SIGNAL_MS = 1000;
/** How long a forced exit waits for the locks to be released. */
const FORCED_EXIT_GRACE_MS = 2000;

/**
 * Runs a command body with its context. SIGINT/SIGTERM abort the context's signal so the body can
 * clean up (kill children, remove temporaries, release locks) before the process exits. A second
 * signal within DUPLICATE_SIGNAL_MS of the first is ignored; a later one (a person pressing
 * Ctrl-C again) exits without waiting for the clean-up, after releasing the locks if it can.
 */
export async function runCommand(opts: CommonOptions, body: (ctx: Context) => Promise<number | void>, settings: { config?: boolean } = {}): Promise<void> {
  const out = new Output({ json: opts.json, quiet: opts.quiet, debug: opts.debug, logFile: opts.logFile });
  const controller = new AbortController();
  let firstAt: number | undefined;
  let forcing = false;
  const onSignal = (sig: NodeJS.Signals) => {
    const now = Date.now();
    if (firstAt === undefined) {
      firstAt = now;
      out.warn(`${sig} received: stopping and cleaning up`);
      controller.abort(new InterruptedError(sig));
      return;
    }
    if (now - firstAt < DUPLICATE_SIGNAL_MS || forcing) return;
    forcing = true;
    out.warn(`${sig} received again: exiting now, without finishing the clean-up (locks are released; the next backup removes what is left in the temp dir)`);
    void runForcedExitActions(FORCED_EXIT_GRACE_MS).finally(() => process.exit(new InterruptedError(sig).exitCode));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    loadDotenv();
    // A command that writes a config (init) must not trip over the one it may replace.
    const loaded = settings.config === false ? { config: emptyConfig() } : await loadConfig(opts.config);
    const envName = resolveEnvName(opts.env, loaded.config);
    const code = await body({ out, loaded, envName, signal: controller.signal });
    process.exitCode = code ?? 0;
  } catch (err) {
    // The command's own interruption error says what it did about it; prefer it to the bare signal.
    process.exitCode = reportError(out, controller.signal.aborted && !(err instanceof InterruptedError) ? (controller.signal.reason ?? err) : err);
  } finally {
    // After an interruption the process may still take a moment to exit (connections closing,
    // children being reaped): the duplicate of the first signal must not kill it meanwhile.
    if (firstAt === undefined) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}

/** key=value pairs from repeated --label flags. */
export function parseLabels(pairs: string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const i = pair.indexOf('=');
    if (i <= 0) throw new DbstashError('usage', `--label takes key=value, got "${pair}"`);
    labels[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return labels;
}

export { collect };
