// --role-map for PostgreSQL restores: rewrites the role names in the ownership and privilege
// statements of a pg_restore SQL script (ALTER … OWNER TO, GRANT … TO, REVOKE … FROM,
// ALTER DEFAULT PRIVILEGES FOR ROLE, GRANTED BY). Only role positions change — a table that
// happens to share a role's name keeps its name — and COPY data blocks pass through untouched.

import { Transform, type TransformCallback } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

const IDENT = `"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*`;
const ROLE_POSITIONS = [
  new RegExp(`( OWNER TO )(${IDENT})(;)$`),
  new RegExp(`^(GRANT .* TO )(${IDENT})((?: WITH (?:GRANT|ADMIN) OPTION)?(?: GRANTED BY ${IDENT})?;)$`),
  new RegExp(`^(REVOKE .* FROM )(${IDENT})((?: GRANTED BY ${IDENT})?(?: CASCADE)?;)$`),
  new RegExp(`^(ALTER DEFAULT PRIVILEGES FOR ROLE )(${IDENT})( )`),
  new RegExp(`( GRANTED BY )(${IDENT})(;)$`),
];

function unquote(ident: string): string {
  return ident.startsWith('"') ? ident.slice(1, -1).replace(/""/g, '"') : ident;
}

function quote(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

export function mapRolesInLine(line: string, map: Record<string, string>): string {
  let out = line;
  for (const re of ROLE_POSITIONS) {
    out = out.replace(re, (whole, before: string, role: string, after: string) => {
      const mapped = map[unquote(role)];
      return mapped === undefined ? whole : `${before}${quote(mapped)}${after}`;
    });
  }
  return out;
}

/** A line-by-line rewriter of a pg_restore script; `COPY … FROM stdin;` blocks end at "\.". */
export function rewriteRoles(map: Record<string, string>): Transform {
  const text = new StringDecoder('utf8');
  let rest = '';
  let inCopy = false;
  const handle = (line: string): string => {
    if (inCopy) {
      if (line === '\\.') inCopy = false;
      return line;
    }
    if (/^COPY .* FROM stdin;$/.test(line)) {
      inCopy = true;
      return line;
    }
    return mapRolesInLine(line, map);
  };
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      const lines = (rest + text.write(chunk)).split('\n');
      rest = lines.pop() ?? '';
      done(null, lines.map((l) => handle(l) + '\n').join(''));
    },
    flush(done: TransformCallback) {
      rest += text.end();
      done(null, rest ? handle(rest) : '');
    },
  });
}
