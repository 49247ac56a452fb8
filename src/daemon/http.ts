// The daemon's HTTP endpoints: GET /healthz (200 when healthy, 503 with the problems otherwise,
// JSON either way) and GET /metrics (Prometheus text format). What they show: database names as
// the config keys them, backup and job times, results, sizes and counts — never a URL, a host
// name, credentials or a file path (error texts, which may hold those, stay in the log). Bound to
// loopback unless daemon.exposeEndpoints says otherwise (a network address is refused without it).

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../core/errors.js';
import type { Registry } from 'prom-client';

export interface Health {
  healthy: boolean;
  [key: string]: unknown;
}

/** host:port of daemon.listen (or of `where`, e.g. dashboard.listen, with its usual port). */
export function parseListen(listen: string, where = 'daemon.listen', example = '127.0.0.1:9877'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ConfigError(`${where}: "${listen}" is not host:port`, { hint: `e.g. ${example} (port 0 picks a free one)` });
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

const LOOPBACK = /^(127(\.\d{1,3}){3}|::1|localhost)$/i;

export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

export async function startHttp(
  listen: string,
  health: () => Promise<Health>,
  registry: Registry,
  opts: { expose?: boolean; warn?: (m: string) => void } = {},
): Promise<{ url: string; close(): Promise<void> }> {
  const { host, port } = parseListen(listen);
  if (!isLoopback(host)) {
    if (!opts.expose) {
      throw new ConfigError(`daemon.listen: ${listen} is reachable from other machines`, {
        hint: '/healthz and /metrics show database names, backup ages, sizes and job results; set daemon.exposeEndpoints: true to serve them there, or listen on 127.0.0.1',
      });
    }
    opts.warn?.(`/healthz and /metrics are served on ${listen} (daemon.exposeEndpoints): anyone who reaches it sees database names, backup ages, sizes and job results`);
  }
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const reply = async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return res.writeHead(405, { allow: 'GET, HEAD' }).end();
      if (url === '/healthz') {
        const h = await health();
        return res.writeHead(h.healthy ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h, null, 2) + '\n');
      }
      if (url === '/metrics') return res.writeHead(200, { 'content-type': registry.contentType }).end(await registry.metrics());
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz or /metrics\n');
    };
    reply().catch((err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`));
  });
  server.listen(port, host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', (err) => reject(new ConfigError(`daemon.listen: cannot listen on ${listen}: ${err.message}`, { hint: 'choose another port in daemon.listen' })));
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shown}:${address.port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
