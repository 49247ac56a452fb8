/**
 * An HTTP proxy in front of an S3 endpoint that loses answers: a request matching a rule is
 * forwarded whole and served by the upstream server (the object IS stored), and then the
 * connection to the client is cut before any byte of the answer reaches it. The client sees a
 * reset connection and retries, as the AWS SDK does; with If-None-Match its retry meets the object
 * its first try stored. Every other request passes through untouched.
 */
import http from 'node:http';
import type net from 'node:net';

export interface LostAnswerRule {
  /** e.g. (req) => req.method === 'PUT' && req.path.endsWith('.manifest.json') */
  when: (req: { method: string; path: string; query: string }) => boolean;
  /** How many matching requests lose their answer (default 1). */
  times?: number;
}

export interface LostAnswerProxy {
  endpoint: string;
  /** Requests whose answer was lost, as "METHOD path?query". */
  lost(): string[];
  /** Every request seen, as "METHOD path?query". */
  seen(): string[];
  close(): Promise<void>;
}

export async function startLostAnswerProxy(upstream: string, rules: LostAnswerRule[]): Promise<LostAnswerProxy> {
  const target = new URL(upstream);
  const left = rules.map((r) => ({ rule: r, left: r.times ?? 1 }));
  const lost: string[] = [];
  const seen: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const line = `${req.method} ${url.pathname}${url.search}`;
    seen.push(line);
    const hit = left.find((r) => r.left > 0 && r.rule.when({ method: req.method ?? '', path: decodeURIComponent(url.pathname), query: url.search }));
    if (hit) hit.left--;
    const forward = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
      (answer) => {
        if (hit) {
          // Served upstream, answer dropped: read it to the end, then cut the client off.
          answer.resume();
          answer.on('end', () => {
            lost.push(line);
            req.socket.destroy();
          });
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on('error', () => req.socket.destroy());
    req.pipe(forward);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    lost: () => [...lost],
    seen: () => [...seen],
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
