// The dashboard's HTTP server (hono on node:http, or node:https with the configured certificate):
// pages, the JSON API under /api/v1, its event streams, and the security around them:
//   - every route but /login and /static needs a session cookie or an API token (401 otherwise);
//   - a role decides what a principal may do (403 otherwise);
//   - every state-changing request with a session carries the session's CSRF token (header
//     X-CSRF-Token or form field _csrf), and a cross-origin Origin is refused;
//   - cookies are HttpOnly and SameSite=Strict (and Secure over TLS); failed logins are limited;
//   - a strict Content-Security-Policy: scripts, styles and connections only from dbstash itself.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Hono, type Context as HonoContext } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { streamSSE } from 'hono/streaming';
import { serve, type ServerType } from '@hono/node-server';
import { stringify } from 'yaml';
import type { ConfigFile, DashboardConfig } from '../config/schema.js';
import { ConfigError, DbstashError } from '../core/errors.js';
import { isLoopback, parseListen } from '../daemon/http.js';
import { parseDuration } from '../core/format.js';
import { maskSecrets, maskUrlCredentials } from '../core/secrets.js';
import { redactHttpUrl } from '../notify/channels.js';
import { can, LoginLimiter, sameSecret, Sessions, tokenHash, verifyPassword, type Permission, type Principal, type Session } from './auth.js';
import type { Catalog } from './data.js';
import type { JobKind, JobParams, WebJobs } from './jobs.js';
import { activityPage, backupPage, databasePage, errorPage, fleetPage, fleetRunPage, HISTORY_SORTS, jobPage, loginPage, overviewPage, settingsPage, sortHistory, type HistorySort } from './pages.js';
import type { FleetRunDetail, FleetView } from '../fleet/view.js';
import { APP_CSS, APP_JS } from './static.js';
import { pruneDatabase } from '../app/actions.js';
import { useToolLauncher } from '../engines/launcher.js';

export interface DashboardHost {
  config: ConfigFile;
  settings: DashboardConfig;
  catalog: Catalog;
  jobs: WebJobs;
  /** In fleet mode (queue: in the config): the workers, queues and runs of the control database. */
  fleet?: () => Promise<FleetView>;
  /** One run of the fleet with its events, in fleet mode. */
  fleetRun?: (id: string) => Promise<FleetRunDetail | undefined>;
}

type Env = { Variables: { who: Principal; session?: Session } };

const COOKIE = 'dbstash_session';
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
// A hash that no password matches, compared against for unknown users so timing tells nothing.
const DUMMY_HASH = 'scrypt$15$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';

const SECRET_KEY = /password|secret|token|passphrase|hash|key$/i;

/**
 * The configuration with every secret replaced: secret-named keys, passwords in URLs, headers
 * (an Authorization), and the path of web URLs (webhook tokens live there).
 */
export function redactConfig(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (SECRET_KEY.test(key)) return '***';
    if (/^https?:\/\//i.test(value)) return redactHttpUrl(value);
    return maskSecrets(maskUrlCredentials(value));
  }
  if (key === 'headers' && value && typeof value === 'object') return Object.fromEntries(Object.keys(value).map((k) => [k, '***']));
  if (Array.isArray(value)) return value.map((v) => redactConfig(v, key));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k)]));
  return value;
}

