#!/usr/bin/env node
// The dbstash command line: parses flags and hands each command to its module. Usage errors exit
// with code 2; every other error kind is mapped in common.ts.

import { CommanderError } from 'commander';
import { ExitCode } from '../core/errors.js';
import '../pipeline/compress.js';
import '../pipeline/age.js';
import { buildProgram } from './program.js';
import { hasUrlPassword, maskUrlCredentials } from '../core/secrets.js';

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
