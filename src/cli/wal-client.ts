// The thin clients of the local WAL sockets, run by PostgreSQL for every file:
//   `dbstash wal push PATH --database NAME --socket SOCKET` (archive_command) asks the daemon;
//   `dbstash wal get NAME PATH --socket SOCKET [--recovery]` (restore_command) asks the restore
//   that serves SOCKET.
// They load nothing but node:net and node:path (the command line, config and storage clients stay
// in the server). Each returns undefined when no server answers at SOCKET, or the server goes away
// before answering: the caller then does the work itself, in the same process. Both are
// idempotent, so a file the server did handle is only confirmed.

import { connect } from 'node:net';
import path from 'node:path';

/** The flags of `wal push` and `wal get` that take a value (so their values are not positionals). */
const VALUE_FLAGS = new Set([
  '--database', '--socket', '--config', '--env', '--log-file', '--output-dir', '--storage',
  '--compression', '--level', '--recipient', '--recipients-file', '--passphrase-file', '--signing-key',
  '--identity', '--verify-key',
]);

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const inline = args.find((a) => a.startsWith(`${name}=`));
  return inline?.slice(name.length + 1);
}

/** The arguments after `wal <sub>` that are neither flags nor a flag's value. */
function positionals(args: string[]): string[] {
  return args.filter((a, i) => i > 1 && !a.startsWith('-') && !VALUE_FLAGS.has(args[i - 1]));
}

/** One request line, one answer line; undefined when nobody answers there. */
function ask(socketPath: string, request: unknown): Promise<unknown> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let answer = '';
    let connected = false;
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      connected = true;
      socket.write(JSON.stringify(request) + '\n');
    });
    socket.on('data', (d: string) => (answer += d));
    socket.once('error', () => {
      if (!connected) resolve(undefined);
    });
    socket.once('close', () => {
      if (!connected || answer.trim() === '') return resolve(undefined);
      try {
        resolve(JSON.parse(answer));
      } catch {
        resolve(undefined);
      }
    });
  });
}

export async function pushThroughDaemon(args: string[]): Promise<number | undefined> {
  const socketPath = flag(args, '--socket');
  const database = flag(args, '--database');
  const [file] = positionals(args);
  if (!socketPath || !database || !file) return undefined;
  const reply = (await ask(socketPath, { database, path: path.resolve(file) })) as { ok: boolean; name?: string; already?: boolean; error?: string; exitCode?: number } | undefined;
  if (!reply) return undefined;
  if (!reply.ok) {
    process.stderr.write(`error: ${reply.error ?? 'the daemon could not archive the file'}\n`);
    return reply.exitCode ?? 1;
  }
  if (!args.includes('--quiet')) process.stdout.write(`${reply.name}: ${reply.already ? 'already archived' : 'archived'} (through the daemon)\n`);
  return 0;
}

/**
 * Exit 0 (written), 1 (not in the archive), or the failure; with --recovery a failure is 126, so
 * that PostgreSQL stops instead of ending recovery early, and the reason is left in the data
 * directory for the restore.
 */
export async function getThroughServer(args: string[]): Promise<number | undefined> {
  const socketPath = flag(args, '--socket');
  const [name, file] = positionals(args);
  if (!socketPath || !name || !file) return undefined;
  const reply = (await ask(socketPath, { name, path: path.resolve(file) })) as { found: boolean; error?: string; exitCode?: number } | undefined;
  if (!reply) return undefined;
  if (reply.found) return 0;
  if (!reply.error) return 1;
  process.stderr.write(`error: ${reply.error}\n`);
  if (!args.includes('--recovery')) return reply.exitCode ?? 7;
  const { stopRecovery } = await import('../wal/recovery-error.js');
  return stopRecovery(name, reply.error);
}
