// Delivery channels. Each sends one message once and throws on failure; retries and event
// filtering live in notifier.ts. HTTP channels treat any non-2xx answer as a failure.

import type { Transporter } from 'nodemailer';
import type { NotificationConfig } from '../config/schema.js';
import { subjectOf, textOf, type NotifyMessage } from './message.js';

export type Send = (message: NotifyMessage, signal: AbortSignal) => Promise<void>;

async function request(url: string, init: RequestInit, signal: AbortSignal): Promise<void> {
  const res = await fetch(url, { ...init, signal, redirect: 'follow' });
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${redactHttpUrl(url)} answered ${res.status} ${res.statusText}`.trim());
}

/** Webhook URLs often carry their token in the path: keep only the origin in messages. */
export function redactHttpUrl(url: string): string {
  try {
    return `${new URL(url).origin}/…`;
  } catch {
    return '(invalid URL)';
  }
}

function postJson(url: string, body: unknown, signal: AbortSignal, headers: Record<string, string> = {}): Promise<void> {
  return request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) }, signal);
}

export function channelFor(config: NotificationConfig): Send {
  switch (config.type) {
    case 'webhook':
      if (config.method !== 'POST') return (_m, signal) => request(config.url, { method: config.method, headers: config.headers }, signal);
      return (m, signal) => postJson(config.url, { ...m, text: textOf(m) }, signal, config.headers);
    case 'slack':
      return (m, signal) => postJson(config.url, { text: textOf(m) }, signal);
    case 'discord':
      // Discord rejects content over 2000 characters.
      return (m, signal) => postJson(config.url, { content: textOf(m).slice(0, 2000) }, signal);
    case 'email': {
      const smtp = config.smtp;
      // nodemailer is loaded on the first mail, not at start: it costs every command ~60 ms of CPU.
      let transport: Promise<Transporter> | undefined;
      const connect = async () => {
        const { default: nodemailer } = await import('nodemailer');
        return nodemailer.createTransport(
          smtp.url ?? {
            host: smtp.host ?? 'localhost',
            port: smtp.port ?? (smtp.secure ? 465 : 587),
            secure: smtp.secure ?? false,
            auth: smtp.user ? { user: smtp.user, pass: smtp.password ?? '' } : undefined,
          },
        );
      };
      return async (m, signal) => {
        const sending = (transport ??= connect()).then((t) => t.sendMail({ from: config.from, to: config.to, subject: subjectOf(m), text: textOf(m) }));
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('mail delivery timed out'));
          signal.addEventListener('abort', onAbort, { once: true });
          sending.then(
            () => resolve(),
            (err: unknown) => reject(err),
          ).finally(() => signal.removeEventListener('abort', onAbort));
        });
      };
    }
  }
}

export function describeChannel(config: NotificationConfig, index: number): string {
  if (config.name) return config.name;
  const where = config.type === 'email' ? (Array.isArray(config.to) ? config.to.join(',') : config.to) : redactHttpUrl(config.url);
  return `${config.type}#${index + 1} ${where}`;
}
