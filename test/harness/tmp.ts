/**
 * Temp dirs for tests and the last-chance cleanup registry.
 *
 * Every action registered with `atExit` runs, newest first, when the process
 * exits or receives SIGINT/SIGTERM (after which it exits with 128 + signal), so
 * a failing or interrupted test never leaves a server or a directory behind.
 * Actions MUST be synchronous: on 'exit' the event loop no longer runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

type Action = () => void;

const actions = new Set<Action>();
let hooked = false;

function runAll(): void {
  for (const action of [...actions].reverse()) {
    actions.delete(action);
    try {
      action();
    } catch (err) {
      console.error('[harness/cleanup] cleanup action failed:', err);
    }
  }
}

function exitOnSignal(signal: NodeJS.Signals): void {
  runAll();
  process.exit(128 + os.constants.signals[signal]);
}

/** Registers a synchronous action to run at exit; returns a function that unregisters it. */
export function atExit(action: Action): () => void {
  if (!hooked) {
    hooked = true;
    process.on('exit', runAll);
    process.on('SIGINT', exitOnSignal);
    process.on('SIGTERM', exitOnSignal);
  }
  actions.add(action);
  return () => actions.delete(action);
}

const dirs = new Map<string, () => void>();

/** Creates a fresh directory under os.tmpdir(); it is removed at exit unless removed earlier. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const unregister = atExit(() => rmSync(dir, { recursive: true, force: true, maxRetries: 3 }));
  dirs.set(dir, unregister);
  return dir;
}

/** Removes a directory made by tempDir (a no-op for one already removed). */
export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  dirs.get(dir)?.();
  dirs.delete(dir);
}
