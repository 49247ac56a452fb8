// Typed errors. Everything below the CLI throws one of these; only the CLI entry
// turns an error kind into an exit code and a one-line message (plus the hint).
// A message says what went wrong; a hint says what to do about it.

export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  connection: 3,
  preflight: 4,
  backupFailed: 5,
  locked: 6,
  verifyFailed: 7,
  verifyUnavailable: 8,
  restoreFailed: 9,
  decryptFailed: 10,
  storage: 11,
  degraded: 12,
  unhealthy: 13,
  interrupted: 130,
} as const;

export type ErrorKind =
  | 'usage'
  | 'config'
  | 'connection'
  | 'preflight'
  | 'backup'
  | 'locked'
  | 'integrity'
  | 'verify-unavailable'
  | 'restore'
  | 'decrypt'
  | 'storage'
  | 'degraded'
  | 'unhealthy'
  | 'interrupted'
  | 'internal';

const exitCodeOf: Record<ErrorKind, number> = {
  usage: ExitCode.usage,
  config: ExitCode.usage,
  connection: ExitCode.connection,
  preflight: ExitCode.preflight,
  backup: ExitCode.backupFailed,
  locked: ExitCode.locked,
  integrity: ExitCode.verifyFailed,
  'verify-unavailable': ExitCode.verifyUnavailable,
  restore: ExitCode.restoreFailed,
  decrypt: ExitCode.decryptFailed,
  storage: ExitCode.storage,
  degraded: ExitCode.degraded,
  unhealthy: ExitCode.unhealthy,
  interrupted: ExitCode.interrupted,
  internal: ExitCode.internal,
};

export interface ErrorOptions {
  hint?: string;
  cause?: unknown;
}

export class DbstashError extends Error {
  readonly kind: ErrorKind;
  readonly hint?: string;

  constructor(kind: ErrorKind, message: string, opts: ErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.kind = kind;
    this.hint = opts.hint;
    this.name = new.target.name;
  }

  get exitCode(): number {
    return exitCodeOf[this.kind];
  }
}

export class UsageError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('usage', message, opts);
  }
}
export class ConfigError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('config', message, opts);
  }
}
export class ConnectionError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('connection', message, opts);
  }
}
export class PreflightError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('preflight', message, opts);
  }
}
export class BackupError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('backup', message, opts);
  }
}
export class LockedError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('locked', message, opts);
  }
}
/** The backup is damaged or does not match what its manifest promises. */
export class IntegrityError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('integrity', message, opts);
  }
}
/** Verification could not run at all (missing tools, no scratch server): says nothing about the backup. */
export class VerifyUnavailableError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('verify-unavailable', message, opts);
  }
}
export class RestoreError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('restore', message, opts);
  }
}
/**
 * A restore that failed because of the server it restores into (a role, extension, library or
 * permission it lacks, a full disk, a lost connection), not because of the dump: for a restore
 * drill, "could not verify" rather than "damaged".
 */
export class RestoreEnvironmentError extends RestoreError {}
export class DecryptError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('decrypt', message, opts);
  }
}

export type StorageErrorReason = 'not-found' | 'exists' | 'transient' | 'permanent';

/** Storage drivers classify every failure so that one retry wrapper serves them all. */
export class StorageError extends DbstashError {
  readonly reason: StorageErrorReason;
  constructor(reason: StorageErrorReason, message: string, opts?: ErrorOptions) {
    super('storage', message, opts);
    this.reason = reason;
  }
}

export class InterruptedError extends DbstashError {
  readonly signal: string;
  /** What the interrupted command did about it ("nothing was published and the lock was released"). */
  readonly outcome?: string;
  constructor(signal: string, outcome?: string) {
    super('interrupted', `interrupted by ${signal}${outcome ? `; ${outcome}` : ''}`);
    this.signal = signal;
    this.outcome = outcome;
  }

  /** The same interruption, with what this command did about it. */
  withOutcome(outcome: string): InterruptedError {
    return new InterruptedError(this.signal, outcome);
  }
  override get exitCode(): number {
    return this.signal === 'SIGTERM' ? 143 : ExitCode.interrupted;
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof StorageError && err.reason === 'not-found';
}

/** A daemon job that ran longer than its maximum run time and was aborted. */
export class JobTimeoutError extends DbstashError {
  constructor(message: string, opts?: ErrorOptions) {
    super('backup', message, opts);
  }
}

/**
 * Appends what a failed command did about its failure to the error's message ("nothing was
 * published and the lock was released"), once, so every way to fail says it.
 */
export function withOutcome<E extends Error>(err: E, outcome: string): E {
  if (err instanceof InterruptedError) return err.withOutcome(outcome) as unknown as E;
  if (!err.message.endsWith(outcome)) err.message = `${err.message}; ${outcome}`;
  return err;
}

/** Node's errno codes that mean "the disk is full" or "not allowed". */
export function describeFsError(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOSPC':
      return 'no space left on device';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOENT':
      return 'no such file or directory';
    case 'ENOTDIR':
      return 'a part of the path is a file, not a directory';
    default:
      return undefined;
  }
}
