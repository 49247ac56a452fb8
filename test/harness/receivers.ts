/**
 * Recording receivers for notification tests: a webhook endpoint (HTTP) and a
 * mail server (SMTP, no auth, no TLS), each on a free port of 127.0.0.1. They
 * keep everything they receive, in arrival order, and can wait for the n-th.
 * Neither keeps the process alive, so a forgotten stop() cannot hang a test run.
 */
import { once } from 'node:events';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

const DEFAULT_WAIT_MS = 5_000;

/** An append-only list whose readers can wait until it holds `count` items. */
class Recorder<T> {
  readonly items: T[] = [];
  private readonly listeners = new Set<() => void>();

  constructor(private readonly what: string) {}

  add(item: T): void {
    this.items.push(item);
    for (const listener of this.listeners) listener();
  }

  waitFor(count: number, timeoutMs: number): Promise<T[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.items.length < count) return;
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve([...this.items]);
      };
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`[harness/receivers] expected ${count} ${this.what} within ${timeoutMs} ms, got ${this.items.length}`));
      }, timeoutMs);
      this.listeners.add(check);
      check();
    });
  }
}

export interface ReceivedRequest {
  method: string;
  /** Path and query string, e.g. /hooks/backup?x=1 */
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface WebhookReceiver {
  /** http://127.0.0.1:<port> */
  url: string;
  /** Every request received, failed ones included. */
  requests: ReceivedRequest[];
  /** Answers the next `count` requests with `status` instead of 200. */
  failNext(count: number, status?: number): void;
  /** Resolves with all requests once at least `count` have arrived; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedRequest[]>;
  stop(): Promise<void>;
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const recorder = new Recorder<ReceivedRequest>('webhook requests');
  let failures = { left: 0, status: 500 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      recorder.add({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const status = failures.left > 0 ? failures.status : 200;
      if (failures.left > 0) failures.left--;
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'failing on purpose');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  server.unref();
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: recorder.items,
    failNext(count, status = 500) {
      failures = { left: count, status };
    },
    waitFor: (count, timeoutMs = DEFAULT_WAIT_MS) => recorder.waitFor(count, timeoutMs),
    async stop() {
      if (!server.listening) return;
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

export interface ReceivedMail {
  /** Envelope sender (MAIL FROM). */
  from: string;
  /** Envelope recipients (RCPT TO). */
  to: string[];
  /** The message as sent: headers and body. */
  raw: string;
}

export interface SmtpReceiver {
  host: '127.0.0.1';
  port: number;
  /** Every message received. */
  messages: ReceivedMail[];
  /** Resolves with all messages once at least `count` have arrived; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedMail[]>;
  stop(): Promise<void>;
}

export async function startSmtpReceiver(): Promise<SmtpReceiver> {
  const recorder = new Recorder<ReceivedMail>('mails');
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    closeTimeout: 500,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const { mailFrom, rcptTo } = session.envelope;
        recorder.add({
          from: mailFrom ? mailFrom.address : '',
          to: rcptTo.map((rcpt) => rcpt.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });
  smtp.listen(0, '127.0.0.1');
  await once(smtp.server, 'listening');
  smtp.server.unref();
  const { port } = smtp.server.address() as AddressInfo;
  let stopped = false;
  return {
    host: '127.0.0.1',
    port,
    messages: recorder.items,
    waitFor: (count, timeoutMs = DEFAULT_WAIT_MS) => recorder.waitFor(count, timeoutMs),
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise<void>((resolve) => smtp.close(resolve));
    },
  };
}
