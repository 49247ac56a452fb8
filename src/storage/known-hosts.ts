// known_hosts checking for the SFTP driver, the way OpenSSH reads the file for one host:
// - the host is looked up as "host" on port 22 and as "[host]:port" on any other port;
// - a line names its hosts as a comma-separated pattern list (wildcards * and ?, negation !), or
//   as one hashed name "|1|base64(salt)|base64(HMAC-SHA1(salt, name))" (ssh-keygen -H, HashKnownHosts);
// - "@revoked" lines name keys that must never be accepted; "@cert-authority" lines are skipped
//   (host certificates are not supported, so they can vouch for nothing here);
// - keys are compared as whole blobs (the base64 field), never by fingerprint.
// The verdict is known, unknown (no line for the host) or changed (lines for the host, none with
// this key); the driver refuses both of the last two.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface KnownHostEntry {
  marker?: 'revoked' | 'cert-authority';
  /** The host field as written: patterns, or one hashed name. */
  hosts: string;
  keyType: string;
  key: Buffer;
  /** 1-based line number in its file. */
  line: number;
  file: string;
}

export type HostKeyVerdict =
  | { status: 'known'; entry: KnownHostEntry }
  | { status: 'unknown' }
  | { status: 'changed'; entries: KnownHostEntry[] }
  | { status: 'revoked'; entry: KnownHostEntry };

/** Parses a known_hosts file's text; lines it cannot read are skipped, as ssh does. */
export function parseKnownHosts(text: string, file = 'known_hosts'): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const fields = lines[i].trim().split(/\s+/);
    if (!fields[0] || fields[0].startsWith('#')) continue;
    let marker: KnownHostEntry['marker'];
    if (fields[0].startsWith('@')) {
      const m = fields.shift()!;
      if (m === '@revoked') marker = 'revoked';
      else if (m === '@cert-authority') marker = 'cert-authority';
      else continue;
    }
    const [hosts, keyType, b64] = fields;
    if (!hosts || !keyType || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    const key = Buffer.from(b64, 'base64');
    // The blob starts with its own type name: a line whose blob disagrees is damaged.
    if (keyTypeOf(key) !== keyType) continue;
    out.push({ marker, hosts, keyType, key, line: i + 1, file });
  }
  return out;
}

/** The name a host is recorded under: "host" on port 22, "[host]:port" elsewhere (lowercase). */
export function knownHostName(host: string, port: number): string {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return port === 22 ? h : `[${h}]:${port}`;
}

/** OpenSSH's wildcard match: * any run of characters, ? exactly one. */
function wildcard(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

/** Whether a line's host field names `name` (a hashed name, or a pattern list with negations). */
export function hostsMatch(hosts: string, name: string): boolean {
  if (hosts.startsWith('|1|')) {
    const [, , salt, hash] = hosts.split('|');
    if (!salt || !hash) return false;
    const expected = Buffer.from(hash, 'base64');
    const actual = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest();
    return expected.length === actual.length && timingSafeEqual(expected, actual);
  }
  let matched = false;
  for (const raw of hosts.toLowerCase().split(',')) {
    const negated = raw.startsWith('!');
    const pattern = negated ? raw.slice(1) : raw;
    if (!pattern || !wildcard(pattern, name)) continue;
    // A negated match rules the host out whatever else the list says.
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/** The key type named at the start of an SSH public key blob ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"). */
export function keyTypeOf(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || blob.length < 4 + len) return undefined;
  return blob.subarray(4, 4 + len).toString('latin1');
}

/** "SHA256:…" as ssh and ssh-keygen -l print it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** "ED25519", "ECDSA", "RSA": how ssh names a key type in its messages. */
export function keyTypeLabel(type: string | undefined): string {
  if (!type) return 'unknown';
  if (type === 'ssh-ed25519') return 'ED25519';
  if (type.startsWith('ecdsa-')) return 'ECDSA';
  if (type === 'ssh-rsa') return 'RSA';
  return type;
}

/** Host key algorithms that present a key of each type (RSA keys sign with SHA-2 where they can). */
const ALGORITHMS_OF: Record<string, string[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};
const DEFAULT_ALGORITHMS = Object.values(ALGORITHMS_OF).flat();

/**
 * The host key algorithms to offer, those of the key types already known for the host first (as
 * ssh does): a server with several host keys then shows the one we can check, instead of a key
 * of another type that would look unknown.
 */
export function hostKeyAlgorithms(entries: KnownHostEntry[], name: string): string[] {
  const known = entries.filter((e) => !e.marker && hostsMatch(e.hosts, name)).flatMap((e) => ALGORITHMS_OF[e.keyType] ?? []);
  return [...new Set([...known, ...DEFAULT_ALGORITHMS])];
}

export function checkHostKey(entries: KnownHostEntry[], name: string, blob: Buffer): HostKeyVerdict {
  const mine = entries.filter((e) => e.marker !== 'cert-authority' && hostsMatch(e.hosts, name));
  const revoked = entries.find((e) => e.marker === 'revoked' && e.key.equals(blob));
  if (revoked) return { status: 'revoked', entry: revoked };
  const plain = mine.filter((e) => !e.marker);
  const same = plain.find((e) => e.key.equals(blob));
  if (same) return { status: 'known', entry: same };
  return plain.length > 0 ? { status: 'changed', entries: plain } : { status: 'unknown' };
}
