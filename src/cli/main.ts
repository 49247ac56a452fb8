#!/usr/bin/env node
// The dbstash command line: parses flags and hands each command to its module. Usage errors exit
// with code 2; every other error kind is mapped in common.ts.

import { Command, CommanderError } from 'commander';
import { ExitCode } from '../core/errors.js';
import { TOOL_VERSION } from '../core/version.js';
import '../pipeline/compress.js';
import '../pipeline/age.js';
import { EXIT_CODES_HELP } from './common.js';
import { hasUrlPassword, maskUrlCredentials } from '../core/secrets.js';

type Register = (program: Command) => void;

/** Each command's module, loaded only when that command runs (or for the full --help). */
const COMMANDS: Record<string, () => Promise<Register>> = {
  backup: async () => (await import('./backup.js')).registerBackup,
  list: async () => (await import('./list.js')).registerList,
  verify: async () => (await import('./verify.js')).registerVerify,
  restore: async () => (await import('./restore.js')).registerRestore,
  init: async () => (await import('./init.js')).registerInit,
  prune: async () => (await import('./prune.js')).registerPrune,
  daemon: async () => (await import('./daemon.js')).registerDaemon,
  status: async () => (await import('./status.js')).registerStatus,
  schedule: async () => (await import('./schedule.js')).registerSchedule,
  keygen: async () => (await import('./keygen.js')).registerKeygen,
  copy: async () => (await import('./copy.js')).registerCopy,
};

/**
 * The program with `only` registered, when it names a command, else with every command (for the
 * overview help and commander's "did you mean" on a typo).
 */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command();
  program
    .name('dbstash')
    .description('Consistent, compressed, checksummed backups of PostgreSQL, MySQL/MariaDB and SQLite')
    .version(TOOL_VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText(
      'after',
      `
Examples:
  dbstash backup postgres://app@db.internal:5432/shop --env prod   # one backup into ./backups
  dbstash list                                                      # what the stash holds
  dbstash verify --latest shop --drill                              # prove the newest one restores
  dbstash restore latest --database shop --to postgres://app@db.internal:5432/shop --dry-run
  dbstash init && dbstash daemon                                    # a config, then its schedules
${EXIT_CODES_HELP}`,
    );
  const names = only !== undefined && Object.hasOwn(COMMANDS, only) ? [only] : Object.keys(COMMANDS);
  for (const register of await Promise.all(names.map((n) => COMMANDS[n]()))) register(program);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

/**
 * A password in a URL on dbstash's own command line can be read by every user of the machine (ps,
 * /proc/<pid>/cmdline). The process title is rewritten without it at once (Linux shows the new
 * title), and a warning says where the password belongs instead.
 */
function guardCommandLine(): void {
  const args = process.argv.slice(2);
  if (!args.some(hasUrlPassword)) return;
  process.title = ['dbstash', ...args.map(maskUrlCredentials)].join(' ');
  if (args.includes('--quiet')) return;
  process.stderr.write(
    'warning: a password in a URL on the command line is visible to every user of this machine (ps); ' +
      'put it in the environment (PGPASSWORD, DATABASE_URL), ~/.pgpass or the config file instead\n',
  );
}

async function main(): Promise<void> {
  guardCommandLine();
  // `dbstash list | head`: a reader that went away is no error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  try {
    // The program has no options of its own before the command, so the first word is the command.
    const program = await buildProgram(process.argv[2]);
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
      process.exitCode = ok ? ExitCode.ok : ExitCode.usage;
      return;
    }
    throw err;
  }
}

await main();