export function createApp(host: DashboardHost, opts: { secure: boolean }): Hono<Env> {
  const app = new Hono<Env>();
  const sessions = new Sessions(parseDuration(host.settings.sessionTimeout) ?? 8 * 3600_000);
  const limiter = new LoginLimiter();
  const wantsJson = (c: HonoContext<Env>) => c.req.path.startsWith('/api/');

  app.use('*', async (c, next) => {
    await next();
    c.header('Content-Security-Policy', CSP);
    c.header('X-Content-Type-Options', 'nosniff');
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on a form POST.
    c.header('Referrer-Policy', 'same-origin');
    c.header('X-Frame-Options', 'DENY');
    if (!c.res.headers.has('Cache-Control')) c.header('Cache-Control', 'no-store');
  });

  // uPlot (its npm package), for the charts of the database page.
  const require = createRequire(import.meta.url);
  const uplotJs = readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8');
  const uplotCss = readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8');
  app.get('/static/uplot.js', (c) => c.body(uplotJs, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'max-age=3600' }));
  app.get('/static/uplot.css', (c) => c.body(uplotCss, 200, { 'Content-Type': 'text/css; charset=utf-8', 'Cache-Control': 'max-age=3600' }));
  app.get('/static/app.js', (c) => c.body(APP_JS, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'max-age=3600' }));
  app.get('/static/app.css', (c) => c.body(APP_CSS, 200, { 'Content-Type': 'text/css; charset=utf-8', 'Cache-Control': 'max-age=3600' }));

  // Cross-origin state changes are refused whatever else the request carries.
  app.use('*', async (c, next) => {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const origin = c.req.header('Origin');
      if (origin && origin !== new URL(c.req.url).origin) return c.json({ error: 'cross-origin request refused' }, 403);
    }
    return next();
  });

  app.get('/login', (c) => c.html(loginPage()));
  app.post('/login', async (c) => {
    const form = await c.req.parseBody();
    const user = typeof form.user === 'string' ? form.user : '';
    const password = typeof form.password === 'string' ? form.password : '';
    const address = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress ?? 'unknown';
    const keys = [`user:${user}`, `addr:${address}`];
    const wait = limiter.blockedFor(keys);
    if (wait > 0) {
      host.jobs.record({ user: user || '-', action: 'login', target: 'dashboard', result: `refused: too many failed attempts from ${address}` });
      return c.html(loginPage(`Too many failed attempts: try again in ${Math.ceil(wait / 60)} min.`, user), 429);
    }
    const account = host.settings.users.find((u) => u.name === user);
    const ok = await verifyPassword(password, account?.password ?? DUMMY_HASH);
    if (!account || !ok) {
      limiter.failed(keys);
      host.jobs.record({ user: user || '-', action: 'login', target: 'dashboard', result: 'failed' });
      return c.html(loginPage('Wrong user name or password.', user), 401);
    }
    limiter.succeeded(`user:${user}`);
    const s = sessions.create(account.name, account.role);
    setCookie(c, COOKIE, s.id, { httpOnly: true, sameSite: 'Strict', secure: opts.secure, path: '/' });
    host.jobs.record({ user: account.name, action: 'login', target: 'dashboard', result: 'succeeded' });
    return c.redirect('/', 303);
  });

  // Who is asking: a bearer token, else the session cookie.
  app.use('*', async (c, next) => {
    const auth = c.req.header('Authorization');
    if (auth?.startsWith('Bearer ')) {
      const hash = tokenHash(auth.slice(7).trim());
      const token = host.settings.tokens.find((t) => sameSecret(t.hash, hash));
      if (!token) return c.json({ error: 'invalid API token' }, 401);
      c.set('who', { name: `token:${token.name}`, role: token.role, via: 'token' });
      return next();
    }
    const session = sessions.get(getCookie(c, COOKIE));
    if (!session) {
      if (wantsJson(c)) return c.json({ error: 'authentication required: log in, or send Authorization: Bearer <token>' }, 401);
      return c.redirect('/login', 303);
    }
    c.set('who', { name: session.user, role: session.role, via: 'session' });
    c.set('session', session);
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      let token = c.req.header('X-CSRF-Token');
      if (!token && (c.req.header('Content-Type') ?? '').includes('application/x-www-form-urlencoded')) {
        const form = await c.req.parseBody();
        token = typeof form._csrf === 'string' ? form._csrf : undefined;
      }
      if (!token || !sameSecret(token, session.csrf)) {
        host.jobs.record({ user: session.user, action: `${c.req.method} ${c.req.path}`, target: '-', result: 'refused: missing or wrong CSRF token' });
        return wantsJson(c) ? c.json({ error: 'missing or wrong CSRF token' }, 403) : c.html(errorPage(undefined, undefined, 403, 'Missing or wrong CSRF token: reload the page.'), 403);
      }
    }
    return next();
  });

  const csrfOf = (c: HonoContext<Env>) => c.get('session')?.csrf;
  const deny = (c: HonoContext<Env>, permission: Permission) => {
    const who = c.get('who');
    if (can(who.role, permission)) return undefined;
    host.jobs.record({ user: who.name, action: `${c.req.method} ${c.req.path}`, target: '-', result: `refused: the ${who.role} role may not ${permission}` });
    return wantsJson(c) ? c.json({ error: `the ${who.role} role may not ${permission}` }, 403) : c.html(errorPage(who, csrfOf(c), 403, `The ${who.role} role may not ${permission}.`), 403);
  };

  app.post('/logout', (c) => {
    sessions.delete(c.get('session')?.id);
    deleteCookie(c, COOKIE, { path: '/' });
    return c.redirect('/login', 303);
  });

  /** ?sort=finished|size|duration|rows&order=asc|desc (newest first without them); undefined when wrong. */
  const historySort = (c: HonoContext<Env>): HistorySort | undefined => {
    const by = c.req.query('sort') ?? 'finished';
    const order = c.req.query('order') ?? 'desc';
    if (!Object.hasOwn(HISTORY_SORTS, by) || (order !== 'asc' && order !== 'desc')) return undefined;
    return { by: by as HistorySort['by'], order };
  };
  /** The fleet, or undefined (not in fleet mode, or the control database does not answer: said in the log). */
  const fleetNow = async () => host.fleet?.().catch(() => undefined);
  app.get('/', async (c) => c.html(overviewPage(c.get('who'), csrfOf(c), await host.catalog.databases(), host.jobs.list().filter((j) => j.state === 'running'), await fleetNow())));
  app.get('/fleet', async (c) => {
    if (!host.fleet) return c.html(errorPage(c.get('who'), csrfOf(c), 404, 'Not in fleet mode: the config has no queue.'), 404);
    return c.html(fleetPage(c.get('who'), csrfOf(c), await host.fleet()));
  });
  app.get('/fleet/runs/:id', async (c) => {
    const run = await host.fleetRun?.(c.req.param('id'));
    if (!run) return c.html(errorPage(c.get('who'), csrfOf(c), 404, host.fleetRun ? 'No such run in the queue (finished jobs are kept a week).' : 'Not in fleet mode: the config has no queue.'), 404);
    return c.html(fleetRunPage(c.get('who'), csrfOf(c), run));
  });
  app.get('/databases/:name', async (c) => {
    const found = await host.catalog.database(c.req.param('name'));
    if (!found) return c.html(errorPage(c.get('who'), csrfOf(c), 404, 'No such database in the config.'), 404);
    const page = Math.max(1, Number.parseInt(c.req.query('page') ?? '1', 10) || 1);
    const sort = historySort(c);
    if (!sort) return c.html(errorPage(c.get('who'), csrfOf(c), 400, `sort must be one of ${Object.keys(HISTORY_SORTS).join(', ')} and order asc or desc`), 400);
    return c.html(databasePage(c.get('who'), csrfOf(c), found.summary, found.backups, page, 50, found.calendar, sort));
  });
  app.get('/backups/:id', async (c) => {
    const found = await host.catalog.backup(c.req.param('id'));
    if (!found) return c.html(errorPage(c.get('who'), csrfOf(c), 404, 'No such backup in the stash.'), 404);
    return c.html(backupPage(c.get('who'), csrfOf(c), found.manifest, found.storages, found.records));
  });
  app.get('/activity', async (c) => c.html(activityPage(c.get('who'), csrfOf(c), host.jobs.list(), host.jobs.audit, host.fleet ? ((await fleetNow()) ?? 'unreachable') : undefined)));
  app.get('/jobs/:id', (c) => {
    const job = host.jobs.get(c.req.param('id'));
    if (!job) return c.html(errorPage(c.get('who'), csrfOf(c), 404, 'No such job (runs are kept for 100 days).'), 404);
    return c.html(jobPage(c.get('who'), csrfOf(c), job));
  });
  app.get('/settings', (c) => deny(c, 'settings') ?? c.html(settingsPage(c.get('who'), csrfOf(c), stringify(redactConfig(host.config)))));

  // The JSON API: the same data and actions as the pages.
  app.get('/api/v1/databases', async (c) => c.json({ databases: await host.catalog.databases() }));
  app.get('/api/v1/databases/:name', async (c) => {
    const found = await host.catalog.database(c.req.param('name'));
    return found ? c.json(found.summary) : c.json({ error: 'no such database in the config' }, 404);
  });
  app.get('/api/v1/databases/:name/calendar', async (c) => {
    const found = await host.catalog.database(c.req.param('name'));
    return found ? c.json({ days: found.calendar }) : c.json({ error: 'no such database in the config' }, 404);
  });
  app.get('/api/v1/databases/:name/backups', async (c) => {
    const found = await host.catalog.database(c.req.param('name'));
    if (!found) return c.json({ error: 'no such database in the config' }, 404);
    const limit = Number(c.req.query('limit') ?? 100);
    const offset = Number(c.req.query('offset') ?? 0);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000 || !Number.isInteger(offset) || offset < 0) {
      return c.json({ error: 'limit must be a whole number from 1 to 1000 and offset one from 0' }, 400);
    }
    const sort = historySort(c);
    if (!sort) return c.json({ error: `sort must be one of ${Object.keys(HISTORY_SORTS).join(', ')} and order asc or desc` }, 400);
    return c.json({ total: found.backups.length, backups: sortHistory(found.backups, sort).slice(offset, offset + limit) });
  });
  app.get('/api/v1/backups/:id', async (c) => {
    const found = await host.catalog.backup(c.req.param('id'));
    return found ? c.json(found) : c.json({ error: 'no such backup in the stash' }, 404);
  });
  /** Starts a job (or finds the one running for the database) and answers 202 (or 409) with it. */
  const startJob = (c: HonoContext<Env>, database: string, kind: JobKind, target: string, params: JobParams = {}) => {
    const who = c.get('who').name;
    const { job, started } = host.jobs.start(database, kind, who, params);
    if (started) host.jobs.record({ user: who, action: kind, target, result: `started ${job.id}` });
    return c.json({ job: { id: job.id, database: job.database, kind: job.kind, ...(job.backupId ? { backupId: job.backupId } : {}), state: job.state } }, started ? 202 : 409);
  };
  /** The backup of the route and the configured database it belongs to, or the answer refusing it. */
  const backupOfRoute = async (c: HonoContext<Env>, byHand: string) => {
    const found = await host.catalog.backup(c.req.param('id') ?? '');
    if (!found) return { refused: c.json({ error: 'no such backup in the stash' }, 404) };
    const database = host.catalog.databaseOf(found.manifest);
    if (!database) return { refused: c.json({ error: `the backup belongs to no database in the config: ${byHand}` }, 409) };
    return { found, database };
  };
  const action = (kind: JobKind, permission: Permission) => async (c: HonoContext<Env>) => {
    const refused = deny(c, permission);
    if (refused) return refused;
    const name = c.req.param('name') ?? '';
    if (!Object.hasOwn(host.config.databases, name)) return c.json({ error: 'no such database in the config' }, 404);
    return startJob(c, name, kind, name);
  };
  app.post('/api/v1/databases/:name/backup', action('backup', 'backup'));
  app.post('/api/v1/databases/:name/verify', action('verify', 'verify'));
  app.post('/api/v1/backups/:id/verify', async (c) => {
    const refused = deny(c, 'verify');
    if (refused) return refused;
    const of = await backupOfRoute(c, 'drill it with `dbstash verify --drill`');
    if (of.refused) return of.refused;
    return startJob(c, of.database, 'verify', of.found.manifest.id, { backupId: of.found.manifest.id });
  });
  // Restore: {"to", "dryRun": true} starts the plan as a job (it verifies the backup in full, which
  // can take as long as a restore: not something to hold a request open for); the plan is the job's
  // result. {"to", "confirm": "<target database>"} then starts the restore.
  app.post('/api/v1/backups/:id/restore', async (c) => {
    const refused = deny(c, 'restore');
    if (refused) return refused;
    const of = await backupOfRoute(c, 'restore it with `dbstash restore`');
    if (of.refused) return of.refused;
    const { found, database } = of;
    const body = (await c.req.json().catch(() => ({}))) as { to?: unknown; dryRun?: unknown; confirm?: unknown };
    if (typeof body.to !== 'string' || !body.to.trim()) return c.json({ error: 'say where to restore: "to" is a database from the config or a database URL' }, 400);
    if (body.dryRun === true) return startJob(c, database, 'restore-plan', `${found.manifest.id} → ${body.to}`, { backupId: found.manifest.id, to: body.to });
    if (typeof body.confirm !== 'string' || !body.confirm) return c.json({ error: 'a restore needs "confirm": the target database\'s name, typed (ask for the plan with "dryRun": true first)' }, 400);
    return startJob(c, database, 'restore', `${found.manifest.id} → ${body.to}`, { backupId: found.manifest.id, to: body.to, typed: body.confirm });
  });
  // What prune would remove under the retention policy: a read, for every role (the policy and its
  // consequences are no secret from someone who may see the backups). Pruning itself is for admins:
  // POST {"confirm": true}; a POST without it answers the same preview, as before.
  const prunePreview = async (name: string) => {
    const reports = await pruneDatabase(host.config, host.config.databases[name], { dryRun: true, warn: () => {} });
    return {
      storages: reports.map(({ storage, report }) => ({
        storage,
        policy: report.series.map((s) => s.policy).join('; '),
        remove: report.backups.filter((b) => !b.keep).map((b) => ({ id: b.id, reasons: b.reasons })),
        keep: report.backups.filter((b) => b.keep).map((b) => ({ id: b.id, reasons: b.reasons })),
        bytesFreed: report.bytesFreed,
      })),
    };
  };
  app.get('/api/v1/databases/:name/prune', async (c) => {
    const name = c.req.param('name');
    if (!Object.hasOwn(host.config.databases, name)) return c.json({ error: 'no such database in the config' }, 404);
    return c.json(await prunePreview(name));
  });
  app.post('/api/v1/databases/:name/prune', async (c) => {
    const refused = deny(c, 'prune');
    if (refused) return refused;
    const name = c.req.param('name');
    if (!Object.hasOwn(host.config.databases, name)) return c.json({ error: 'no such database in the config' }, 404);
    const body = (await c.req.json().catch(() => ({}))) as { confirm?: unknown };
    if (body.confirm !== true) return c.json(await prunePreview(name));
    return startJob(c, name, 'prune', name);
  });
  app.get('/api/v1/jobs', (c) => c.json({ jobs: host.jobs.list().map(({ events: _events, ...j }) => j) }));
  app.get('/api/v1/jobs/:id', (c) => {
    const job = host.jobs.get(c.req.param('id'));
    return job ? c.json(job) : c.json({ error: 'no such job' }, 404);
  });
  app.get('/api/v1/jobs/:id/events', (c) => {
    const job = host.jobs.get(c.req.param('id'));
    if (!job) return c.json({ error: 'no such job' }, 404);
    return streamSSE(c, async (stream) => {
      for (const e of job.events) await stream.writeSSE({ event: 'event', data: JSON.stringify(e) });
      if (job.state !== 'running') {
        await stream.writeSSE({ event: 'end', data: JSON.stringify({ ...job, events: undefined }) });
        return;
      }
      await new Promise<void>((resolve) => {
        // Writes go out in order, and the stream ends only after the "end" event is written.
        let writing = Promise.resolve();
        const listener = (m: { type: 'event' | 'end'; event?: unknown; job?: unknown }) => {
          writing = writing
            .then(() => stream.writeSSE({ event: m.type, data: JSON.stringify(m.type === 'event' ? m.event : { ...(m.job as object), events: undefined }) }))
            .catch(() => {});
          if (m.type === 'end') void writing.then(done);
        };
        const done = () => {
          host.jobs.off(`job:${job.id}`, listener);
          resolve();
        };
        host.jobs.on(`job:${job.id}`, listener);
        stream.onAbort(done);
      });
    });
  });
  app.get('/api/v1/fleet', async (c) => (host.fleet ? c.json(await host.fleet()) : c.json({ error: 'not in fleet mode: the config has no queue' }, 404)));
  app.get('/api/v1/fleet/runs/:id', async (c) => {
    if (!host.fleetRun) return c.json({ error: 'not in fleet mode: the config has no queue' }, 404);
    const run = await host.fleetRun(c.req.param('id'));
    return run ? c.json(run) : c.json({ error: 'no such run in the queue (finished jobs are kept a week)' }, 404);
  });
  app.get('/api/v1/audit', (c) => c.json({ audit: host.jobs.audit }));

  app.notFound((c) => (wantsJson(c) ? c.json({ error: 'no such route' }, 404) : c.html(errorPage(undefined, undefined, 404, 'Not found.'), 404)));
  app.onError((err, c) => {
    const message = maskSecrets(err.message);
    const status = err instanceof DbstashError && err.kind === 'usage' ? 400 : 500;
    return wantsJson(c) ? c.json({ error: message }, status) : c.html(errorPage(undefined, undefined, status, message), status);
  });
  return app;
}

