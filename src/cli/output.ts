// How commands talk to people and scripts: one line per event on stderr (warnings and progress
// never pollute stdout), results on stdout as text or --json, a live progress line on a TTY,
// JSON lines in --log-file for cron, silence with --quiet (errors still print). Everything that
// leaves through here is masked (src/core/secrets.ts): no password reaches a terminal, a pipe or a log.

import { appendFileSync } from 'node:fs';
import { formatBytes, formatDuration } from '../core/format.js';
import { maskDeep, maskSecrets } from '../core/secrets.js';

export interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
  debug?: boolean;
  logFile?: string;
}

type Level = 'info' | 'warn' | 'error' | 'debug';

export class Output {
  readonly json: boolean;
  readonly quiet: boolean;
  readonly debugEnabled: boolean;
  private readonly logFile?: string;
  private readonly tty: boolean;
  private progressShown = false;
  private lastProgress = 0;
  private progressStart = Date.now();

  constructor(opts: OutputOptions = {}, private readonly stderr: NodeJS.WriteStream = process.stderr) {
    this.json = !!opts.json;
    this.quiet = !!opts.quiet;
    this.debugEnabled = !!opts.debug;
    this.logFile = opts.logFile;
    this.tty = !!stderr.isTTY && !this.json && !this.quiet;
  }

  private log(level: Level, message: string, fields?: Record<string, unknown>): void {
    if (this.logFile) {
      const line = JSON.stringify(maskDeep({ time: new Date().toISOString(), level, message, ...fields }));
      try {
        appendFileSync(this.logFile, line + '\n', { mode: 0o600 });
      } catch {
        /* a broken log file must not break the backup */
      }
    }
  }

  private line(text: string): void {
    this.clearProgress();
    this.stderr.write(maskSecrets(text) + '\n');
  }

  info(message: string, fields?: Record<string, unknown>): void {
    this.log('info', message, fields);
    if (!this.quiet && !this.json) this.line(message);
  }

  warn(message: string, fields?: Record<string, unknown>): void {
    this.log('warn', message, fields);
    if (!this.quiet) this.line(`warning: ${message}`);
  }

  error(message: string, hint?: string, fields?: Record<string, unknown>): void {
    this.log('error', message, { hint, ...fields });
    this.line(`error: ${message}`);
    if (hint) this.line(`hint: ${hint}`);
  }

  debug(message: string): void {
    this.log('debug', message);
    if (this.debugEnabled) this.line(`debug: ${message}`);
  }

  /** Live progress on a TTY only, at most 4 updates a second. */
  progress(bytes: number): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.lastProgress < 250) return;
    this.lastProgress = now;
    const elapsed = now - this.progressStart;
    const rate = elapsed > 0 ? (bytes / elapsed) * 1000 : 0;
    this.stderr.write(`\r\x1b[2K  ${formatBytes(bytes)} read, ${formatBytes(rate)}/s, ${formatDuration(elapsed)}`);
    this.progressShown = true;
  }

  clearProgress(): void {
    if (this.progressShown) {
      this.stderr.write('\r\x1b[2K');
      this.progressShown = false;
    }
  }

  /** The command's result: JSON on stdout with --json, else the text (unless --quiet). */
  result(value: unknown, text: () => string): void {
    this.clearProgress();
    if (this.json) process.stdout.write(JSON.stringify(maskDeep(value), null, 2) + '\n');
    else if (!this.quiet) {
      const t = text();
      if (t) process.stdout.write(maskSecrets(t) + '\n');
    }
  }
}

/** Asks a yes/no question on the terminal (stderr); anything but y/yes is no. */
export async function askYesNo(question: string, signal?: AbortSignal): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `, { signal });
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

/**
 * ctx.out for one job (a dashboard's job, a fleet worker's): every line also goes to the job's
 * record, masked as every output.
 */
export class RecordingOutput extends Output {
  constructor(
    private readonly parent: Output,
    private readonly record: (level: 'info' | 'warn' | 'error', message: string) => void,
  ) {
    super({ quiet: true });
  }
  override info(message: string, fields?: Record<string, unknown>): void {
    this.record('info', maskSecrets(message));
    this.parent.info(message, fields);
  }
  override warn(message: string, fields?: Record<string, unknown>): void {
    this.record('warn', maskSecrets(message));
    this.parent.warn(message, fields);
  }
  override error(message: string, hint?: string, fields?: Record<string, unknown>): void {
    this.record('error', maskSecrets(message));
    this.parent.error(message, hint, fields);
  }
  override debug(message: string): void {
    this.parent.debug(message);
  }
}
