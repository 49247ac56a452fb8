// Who may do what on the dashboard: users with scrypt password hashes and API tokens, both with a
// role, from the config; sessions held in memory (a random id in an HttpOnly, SameSite=Strict
// cookie, with its own CSRF token); failed logins rate-limited per user name and per address.
// Hashing and comparison are node:crypto's (scrypt, randomBytes, timingSafeEqual).

import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** What each role may do: viewers read; operators also back up and drill; admins also prune, restore and see settings. */
export type Permission = 'read' | 'backup' | 'verify' | 'prune' | 'restore' | 'settings';
const GRANTS: Record<Role, Permission[]> = {
  viewer: ['read'],
  operator: ['read', 'backup', 'verify'],
  admin: ['read', 'backup', 'verify', 'prune', 'restore', 'settings'],
};

export function can(role: Role, permission: Permission): boolean {
  return GRANTS[role].includes(permission);
}

// scrypt with N=2^15, r=8, p=1 (OWASP's minimum is 2^17 with r=8 for interactive logins at
// 128 MiB; 2^15 keeps a login under ~100 ms on a small server): stored as
// scrypt$<log2 N>$<r>$<p>$<salt base64>$<hash base64>.
const SCRYPT = { logN: 15, r: 8, p: 1, keyLen: 32 };

function scrypt(password: string, salt: Buffer, keyLen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCb(password, salt, keyLen, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const N = 2 ** SCRYPT.logN;
  const key = await scrypt(password, salt, SCRYPT.keyLen, { N, r: SCRYPT.r, p: SCRYPT.p, maxmem: 256 * N * SCRYPT.r });
  return `scrypt$${SCRYPT.logN}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export function isPasswordHash(value: string): boolean {
  return /^scrypt\$\d{1,2}\$\d{1,2}\$\d{1,2}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(value);
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [logN, r, p] = parts.slice(1, 4).map(Number);
  if (!(logN >= 10 && logN <= 20 && r >= 1 && r <= 32 && p >= 1 && p <= 16)) return false;
  const salt = Buffer.from(parts[4], 'base64');
  const expected = Buffer.from(parts[5], 'base64');
  const N = 2 ** logN;
  const key = await scrypt(password, salt, expected.length, { N, r, p, maxmem: 256 * N * r });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** API tokens: "dbst_" and 32 random bytes; the config keeps only their SHA-256 (they are random, not passwords). */
export function newToken(): { token: string; hash: string } {
  const token = `dbst_${randomBytes(32).toString('base64url')}`;
  return { token, hash: tokenHash(token) };
}

export function tokenHash(token: string): string {
  return `sha256:${createHash('sha256').update(token).digest('hex')}`;
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export interface Principal {
  name: string;
  role: Role;
  /** How the request proved who it is: a session cookie (CSRF applies) or a bearer token. */
  via: 'session' | 'token';
}

export interface Session {
  id: string;
  user: string;
  role: Role;
  csrf: string;
  expiresAt: number;
}

/** Sessions in memory: a restart logs everyone out, which is the safe side. */
export class Sessions {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly ttlMs: number) {}

  create(user: string, role: Role): Session {
    this.sweep();
    const s: Session = { id: randomBytes(32).toString('base64url'), user, role, csrf: randomBytes(32).toString('base64url'), expiresAt: Date.now() + this.ttlMs };
    this.sessions.set(s.id, s);
    return s;
  }

  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.expiresAt < Date.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    // Sliding expiry: an active session stays.
    s.expiresAt = Date.now() + this.ttlMs;
    return s;
  }

  delete(id: string | undefined): void {
    if (id) this.sessions.delete(id);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, s] of this.sessions) if (s.expiresAt < now) this.sessions.delete(id);
  }
}

/** At most `max` failed logins per key within `windowMs`; a success clears the user's count. */
export class LoginLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly max = 5,
    private readonly windowMs = 15 * 60_000,
  ) {}

  /** Seconds until another attempt is allowed for any of the keys, or 0. */
  blockedFor(keys: string[]): number {
    const now = Date.now();
    let wait = 0;
    for (const key of keys) {
      const recent = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowMs);
      this.failures.set(key, recent);
      if (recent.length >= this.max) wait = Math.max(wait, Math.ceil((recent[0] + this.windowMs - now) / 1000));
    }
    return wait;
  }

  failed(keys: string[]): void {
    for (const key of keys) this.failures.set(key, [...(this.failures.get(key) ?? []), Date.now()]);
  }

  succeeded(key: string): void {
    this.failures.delete(key);
  }
}
