#!/usr/bin/env node
// The dbstash command line: parses flags and hands each command to its module. Usage errors exit
// with code 2; every other error kind is mapped in common.ts.

import { Command, CommanderError } from 'commander';
import { ExitCode } from '../core/errors.js';
import { TOOL_VERSION } from '../core/version.js';
import '../pipeline/compress.js';
import '../pipeline/age.js';
import { EXIT_CODES_HELP } from './common.js';
import { registerBackup } from './backup.js';
import { registerInit } from './init.js';
import { registerList } from './list.js';
import { registerVerify } from './verify.js';
import { registerPrune } from './prune.js';
import { registerDaemon } from './daemon.js';
import { registerStatus } from './status.js';
import { registerSchedule } from './schedule.js';
import { registerRestore } from './restore.js';
import { registerKeygen } from './keygen.js';
import { registerCopy } from './copy.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('dbstash')
    .description('Consistent, compressed, checksummed backups of PostgreSQL, MySQL/MariaDB and SQLite')
    .version(TOOL_VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText('after', EXIT_CODES_HELP);
  registerBackup(program);
  registerList(program);
  registerVerify(program);
  registerRestore(program);
  registerInit(program);
  registerPrune(program);
  registerDaemon(program);
  registerStatus(program);
  registerSchedule(program);
  registerKeygen(program);
  registerCopy(program);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

async function main(): Promise<void> {
  // `dbstash list | head`: a reader that went away is no error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  try {
    await buildProgram().parseAsync(process.argv);
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