const parseDashboardListen = (listen: string) => parseListen(listen, 'dashboard.listen', '127.0.0.1:8484');

/**
 * Refuses what would expose backups: no users to log in with; a non-loopback address without TLS
 * (passwords and session cookies in clear text), unless --insecure-http says TLS ends in front.
 */
export function checkExposure(settings: DashboardConfig, listen: string, insecureHttp: boolean): void {
  if (settings.users.length === 0 && settings.tokens.length === 0) {
    throw new ConfigError('the dashboard has no users: nobody could log in', { hint: 'add one with `dbstash user add NAME --role admin` and put the printed entry under dashboard.users' });
  }
  const { host } = parseDashboardListen(listen);
  if (!isLoopback(host) && !settings.tls && !insecureHttp) {
    throw new ConfigError(`the dashboard would listen on ${listen}, reachable from other machines, without TLS: passwords and session cookies would cross the network in clear text`, {
      hint: 'set dashboard.tls: { cert, key }, or listen on 127.0.0.1 behind a reverse proxy that ends TLS (then --insecure-http says so)',
    });
  }
}

export async function startDashboard(host: DashboardHost, opts: { listen: string; insecureHttp: boolean }): Promise<{ url: string; close(): Promise<void> }> {
  // Runs for days: its tools start from a small launcher process, not from a fork of this one.
  useToolLauncher();
  checkExposure(host.settings, opts.listen, opts.insecureHttp);
  host.catalog.start();
  const { host: hostname, port } = parseDashboardListen(opts.listen);
  const tls = host.settings.tls;
  const app = createApp(host, { secure: !!tls });
  const server: ServerType = await new Promise<ServerType>((resolve, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        hostname,
        port,
        ...(tls ? { createServer: createHttpsServer, serverOptions: { cert: readFileSync(tls.cert), key: readFileSync(tls.key) } } : {}),
      },
      () => resolve(s),
    );
    s.once('error', reject);
  }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') {
      const why = err.code === 'EADDRINUSE' ? 'the address is in use (another dashboard, or another program)' : err.code === 'EACCES' ? 'this user may not listen there' : 'no interface of this machine has that address';
      throw new ConfigError(`the dashboard cannot listen on ${opts.listen}: ${why}`, { hint: 'choose another address with --listen or dashboard.listen' });
    }
    throw err;
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `${tls ? 'https' : 'http'}://${shown}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
