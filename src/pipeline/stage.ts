// Stages transform the dump stream on its way to storage and back. Each stage has an id that is
// written into the manifest together with its parameters, in order; a restore rebuilds the
// decoders from the manifest, never from today's configuration, so old backups always decode.

import type { Duplex, Readable } from 'node:stream';
import { ConfigError } from '../core/errors.js';

export interface StageSpec {
  id: string;
  params: Record<string, unknown>;
}

export interface Stage {
  readonly id: string;
  readonly params: Record<string, unknown>;
  /** File-name suffix this stage adds (".zst", ".gz", ".age"), or "". */
  readonly suffix: string;
  encode(): Duplex;
  decode(): Duplex;
}

export type StageFactory = (params: Record<string, unknown>, context: StageContext) => Stage;

/** Secrets a stage may need to decode (identities, passphrases); never written anywhere. */
export interface StageContext {
  identities?: string[];
  passphrase?: string;
}

const factories = new Map<string, StageFactory>();

export function registerStage(id: string, factory: StageFactory): void {
  factories.set(id, factory);
}

export function stageFromSpec(spec: StageSpec, context: StageContext = {}): Stage {
  const factory = factories.get(spec.id);
  if (!factory) {
    throw new ConfigError(`unknown stage "${spec.id}" in manifest`, {
      hint: `this dbstash knows ${[...factories.keys()].join(', ')}; a newer dbstash may have written this backup`,
    });
  }
  return factory(spec.params, context);
}

export function specOf(stage: Stage): StageSpec {
  return { id: stage.id, params: stage.params };
}

export function suffixOf(stages: Stage[]): string {
  return stages.map((s) => s.suffix).join('');
}

/** Decoders in reverse order, for reading an artifact back to the raw dump. */
export function decoders(specs: StageSpec[], context: StageContext = {}): Duplex[] {
  return specs
    .slice()
    .reverse()
    .map((spec) => stageFromSpec(spec, context).decode());
}

export type StreamSource = Readable;
