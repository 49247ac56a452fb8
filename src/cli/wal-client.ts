// The thin client of `dbstash wal push PATH --database NAME --socket SOCKET`, run by PostgreSQL's
// archive_command for every segment. It loads nothing but node:net and node:path (the full
// command line, config and storage clients stay in the daemon), asks the daemon to push the file,
// and exits with the daemon's answer. Returns undefined when no daemon answers at SOCKET, or the
// daemon goes away before answering: the caller then pushes synchronously itself.

import { connect } from 'node:net';
import path from 'node:path';

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const inline = args.find((a) => a.startsWith(`${name}=`));
  return inline?.slice(name.length + 1);
}

export async function pushThroughDaemon(args: string[]): Promise<number | undefined> {
  const socketPath = flag(args, '--socket');
  const database = flag(args, '--database');
  const file = args.find((a, i) => i > 1 && !a.startsWith('-') && args[i - 1] !== '--socket' && args[i - 1] !== '--database' && args[i - 1] !== '--config' && args[i - 1] !== '--output-dir' && args[i - 1] !== '--storage');
  if (!socketPath || !database || !file) return undefined;
  const quiet = args.includes('--quiet');
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let answer = '';
    let connected = false;
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      connected = true;
      socket.write(JSON.stringify({ database, path: path.resolve(file) }) + '\n');
    });
    socket.on('data', (d: string) => (answer += d));
    socket.once('error', () => {
      if (!connected) resolve(undefined);
    });
    socket.once('close', () => {
      // No daemon, or one that went away mid-request (killed, restarting): push here instead. A push
      // is idempotent, so a file the daemon did store is only confirmed.
      if (!connected || answer.trim() === '') return resolve(undefined);
      try {
        const reply = JSON.parse(answer) as { ok: boolean; name?: string; already?: boolean; error?: string; exitCode?: number };
        if (reply.ok) {
          if (!quiet) process.stdout.write(`${reply.name}: ${reply.already ? 'already archived' : 'archived'} (through the daemon)\n`);
          resolve(0);
        } else {
          process.stderr.write(`error: ${reply.error ?? 'the daemon could not archive the file'}\n`);
          resolve(reply.exitCode ?? 1);
        }
      } catch {
        resolve(undefined);
      }
    });
  });
}

/**
 * `dbstash wal get NAME PATH --socket SOCKET [--recovery]`: asks the restoring dbstash that
 * serves SOCKET. Exit 0 (written), 1 (not in the archive), or the failure; with --recovery a
 * failure is 126, so that PostgreSQL stops instead of ending recovery early. Undefined when no
 * server answers: the caller fetches the file itself.
 */
export async function getThroughServer(args: string[]): Promise<number | undefined> {
  const socketPath = flag(args, '--socket');
  const positional = args.filter((a, i) => i > 1 && !a.startsWith('-') && !['--socket', '--database', '--config', '--output-dir', '--storage', '--identity', '--passphrase-file'].includes(args[i - 1]));
  const [name, file] = positional;
  if (!socketPath || !name || !file) return undefined;
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let answer = '';
    let connected = false;
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      connected = true;
      socket.write(JSON.stringify({ name, path: path.resolve(file) }) + '\n');
    });
    socket.on('data', (d: string) => (answer += d));
    socket.once('error', () => {
      if (!connected) resolve(undefined);
    });
    socket.once('close', () => {
      if (!connected || answer.trim() === '') return resolve(undefined);
      let reply: { found: boolean; error?: string; exitCode?: number };
      try {
        reply = JSON.parse(answer) as typeof reply;
      } catch {
        return resolve(undefined);
      }
      if (reply.found) return resolve(0);
      if (!reply.error) return resolve(1);
      process.stderr.write(`error: ${reply.error}\n`);
      if (args.includes('--recovery')) {
        import('node:fs').then(({ writeFileSync }) => {
          try {
            writeFileSync('dbstash-recovery-error.txt', `${name}: ${reply.error}\n`, { mode: 0o600 });
          } catch {
            /* the server log has the message too */
          }
          resolve(126);
        }, () => resolve(126));
      } else resolve(reply.exitCode ?? 7);
    });
  });
}
