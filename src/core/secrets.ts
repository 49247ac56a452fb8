// Keeping secrets out of every output, whatever the user typed. Two nets, applied to every line
// a command prints or logs (src/cli/output.ts) and to the messages of errors:
//   1. URL credentials: in "scheme://user:password@host", everything between the first ":" after
//      "://" and the LAST "@" of that word is the password, parsed or not: a password with an
//      unencoded "@", "#", "/", "?" or ";" never leaves a piece of itself behind.
//   2. Known secret values: passwords parsed from database URLs are registered and masked wherever
//      they appear as free text (a tool's message that echoes one). Short values are not: a
//      password such as "postgres" would otherwise mask every mention of the engine.

const MASK = '***';
const known = new Set<string>();

/** Values shorter than this are not masked as free text (they would mangle every message). */
const MIN_SECRET_LENGTH = 8;

/** Registers a secret value: from now on it is masked in every output. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= MIN_SECRET_LENGTH) known.add(value);
}

/**
 * Where a URL's user-info ends, for a password typed without percent-encoding: at the last "@"
 * that is followed by a host (and port) and a path without "@" ("@…/shop", before any query);
 * failing that, the last "@" followed by a host alone. A password holding "@", "#", "/", "?" or ";"
 * thus stays in one piece. -1 when there is no "@" at all.
 */
export function userinfoEnd(url: string, start: number): number {
  let hostOnly = -1;
  let withPath = -1;
  for (let at = url.indexOf('@', start); at >= 0; at = url.indexOf('@', at + 1)) {
    const tail = url.slice(at + 1);
    const query = tail.indexOf('?');
    const m = /^[A-Za-z0-9._~%\-[\]:]*(\/[^@]*)?$/.exec(query < 0 ? tail : tail.slice(0, query));
    if (m) [withPath, hostOnly] = m[1] ? [at, hostOnly] : [withPath, at];
  }
  return withPath >= 0 ? withPath : hostOnly >= 0 ? hostOnly : url.lastIndexOf('@', url.length) >= start ? url.lastIndexOf('@') : -1;
}

/**
 * Finds "scheme://user:password@" in text and masks the password. The user-info is taken to run
 * from "://" to the LAST "@" of the word (only whitespace ends it: a password may hold quotes), which can hide more
 * than the password (an "@" in a query) but never less.
 */
export function maskUrlCredentials(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^\s<>`]*)/gi, (whole, scheme: string, rest: string) => {
    const last = rest.lastIndexOf('@');
    if (last < 0) return whole;
    const userinfo = rest.slice(0, last);
    const colon = userinfo.indexOf(':');
    if (colon < 0) return whole;
    return `${scheme}${userinfo.slice(0, colon)}:${MASK}${rest.slice(last)}`;
  });
}

export function maskSecrets(text: string): string {
  let out = maskUrlCredentials(text);
  for (const secret of known) if (out.includes(secret)) out = out.split(secret).join(MASK);
  return out;
}

/** Masks every string inside a JSON-able value (--json results, log records, manifests, records). */
export function maskDeep<T>(value: T, mask: (text: string) => string = maskSecrets): T {
  if (typeof value === 'string') return mask(value) as T;
  if (Array.isArray(value)) return value.map((v) => maskDeep(v, mask)) as T;
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskDeep(v, mask)])) as T;
  }
  return value;
}

/** Whether a command-line argument carries a password in a URL. */
export function hasUrlPassword(arg: string): boolean {
  return maskUrlCredentials(arg) !== arg;
}
