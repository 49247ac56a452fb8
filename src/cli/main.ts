#!/usr/bin/env node
// The dbstash command line: parses flags and hands each command to its module. Usage errors exit
// with code 2; every other error kind is mapped in common.ts.

// Everything is loaded after the thin path of archive_command (wal-client.ts) has had its chance.

/**
 * A password in a URL on dbstash's own command line can be read by every user of the machine (ps,
 * /proc/<pid>/cmdline). The process title is rewritten without it at once (Linux shows the new
 * title), and a warning says where the password belongs instead.
 */
async function guardCommandLine(): Promise<void> {
  const { hasUrlPassword, maskUrlCredentials } = await import('../core/secrets.js');
  const args = process.argv.slice(2);
  if (!args.some(hasUrlPassword)) return;
  process.title = ['dbstash', ...args.map(maskUrlCredentials)].join(' ');
  if (args.includes('--quiet')) return;
  process.stderr.write(
    'warning: a password in a URL on the command line is visible to every user of this machine (ps); ' +
      'put it in the environment (PGPASSWORD, DATABASE_URL), ~/.pgpass or the config file instead\n',
  );
}

const TOOL_COMMANDS = new Set(['backup', 'restore', 'verify', 'export', 'show', 'daemon', 'fleet', 'wal', 'dashboard']);

async function main(): Promise<void> {
  // archive_command / restore_command through a dbstash server: nothing else is loaded (wal-client.ts).
  const sub = process.argv[3];
  if (process.argv[2] === 'wal' && (sub === 'push' || sub === 'get') && process.argv.some((a) => a === '--socket' || a.startsWith('--socket='))) {
    const client = await import('./wal-client.js');
    const code = await (sub === 'push' ? client.pushThroughDaemon : client.getThroughServer)(process.argv.slice(2));
    if (code !== undefined) {
      process.exitCode = code;
      return;
    }
  }
  // Commands that start tools probe setpriv in the background while the rest loads (process.ts).
  if (TOOL_COMMANDS.has(process.argv[2])) void import('../engines/process.js').then((m) => m.probeChildGuard());
  await guardCommandLine();
  const [{ CommanderError }, { ExitCode }, { buildProgram }] = await Promise.all([
    import('commander'),
    import('../core/errors.js'),
    import('./program.js'),
    import('../pipeline/compress.js'),
    import('../pipeline/age.js'),
  ]);
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
