// Sends a message to every configured channel that wants its event, each with retries and
// doubling delays. It never throws: a failing channel is logged and reported, because a
// notification problem must never turn a good backup into a failed one.

import { parseDuration } from '../core/format.js';
import type { NotificationConfig, NotifyEventKind } from '../config/schema.js';
import { channelFor, describeChannel, type Send } from './channels.js';
import type { NotifyMessage } from './message.js';
import { maskDeep } from '../core/secrets.js';

export interface Delivery {
  channel: string;
  ok: boolean;
  attempts: number;
  error?: string;
}

export interface Notifier {
  notify(message: NotifyMessage): Promise<Delivery[]>;
  readonly channels: number;
}

const DEFAULT_EVENTS: NotifyEventKind[] = ['failure', 'verify-failed', 'degraded', 'stale', 'anomaly', 'skipped', 'archive'];

export function eventsOf(config: NotificationConfig): NotifyEventKind[] {
  if (config.events) return config.events;
  return config.type === 'webhook' && config.method !== 'POST' ? ['success'] : DEFAULT_EVENTS;
}

interface Channel {
  name: string;
  events: NotifyEventKind[];
  send: Send;
  retries: number;
  retryDelayMs: number;
  timeoutMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function createNotifier(configs: NotificationConfig[], log: { warn(message: string): void; debug?(message: string): void }): Notifier {
  const channels: Channel[] = configs.map((c, i) => ({
    name: describeChannel(c, i),
    events: eventsOf(c),
    send: channelFor(c),
    retries: c.retries,
    retryDelayMs: parseDuration(c.retryDelay) ?? 1000,
    timeoutMs: parseDuration(c.timeout) ?? 10_000,
  }));

  async function deliver(ch: Channel, message: NotifyMessage): Promise<Delivery> {
    let error = '';
    for (let attempt = 1; attempt <= ch.retries + 1; attempt++) {
      try {
        await ch.send(message, AbortSignal.timeout(ch.timeoutMs));
        log.debug?.(`notification ${message.event} sent to ${ch.name}`);
        return { channel: ch.name, ok: true, attempts: attempt };
      } catch (err) {
        error = (err as Error).name === 'TimeoutError' ? `no answer within ${ch.timeoutMs}ms` : (err as Error).message;
        if (attempt <= ch.retries) await sleep(ch.retryDelayMs * 2 ** (attempt - 1));
      }
    }
    log.warn(`notification ${message.event} to ${ch.name} failed after ${ch.retries + 1} attempts: ${error}`);
    return { channel: ch.name, ok: false, attempts: ch.retries + 1, error };
  }

  return {
    channels: channels.length,
    async notify(message) {
      const masked = maskDeep(message);
      return Promise.all(channels.filter((ch) => ch.events.includes(masked.event)).map((ch) => deliver(ch, masked)));
    },
  };
}
