// The dbstash program: every command and its flags, without running anything. main.ts parses the
// command line with it; tests read the commands and flags the docs use from it.

import { Command } from 'commander';
import { TOOL_VERSION } from '../core/version.js';
import { EXIT_CODES_HELP } from './common.js';

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
  export: async () => (await import('./export.js')).registerExport,
  show: async () => (await import('./export.js')).registerShow,
  wal: async () => (await import('./wal.js')).registerWal,
  dashboard: async () => (await import('./dashboard.js')).registerDashboard,
  user: async () => (await import('./dashboard.js')).registerUser,
  token: async () => (await import('./dashboard.js')).registerToken,
  worker: async () => (await import('./fleet.js')).registerWorker,
  run: async () => (await import('./fleet.js')).registerRun,
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
