// `dbstash dashboard`: the web dashboard and its JSON API over the configured databases and
// their stash, without running schedules (the daemon serves the same with dashboard.listen).
// `dbstash user add` and `dbstash token create` print the config entries for users and API tokens:
// an scrypt hash of the password, the SHA-256 of the token. Neither writes the config itself, so a
// hand-kept config (and its comments) stays as it is.

import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { commonOptions, runCommand, type CommonOptions } from './common.js';

interface DashboardOptions extends CommonOptions {
  listen?: string;
  insecureHttp?: boolean;
}

const ROLE_HELP = 'viewer (read only), operator (also back up and drill), admin (also prune, restore, settings)';

async function readPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    if (!fromStdin) throw new UsageError('no terminal to ask for the password on', { hint: 'pipe it in with --password-stdin' });
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  const ask = (prompt: string) =>
    new Promise<string>((resolve, reject) => {
      process.stderr.write(prompt);
      const stdin = process.stdin;
      stdin.setRawMode(true);
      stdin.resume();
      let value = '';
      const onData = (d: Buffer) => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.setRawMode(false);
            stdin.pause();
            stdin.off('data', onData);
            process.stderr.write('\n');
            return resolve(value);
          }
          if (ch === '\u0003') {
            stdin.setRawMode(false);
            stdin.off('data', onData);
            return reject(new UsageError('interrupted'));
          }
          if (ch === '\u007f') value = value.slice(0, -1);
          else value += ch;
        }
      };
      stdin.on('data', onData);
    });
  const first = await ask('Password: ');
  const again = await ask('Again: ');
  if (first !== again) throw new UsageError('the two passwords differ');
  return first;
}

function checkRole(role: string | undefined): 'viewer' | 'operator' | 'admin' {
  if (role === 'viewer' || role === 'operator' || role === 'admin') return role;
  throw new UsageError(`--role must be viewer, operator or admin, got "${role ?? ''}"`, { hint: ROLE_HELP });
}

export function registerDashboard(program: Command): void {
  const cmd = program
    .command('dashboard')
    .description('serve the web dashboard and its JSON API over the configured databases (no schedules run)')
    .option('--listen <host:port>', 'address to listen on (default: dashboard.listen, else 127.0.0.1:8484)')
    .option('--insecure-http', 'allow plain HTTP on an address other machines reach (TLS ends in a reverse proxy in front)');
  commonOptions(cmd, { codes: [130] });
  cmd.addHelpText(
    'after',
    `
The config names the users (and API tokens) and, for an address other machines reach, TLS:
  dashboard:
    listen: 127.0.0.1:8484
    users:
      - { name: alice, role: admin, password: "scrypt$…" }     # dbstash user add alice --role admin
    tokens:
      - { name: ci, role: operator, hash: "sha256:…" }          # dbstash token create ci --role operator
    tls: { cert: /etc/dbstash/tls.crt, key: /etc/dbstash/tls.key }

Examples:
  dbstash dashboard --config /etc/dbstash/dbstash.yaml
  curl -s -H "Authorization: Bearer $DBSTASH_TOKEN" http://127.0.0.1:8484/api/v1/databases
See docs/dashboard.md.`,
  );
  cmd.action((opts: DashboardOptions) =>
    runCommand(opts, async (ctx) => {
      const { createWebHost } = await import('../web/host.js');
      const { startDashboard } = await import('../web/server.js');
      const host = createWebHost(ctx);
      const listen = opts.listen ?? host.settings.listen;
      const web = await startDashboard(host, { listen, insecureHttp: !!opts.insecureHttp });
      ctx.out.info(`dbstash dashboard: listening on ${web.url} (${host.settings.users.length} users, ${host.settings.tokens.length} API tokens)`);
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) return resolve();
        ctx.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      await web.close();
      await host.close();
      ctx.out.info('dbstash dashboard stopped');
      return ExitCode.ok;
    }),
  );
}

export function registerUser(program: Command): void {
  const user = program.command('user').description('users of the dashboard');
  user.addHelpText('after', '\nExamples:\n  dbstash user add alice --role admin');
  const add = user
    .command('add')
    .description('print a dashboard user entry (name, role, scrypt hash of the password) for the config')
    .argument('<name>', 'the user name (letters, digits, . _ @ -)')
    .requiredOption('--role <role>', ROLE_HELP)
    .option('--password-stdin', 'read the password from stdin (else it is asked for on the terminal)');
  commonOptions(add);
  add.addHelpText('after', '\nExamples:\n  dbstash user add alice --role admin\n  printf %s "$PASSWORD" | dbstash user add ci --role operator --password-stdin');
  add.action((name: string, opts: CommonOptions & { role?: string; passwordStdin?: boolean }) =>
    runCommand(opts, async (ctx) => {
      if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) throw new UsageError(`"${name}" is not a valid user name`, { hint: 'letters, digits and . _ @ -, at most 64' });
      const role = checkRole(opts.role);
      const password = await readPassword(!!opts.passwordStdin);
      if (password.length < 12) throw new UsageError('the password is shorter than 12 characters', { hint: 'choose a longer one (a passphrase of a few words)' });
      const { hashPassword } = await import('../web/auth.js');
      const entry = { name, role, password: await hashPassword(password) };
      ctx.out.result(entry, () => `# add under dashboard.users in the config:\n- { name: ${name}, role: ${role}, password: "${entry.password}" }`);
      return ExitCode.ok;
    }),
  );
}

export function registerToken(program: Command): void {
  const token = program.command('token').description('API tokens of the dashboard');
  token.addHelpText('after', '\nExamples:\n  dbstash token create ci --role operator');
  const create = token
    .command('create')
    .description('make an API token: the token is printed once; the config keeps only its SHA-256')
    .argument('<name>', 'what the token is for (shown in the audit log)')
    .requiredOption('--role <role>', ROLE_HELP);
  commonOptions(create);
  create.addHelpText('after', '\nExamples:\n  dbstash token create ci --role operator');
  create.action((name: string, opts: CommonOptions & { role?: string }) =>
    runCommand(opts, async (ctx) => {
      const role = checkRole(opts.role);
      const { newToken } = await import('../web/auth.js');
      const { token: value, hash } = newToken();
      ctx.out.result({ name, role, token: value, hash }, () =>
        [`token (shown once; keep it in a secret store): ${value}`, '# add under dashboard.tokens in the config:', `- { name: ${name}, role: ${role}, hash: "${hash}" }`].join('\n'),
      );
      return ExitCode.ok;
    }),
  );
}
