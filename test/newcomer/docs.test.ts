// The docs, as written. The code blocks are read out of README.md and docs/*.md, so the docs
// cannot drift from the code:
//  - every `dbstash …` line in any shell, workflow or unit-file block of the docs, and every
//    example of every command's --help, names a command that exists, only flags that command
//    takes, and as many arguments as it takes; every YAML block that is a dbstash config loads;
//  - the README's stories (quick start, off-site, the 3 a.m. checklist, restoring by hand, the
//    unattended commands, init) and those of docs/ (encryption and signing, the restore
//    checklist and every by-hand way, storage, MySQL, prune and status) run line by line
//    against real servers: a PostgreSQL and a MariaDB started here, and an S3 server for the
//    bucket. Only what names the reader's machine is replaced (db.internal, localhost,
//    /var/backups, /etc/dbstash, the example ids and folder hashes, their own age key); the
//    rest runs as printed, prompts answered at a pty as a person would. Every shell block is
//    run or named below with the reason it is not, and the stash left behind must match the
//    README's picture of it.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { Command, Option } from 'commander';
import { buildProgram } from '../../src/cli/program.js';
import { parseConfig, validKeysAt } from '../../src/config/parse.js';
import { manifestSchema } from '../../src/catalog/manifest-schema.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { startPostgres, PG_BIN_DIR, type PgServer } from '../harness/postgres.js';
import { CLI_PATH } from '../harness/run.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { tempDir } from '../harness/tmp.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const DOCS = ['README.md', ...readdirSync(path.join(REPO, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

interface Block {
  file: string;
  /** The heading the block is under. */
  heading: string;
  lang: string;
  /** 1-based line of the block's first line. */
  line: number;
  /** Its lines, with `\` continuations joined. */
  lines: string[];
}

function codeBlocks(file: string): Block[] {
  const text = readFileSync(path.join(REPO, file), 'utf8').split('\n');
  const blocks: Block[] = [];
  let heading = '';
  let open: Block | undefined;
  text.forEach((l, i) => {
    const fence = /^```(\w*)/.exec(l);
    if (fence && !open) {
      open = { file, heading, lang: fence[1], line: i + 2, lines: [] };
    } else if (fence && open) {
      blocks.push(open);
      open = undefined;
    } else if (open) {
      const last = open.lines.length - 1;
      if (last >= 0 && open.lines[last].endsWith('\\')) open.lines[last] = open.lines[last].slice(0, -1) + l.trim();
      else open.lines.push(l);
    } else if (/^#+ /.test(l)) heading = l.replace(/^#+ /, '');
  });
  return blocks;
}

/** Shell words of a line, quotes removed; operators (| && || ; ( ) > <) as words of their own; a comment ends it. */
function words(line: string): string[] {
  const out: string[] = [];
  let cur: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      cur = (cur ?? '') + line.slice(i + 1, end < 0 ? undefined : end);
      i = end < 0 ? line.length : end;
    } else if (/\s/.test(c)) {
      if (cur !== undefined) out.push(cur);
      cur = undefined;
    } else if (c === '#' && cur === undefined) {
      break;
    } else if ('|&;()<>'.includes(c) || (c === '$' && line[i + 1] === '(')) {
      if (cur !== undefined) out.push(cur);
      cur = undefined;
      if (c === '$') i++;
      out.push(c === '$' ? '(' : c);
    } else cur = (cur ?? '') + c;
  }
  if (cur !== undefined) out.push(cur);
  return out;
}

interface DocCommand {
  where: string;
  argv: string[];
}

/** Every `dbstash …` a line runs (after `run:` in a workflow, `ExecStart=` in a unit, in `$(…)`). */
function dbstashCommands(line: string, where: string): DocCommand[] {
  const w = words(line.replace(/^\s*(- )?run:\s*/, '').replace(/^ExecStart=/, ''));
  const found: DocCommand[] = [];
  let start = true;
  for (let i = 0; i < w.length; i++) {
    if ('|&;()<>'.includes(w[i])) {
      start = true;
      continue;
    }
    if (start && /^[A-Za-z_][A-Za-z0-9_]*=/.test(w[i])) continue;
    if (start && (w[i] === 'dbstash' || w[i].endsWith('/dbstash'))) {
      let j = i + 1;
      while (j < w.length && !'|&;()<>'.includes(w[j])) j++;
      found.push({ where, argv: w.slice(i + 1, j) });
      i = j - 1;
    }
    start = false;
  }
  return found;
}

/** What is wrong with `dbstash <argv>` for this program: an unknown command or flag, a wrong number of arguments. */
function problems(program: Command, argv: string[]): string[] {
  let cmd = program;
  let i = 0;
  const names: string[] = [];
  for (; i < argv.length; i++) {
    const sub = cmd.commands.find((c) => c.name() === argv[i] || c.aliases().includes(argv[i]));
    if (!sub) break;
    cmd = sub;
    names.push(sub.name());
  }
  const name = `dbstash ${names.join(' ')}`;
  if (cmd === program) return argv[0] === '--version' || argv[0] === '--help' ? [] : [`"${argv[0]}" is not a dbstash command`];
  const found: string[] = [];
  const positional: string[] = [];
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('-') && a !== '-') {
      const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
      if (flag === '--help' || flag === '-h') continue;
      const opt = (cmd.options as Option[]).find((o) => o.long === flag || o.short === flag);
      if (!opt) {
        found.push(`${flag} is not a flag of ${name}`);
        if (inline === undefined && argv[i + 1] !== undefined && !argv[i + 1].startsWith('-')) i++;
      } else if (opt.required && inline === undefined) i++;
      else if (opt.optional && inline === undefined && argv[i + 1] !== undefined && !argv[i + 1].startsWith('-')) i++;
    } else positional.push(a);
  }
  const args = cmd.registeredArguments;
  if (positional.length > args.length && !args.at(-1)?.variadic) found.push(`${name} takes at most ${args.length} argument(s), got ${positional.join(' ')}`);
  if (positional.length < args.filter((a) => a.required).length) found.push(`${name} needs ${args.filter((a) => a.required).length} argument(s)`);
  return found;
}

const escape = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A line of the README's picture of the stash as a regular expression: <name> is any name, [.a|.b] an optional part. */
function pictureRegex(picture: string): RegExp {
  const parts = picture.split(/(<[a-z]+>|\[[^\]]+\])/).map((part) => {
    if (part === '<id>') return '[^/]+_[a-z0-9-]+_\\d{4}-\\d\\d-\\d\\dT\\d\\d-\\d\\d-\\d\\dZ';
    if (part === '<format>') return '(dump|sqlite|sql|tar)';
    if (/^<[a-z]+>$/.test(part)) return '[^/]+';
    if (part.startsWith('[')) return `(${part.slice(1, -1).split('|').map(escape).join('|')})?`;
    return escape(part);
  });
  return new RegExp(`^${parts.join('')}$`);
}

/** Runs a line with bash, asynchronously: the S3 server answers from this process meanwhile. */
function sh(line: string, cwd: string, env: NodeJS.ProcessEnv, input?: string): Promise<{ code: number | null; out: string; stdout: string }> {
  const child = spawn('bash', ['-o', 'pipefail', '-c', line], { cwd, env });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {});
  child.stdin.end(input);
  const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out: stdout + stderr, stdout });
    }),
  );
}

describe('every dbstash command in the docs is one the CLI takes', () => {
  test('the code blocks of README.md and docs/*.md, and every --help example', async () => {
    const program = await buildProgram();
    const commands: DocCommand[] = [];
    for (const file of DOCS) {
      // Shell, and the shell inside workflows (run:) and unit files (ExecStart=); synopses and output are plain blocks.
      for (const block of codeBlocks(file).filter((b) => ['sh', 'bash', 'yaml', 'ini'].includes(b.lang))) {
        block.lines.forEach((l, k) => commands.push(...dbstashCommands(l, `${file}:${block.line + k}`)));
      }
    }
    const helps = [...program.commands.map((c) => [c.name()]), ...program.commands.flatMap((c) => c.commands.map((s) => [c.name(), s.name()])), []];
    for (const cmd of helps) {
      const help = spawnSync(process.execPath, [CLI_PATH, ...cmd, '--help'], { encoding: 'utf8' });
      assert.equal(help.status, 0, help.stderr);
      const examples = /\nExamples:\n([\s\S]*?)(\n\n|$)/.exec(help.stdout)?.[1] ?? '';
      if (cmd.length === 1 || cmd.length === 0) assert.ok(examples.trim(), `dbstash ${cmd.join(' ')} --help has examples`);
      for (const l of examples.split('\n')) commands.push(...dbstashCommands(l.trim(), `dbstash ${cmd.join(' ')} --help`));
    }
    assert.ok(commands.length > 80, `found ${commands.length} commands`);
    for (const c of ['backup', 'list', 'verify', 'restore', 'prune', 'status', 'copy', 'keygen', 'daemon', 'schedule', 'init']) {
      assert.ok(commands.some((x) => x.argv[0] === c && !x.where.includes('--help')), `the docs show dbstash ${c}`);
    }
    const wrong = commands.flatMap((c) => problems(program, c.argv).map((p) => `${c.where}: dbstash ${c.argv.join(' ')}: ${p}`));
    assert.deepEqual(wrong, []);
  });

  test('every YAML block that is (part of) a dbstash config loads as one', () => {
    const top = validKeysAt([])!;
    // Each ${VAR} a reader sets: a URL where a URL goes, a word elsewhere.
    const env = new Proxy({} as NodeJS.ProcessEnv, { get: (_, key) => (key === 'DATABASE_URL' ? 'postgres://app@db.internal:5432/shop' : typeof key !== 'string' ? undefined : key.endsWith('_URL') ? 'https://hooks.example.com/x' : 'set'), has: () => true });
    let configs = 0;
    for (const file of DOCS) {
      for (const block of codeBlocks(file).filter((b) => b.lang === 'yaml')) {
        const keys = block.lines.filter((l) => /^[A-Za-z]\w*:/.test(l)).map((l) => l.slice(0, l.indexOf(':')));
        if (keys.length === 0 || !keys.every((k) => top.includes(k))) continue;
        configs++;
        assert.doesNotThrow(() => parseConfig(block.lines.join('\n'), `${file}:${block.line}`, env), `${file}:${block.line}`);
      }
    }
    assert.ok(configs >= 6, `${configs} config blocks`);
  });

  test('the manifest example of docs/manifest.md is one the schema accepts', () => {
    const example = codeBlocks('docs/manifest.md').find((b) => b.lang === 'json')!;
    // The example shortens the checksum; everything else is as a backup writes it.
    const manifest = JSON.parse(example.lines.join('\n').replace(/"([0-9a-f]{8})…"/, (_, head: string) => `"${head}${'0'.repeat(56)}"`));
    const parsed = manifestSchema.safeParse(manifest);
    assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
    assert.equal(parsed.data.artifacts[0].file.startsWith(`${parsed.data.series?.key}_`), true, 'the artifact is named after the id, and the id after the series');
  });

  test('the checker itself catches what it is for', async () => {
    const program = await buildProgram();
    assert.deepEqual(problems(program, ['backup', 'shop', '--enviroment', 'prod']), ['--enviroment is not a flag of dbstash backup']);
    assert.deepEqual(problems(program, ['lsit']), ['"lsit" is not a dbstash command']);
    assert.deepEqual(problems(program, ['list', '--yes']), ['--yes is not a flag of dbstash list']);
    assert.deepEqual(problems(program, ['wal', 'push']), ['dbstash wal push needs 1 argument(s)']);
    assert.deepEqual(problems(program, ['schedule']), ['dbstash schedule needs 1 argument(s)']);
    assert.deepEqual(problems(program, ['verify', '--latest', 'shop', '--drill']), []);
    assert.deepEqual(
      dbstashCommands('*/30 * * * * out=$(dbstash status --config /etc/x.yaml) || echo "$out" | mail -s "x" y', 'cron').map((c) => c.argv),
      [['status', '--config', '/etc/x.yaml']],
    );
    assert.deepEqual(dbstashCommands('cd dbstash && npm install -g .', 'x'), []);
    const artifact = pictureRegex('<id>.<format>[.zst|.gz][.age]');
    assert.ok(artifact.test('shop.3df1452e_prod_2026-11-23T08-07-00Z.dump.zst.age') && artifact.test('app.5be09a1c_dev_2026-11-23T08-07-00Z.sqlite'));
    assert.ok(!artifact.test('shop.3df1452e_prod_2026-11-23T08-07-00Z.dump.xz') && !artifact.test('shop.dump.zst'));
    assert.ok(!pictureRegex('locks/<time>-<token>.lock').test('dbstash.lock'));
    assert.deepEqual(dbstashCommands('DB_ENGINE=mysql DB_PASSWORD=… dbstash backup --env prod', 'x').map((c) => c.argv), [['backup', '--env', 'prod']]);
  });
});

describe('the README and docs/, run as written against real servers', () => {
  let pg: PgServer;
  let my: MariaServer;
  let s3: S3Server;
  let box: string;
  let work: string;
  let env: NodeJS.ProcessEnv;
  const readme = codeBlocks('README.md').filter((b) => b.lang === 'sh');
  const ran = new Set<Block>();
  const ranDocs = new Set<string>();

  /** The README's shell block under this heading (the nth, from 0). */
  function block(heading: string, nth = 0): Block {
    const b = readme.filter((x) => x.heading === heading)[nth];
    assert.ok(b, `README has a shell block under "${heading}"`);
    ran.add(b);
    return b;
  }

  /** The line run at a terminal (a pty from util-linux's script), where a person types the answers. */
  const atTerminal = (line: string) => `script -qec ${JSON.stringify(line)} /dev/null`;

  /** A shell block of a file of docs/, under this heading. */
  function docBlock(file: string, heading: string): Block {
    const b = codeBlocks(file).find((x) => x.lang === 'sh' && x.heading === heading);
    assert.ok(b, `${file} has a shell block under "${heading}"`);
    ranDocs.add(`${file}:${b.line}`);
    return b;
  }

  /** Lines of a block without comment lines and blank ones. */
  const commandLines = (b: Block) => b.lines.filter((l) => l.trim() && !l.trim().startsWith('#'));

  /** Values of the reader's own, e.g. their age public key in place of the docs' example. */
  const theirs: [string, string][] = [];

  /** The reader's machine, replaced by the test's. */
  function here(line: string): string {
    const url = `postgres://app@127.0.0.1:${pg.port}/shop`;
    return theirs
      .reduce((l, [example, real]) => l.replaceAll(example, real), line)
      .replaceAll('postgres://…', url)
      .replaceAll('--to …', `--to ${url}`)
      .replaceAll('@db/shop', `@127.0.0.1:${pg.port}/shop`)
      .replaceAll('db.internal:5432', `127.0.0.1:${pg.port}`)
      .replaceAll('@db:5432', `@127.0.0.1:${pg.port}`)
      .replaceAll('@localhost/', `@127.0.0.1:${pg.port}/`)
      .replaceAll('db.internal:3306', `127.0.0.1:${my.port}`)
      // Not where it was replaced already (here() may see a line twice).
      .replace(/(?<![\w.-])\/var\/backups\//g, `${box}/var/backups/`)
      .replace(/(?<![\w.-])\/etc\/dbstash\//g, `${box}/etc/dbstash/`);
  }

  async function run(line: string, opts: { cwd?: string; input?: string; codes?: number[]; env?: NodeJS.ProcessEnv } = {}) {
    const r = await sh(here(line), opts.cwd ?? work, { ...env, ...opts.env }, opts.input);
    assert.ok((opts.codes ?? [0]).includes(r.code ?? -1), `${line}\nexited ${r.code}:\n${r.out}`);
    assert.doesNotMatch(r.out, /secret/, `no password in the output of ${line}`);
    return r;
  }

  /** A reader's machine of its own: bin/dbstash on the PATH, a HOME, /etc/dbstash and /var/backups under the box, data/app.db. */
  function newReader(name: string): void {
    box = tempDir(name);
    theirs.length = 0;
    work = path.join(box, 'work');
    const bin = path.join(box, 'bin');
    const home = path.join(box, 'home');
    for (const d of [work, bin, home, path.join(box, 'etc', 'dbstash'), path.join(box, 'var', 'backups'), path.join(work, 'data')]) mkdirSync(d, { recursive: true });
    // `dbstash` as installed: the compiled CLI on the PATH.
    writeFileSync(path.join(bin, 'dbstash'), `#!/bin/sh\nexec "${process.execPath}" "${CLI_PATH}" "$@"\n`, { mode: 0o755 });
    // The reader's client settings for the by-hand tools: libpq's variables, a ~/.my.cnf.
    writeFileSync(path.join(home, '.my.cnf'), `[client]\nhost=127.0.0.1\nport=${my.port}\nuser=root\npassword=${my.password}\n`, { mode: 0o600 });
    const app = new Database(path.join(work, 'data', 'app.db'));
    app.exec(`PRAGMA journal_mode=WAL; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('a'), ('b');`);
    app.close();
    env = {
      PATH: `${bin}:${PG_BIN_DIR}:${process.env.PATH}`,
      HOME: home,
      TMPDIR: process.env.TMPDIR,
      PGPASSWORD: 'secret',
      PGHOST: '127.0.0.1',
      PGPORT: String(pg.port),
      PGUSER: 'app',
      PGDATABASE: 'postgres',
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_REGION: s3.region,
    };
  }

  let handCount = 0;
  /** Every series folder of the reader's stashes. */
  const seriesFolders = () =>
    [path.join(work, 'backups'), path.join(box, 'mysql-reader', 'backups'), path.join(box, 'var', 'backups', 'dbstash')]
      .filter((root) => existsSync(root))
      .flatMap((root) => readdirSync(root).map((f) => path.join(root, f)));
  /** The newest real file of this series name, engine and kind (`.dump.zst`, `.globals.sql.zst`, …). */
  function newest(name: string, ext: string, engine: string): { dir: string; file: string; id: string } {
    const candidates = seriesFolders().flatMap((dir) =>
      readdirSync(dir)
        .filter((f) => f.startsWith(`${name}.`) && f.endsWith(ext) && (ext.startsWith('.globals') || !f.endsWith(`.globals${ext}`)))
        .map((f) => ({ dir, file: f, id: f.slice(0, -ext.length).replace(/\.globals$/, '') }))
        .filter((c) => JSON.parse(readFileSync(path.join(dir, `${c.id}.manifest.json`), 'utf8')).engine === engine),
    );
    const chosen = candidates.sort((a, b) => a.file.localeCompare(b.file)).at(-1);
    assert.ok(chosen, `a ${engine} backup of ${name} with a ${ext} artifact`);
    return chosen;
  }
  const realFile = (line: string) => {
    const m = /\b([a-z]+)\.[0-9a-f]{8}_prod_(?:\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ|…)(\.[a-z.]+[a-z])/.exec(line);
    assert.ok(m, `a file name in ${line}`);
    const [example, name, ext] = m;
    // The MariaDB example is the one piped into mariadb.
    const engine = line.includes('mariadb') ? 'mysql' : line.includes('sqlite') ? 'sqlite' : 'postgres';
    const chosen = newest(name, ext, engine);
    // The reader's copy of the file, in a folder of its own: the stash stays as dbstash keeps it.
    const copy = path.join(box, 'hand', `${++handCount}`);
    mkdirSync(copy, { recursive: true });
    copyFileSync(path.join(chosen.dir, chosen.file), path.join(copy, chosen.file));
    return { line: line.replace(example, chosen.file), dir: copy, stashDir: chosen.dir, file: chosen.file };
  };

  before(async () => {
    [pg, my, s3] = await Promise.all([startPostgres(), startMariadb(), startS3({ buckets: ['acme-backups'] })]);
    await pg.query(`CREATE ROLE app LOGIN PASSWORD 'secret' CREATEDB`);
    await pg.query(`CREATE DATABASE shop OWNER app`);
    await pg.query(`SET ROLE app; CREATE TABLE customers (id int PRIMARY KEY, name text); INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 250) g;
      CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric); INSERT INTO orders SELECT g, 1 + g % 250, g * 1.5 FROM generate_series(1, 1000) g;`, 'shop');
    await my.query(`CREATE DATABASE shop; CREATE USER 'app'@'%' IDENTIFIED BY 'secret'; GRANT ALL ON shop.* TO 'app'@'%';
      CREATE TABLE shop.items (id INT PRIMARY KEY, label VARCHAR(20)); INSERT INTO shop.items VALUES (1, 'one'), (2, 'two'), (3, 'three');`);

    newReader('readme');
  });
  after(async () => {
    await Promise.all([pg?.stop(), my?.stop(), s3?.stop()]);
  });

  test('quick start, off-site, the 3 a.m. checklist, by hand, unattended', { timeout: 600_000 }, async () => {
    // Quick start: PostgreSQL (the password from PGPASSWORD, then from DATABASE_URL).
    const quick = commandLines(block('Quick start', 0));
    assert.equal(quick.length, 3);
    await run(quick[0]);
    await run(quick[1]);
    const list = await run(quick[2]);
    assert.match(list.out, /shop\.[0-9a-f]{8}_prod_/);
    assert.match(list.out, /shop\.[0-9a-f]{8}_dev_/);
    const folder = readdirSync(path.join(work, 'backups'));
    assert.equal(folder.length, 1, 'both PostgreSQL lines back up one series');

    // MySQL / MariaDB: another reader's first backup (a stash of its own, so "shop" stays one database below).
    const mysqlReader = path.join(box, 'mysql-reader');
    mkdirSync(mysqlReader);
    const [myLine] = commandLines(block('Quick start', 1));
    const m = await run(myLine, { cwd: mysqlReader });
    assert.match(m.out, /password in a URL on the command line/);
    const myId = readdirSync(path.join(mysqlReader, 'backups', readdirSync(path.join(mysqlReader, 'backups'))[0])).find((f) => f.endsWith('.manifest.json'))!;
    assert.match(myId, /^shop\.[0-9a-f]{8}_prod_/);

    // SQLite.
    const [sqliteLine] = commandLines(block('Quick start', 2));
    await run(sqliteLine);
    assert.match(readdirSync(path.join(box, 'var', 'backups', 'dbstash')).join(' '), /app\.[0-9a-f]{8}/);

    // The config `dbstash init` writes, as the README shows it.
    const yaml = codeBlocks('README.md').find((b) => b.lang === 'yaml' && b.heading === 'Configuration')!;
    writeFileSync(path.join(work, 'dbstash.yaml'), yaml.lines.join('\n'));
    env.DATABASE_URL = `postgres://app:secret@127.0.0.1:${pg.port}/shop`;
    const typo = await sh('dbstash backup shpo', work, env);
    assert.equal(typo.code, 2);
    assert.equal(
      typo.out,
      'error: "shpo" is not a database in the config (did you mean shop? it has: shop), nor a database URL or SQLite file\n' +
        'hint: name a configured database (dbstash backup shop), or give the database\'s URL\n',
    );

    // Off-site, encrypted, signed: the signing key made as docs/encryption.md says.
    await run('dbstash keygen --out /etc/dbstash/signing.key');
    const off = commandLines(block('Off-site, encrypted, signed'));
    assert.equal(off.length, 2);
    const o = await run(off[0]);
    assert.doesNotMatch(o.out, /not encrypted/);
    const c = await run(off[1]);
    assert.match(c.out, /app\.[0-9a-f]{8}_/, 'copy --missing sends the SQLite backup made before');
    const bucket = await sh(`dbstash list --storage s3://acme-backups/dbstash`, work, env);
    assert.match(bucket.out, /shop\.[0-9a-f]{8}_dev_/);
    assert.match(bucket.out, /app\.[0-9a-f]{8}_/);

    // The 3 a.m. checklist. The restore without --yes asks for the database's name, as a terminal user types it.
    const checklist = commandLines(block('Restoring'));
    assert.equal(checklist.length, 4);
    await run(checklist[0]);
    const drill = await run(checklist[1]);
    assert.match(drill.out, /drill passed/);
    const plan = await run(checklist[2]);
    assert.match(plan.out, /dry run/i);
    await pg.query(`DELETE FROM orders WHERE id > 10`, 'shop');
    const noTty = await sh(here(checklist[3]), work, env);
    assert.equal(noTty.code, 2, noTty.out);
    assert.match(noTty.out, /--yes/);
    const restored = await run(atTerminal(checklist[3]), { input: 'shop\n' });
    assert.match(restored.out, /kept as shop_before_/);
    assert.equal((await pg.query(`SELECT count(*)::int AS n FROM orders`, 'shop')).rows[0].n, 1000, 'the deleted rows are back');

    // One table back, beside the live one; exported; shown.
    const oneTable = commandLines(block('Restoring', 1));
    assert.equal(oneTable.length, 4);
    await pg.query(`DELETE FROM orders WHERE id > 10`, 'shop');
    assert.match((await run(oneTable[0])).out, /dry run: would restore 1 table\(s\)/);
    const beside = await run(oneTable[1]);
    const restoredSchema = /public\.orders → (dbstash_restored_\d{8}_\d{6})\.orders \(1000 rows\)/.exec(beside.out)?.[1];
    assert.ok(restoredSchema, beside.out);
    assert.equal((await pg.query(`SELECT count(*)::int AS n FROM ${restoredSchema}.orders`, 'shop')).rows[0].n, 1000);
    await pg.query(/copy back: (.*)$/m.exec(beside.out)![1], 'shop');
    assert.equal((await pg.query(`SELECT count(*)::int AS n FROM orders`, 'shop')).rows[0].n, 1000, 'copied back as the output says');
    await pg.query(`DROP SCHEMA ${restoredSchema} CASCADE`, 'shop');
    await run(oneTable[2]);
    assert.equal(readFileSync(path.join(work, 'orders.jsonl'), 'utf8').trim().split('\n').length, 1000);
    assert.match((await run(oneTable[3])).out, /^id\s+customer\s+total$/m);

    // Restoring by hand: the artifacts the by-hand block names, made first (gzip, --globals from the config, --jobs).
    await run('dbstash backup shop --env prod --compression gzip');
    await run('dbstash backup shop --env prod');
    await run('dbstash backup shop --env prod --jobs 2');
    /** The example file name (`shop.3df1452e_prod_2026-…`, `…`) → the newest real file of that series and kind, and its folder. */
    const byHand = block('Restoring by hand, without dbstash');
    const sections = new Map<string, string[]>();
    let section = '';
    for (const l of byHand.lines) {
      if (l.startsWith('# ')) sections.set((section = l.slice(2)), []);
      else if (l.trim()) sections.get(section)!.push(l);
    }
    assert.deepEqual([...sections.keys()], ['PostgreSQL', 'gzip instead of zstd', 'SQLite', 'roles, from a --globals backup (as a superuser)', 'PostgreSQL --jobs backup (a tar of pg_dump\'s directory format)', 'MySQL / MariaDB']);
    const orders = async (db: string) => (await pg.query(`SELECT count(*)::int AS n FROM orders`, db)).rows[0].n as number;
    const fresh = (create: boolean) => run(`dropdb --if-exists shop_restored${create ? ' && createdb shop_restored' : ''}`);

    const [create, restore, checksum] = sections.get('PostgreSQL')!;
    await fresh(false);
    await run(create);
    const r1 = realFile(restore);
    await run(r1.line, { cwd: r1.dir });
    assert.equal(await orders('shop_restored'), 1000);
    const r2 = realFile(checksum);
    const sum = await run(r2.line, { cwd: r2.dir });
    const manifest = JSON.parse(readFileSync(path.join(r2.stashDir, r2.file.replace(/\.dump\.zst$/, '.manifest.json')), 'utf8'));
    assert.equal(sum.stdout.split(/\s+/)[0], manifest.artifacts[0].sha256, 'sha256sum prints the manifest\'s checksum');

    await fresh(true);
    const g = realFile(sections.get('gzip instead of zstd')![0]);
    await run(g.line, { cwd: g.dir });
    assert.equal(await orders('shop_restored'), 1000);

    const s = realFile(sections.get('SQLite')![0]);
    assert.match((await run(s.line, { cwd: s.dir })).stdout, /^ok$/m);

    const roles = realFile(sections.get('roles, from a --globals backup (as a superuser)')![0]);
    assert.match(roles.file, /\.globals\.sql\.zst$/);
    const superuser = { PGUSER: 'postgres', PGPASSWORD: pg.password };
    assert.match((await run(roles.line, { cwd: roles.dir, env: superuser })).out, /role "app" already exists/);

    await fresh(true);
    const jobs = realFile(sections.get('PostgreSQL --jobs backup (a tar of pg_dump\'s directory format)')![0]);
    assert.match(jobs.file, /\.tar\.zst$/);
    await run(jobs.line, { cwd: jobs.dir });
    assert.equal(await orders('shop_restored'), 1000);

    const [myCreate, myRestore] = sections.get('MySQL / MariaDB')!;
    await run(myCreate);
    const mr = realFile(myRestore);
    await run(mr.line, { cwd: mr.dir });
    assert.deepEqual(await my.query(`SELECT label FROM shop_restored.items ORDER BY id`), [{ label: 'one' }, { label: 'two' }, { label: 'three' }]);

    // Unattended operation: prune's plan and status; the daemon and the installed schedules have tests of their own.
    const unattended = commandLines(block('Unattended operation'));
    assert.deepEqual(unattended.map((l) => words(l).slice(0, 2).join(' ')), ['dbstash prune', 'dbstash daemon', 'dbstash schedule', 'dbstash status']);
    assert.match((await run(unattended[0])).out, /keep/);
    const status = await run(unattended[3], { codes: [0, 13] });
    assert.match(status.out, /shop/);

    // `dbstash init`, as the Configuration section shows it, in a folder of its own.
    const initDir = path.join(box, 'init');
    mkdirSync(initDir);
    const [init] = commandLines(block('Configuration'));
    await run(init, { cwd: initDir });
    assert.match(readFileSync(path.join(initDir, 'dbstash.yaml'), 'utf8'), /databases:/);

    // The stash holds nothing the README's picture of it does not show.
    const picture = codeBlocks('README.md').find((b) => b.heading === 'The stash')!;
    const patterns = picture.lines
      .filter((l) => l.startsWith('<root>/'))
      .map((l) => l.split(/\s+/)[0].replace('<root>/<series>/', ''))
      .map(pictureRegex);
    for (const dir of seriesFolders()) {
      const walk = (d: string, rel = ''): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name), `${rel}${e.name}/`) : [`${rel}${e.name}`]));
      for (const f of walk(dir)) assert.ok(patterns.some((p) => p.test(f)), `${path.basename(dir)}/${f} is in the README's picture of the stash`);
    }

    // Every README shell block was run, or is named here with the reason it is not.
    const notRun = new Map<string, string>([['dbstash', 'the set-up commands: run in fresh clones by first-hour.test.ts']]);
    for (const b of readme) {
      if (!ran.has(b)) assert.ok(notRun.has(b.heading), `README.md:${b.line} (under "${b.heading}") is neither run nor named`);
    }
  });

  test('docs/: encryption and signing, the restore checklist and restoring by hand, storage, MySQL', { timeout: 600_000 }, async () => {
    newReader('docs');
    const yaml = codeBlocks('README.md').find((b) => b.lang === 'yaml' && b.heading === 'Configuration')!;
    writeFileSync(path.join(work, 'dbstash.yaml'), yaml.lines.join('\n'));
    env.DATABASE_URL = `postgres://app:secret@127.0.0.1:${pg.port}/shop`;
    const orders = async (db: string) => (await pg.query(`SELECT count(*)::int AS n FROM orders`, db)).rows[0].n as number;

    // docs/encryption.md: a key pair; the backup host has only the public key; verify and restore with the identity.
    const age = commandLines(docBlock('docs/encryption.md', 'Encrypting backups (age)'));
    assert.equal(age.length, 4);
    const keygen = await run(age[0]);
    const recipient = /Public key: (age1\w+)/.exec(keygen.out)?.[1];
    assert.ok(recipient, keygen.out);
    theirs.push([/age1\w+/.exec(age[1])![0], recipient]);
    await run(age[1]);
    assert.match((await run(age[2])).out, /passed/);
    await pg.query(`DELETE FROM orders WHERE id > 500`, 'shop');
    assert.match((await run(atTerminal(age[3]), { input: 'shop\n' })).out, /kept as shop_before_/);
    assert.equal(await orders('shop'), 1000);

    // … and by hand, with age; the second line's backup encrypted with a passphrase, which age asks for at the terminal.
    const ageByHand = commandLines(docBlock('docs/encryption.md', 'By hand'));
    assert.equal(ageByHand.length, 2);
    await run('dropdb --if-exists shop_restored && createdb shop_restored');
    const enc = realFile(ageByHand[0]);
    assert.match(enc.file, /\.dump\.zst\.age$/);
    copyFileSync(path.join(work, 'backup-reader.key'), path.join(enc.dir, 'backup-reader.key'));
    await run(enc.line, { cwd: enc.dir });
    assert.equal(await orders('shop_restored'), 1000);
    const passphrase = 'correct horse battery staple, and a long one';
    await run('dbstash backup ./data/app.db', { env: { DBSTASH_PASSPHRASE: passphrase } });
    const sq = realFile(ageByHand[1]);
    assert.match(sq.file, /\.sqlite\.zst\.age$/);
    await run(atTerminal(sq.line), { cwd: sq.dir, input: `${passphrase}\n` });
    const copy = new Database(path.join(sq.dir, 'app.db'), { readonly: true });
    assert.deepEqual(copy.prepare('SELECT body FROM notes ORDER BY id').all(), [{ body: 'a' }, { body: 'b' }]);
    copy.close();

    // Signed manifests: the public key where verify and restore run.
    const signing = commandLines(docBlock('docs/encryption.md', 'Signed manifests'));
    assert.equal(signing.length, 4);
    await run(signing[0]);
    await run(signing[1]);
    copyFileSync(path.join(box, 'etc', 'dbstash', 'signing.key.pub'), path.join(work, 'signing.key.pub'));
    assert.match((await run(signing[2])).out, /signed by key \S+: signature good/);
    assert.match((await run(atTerminal(signing[3]), { input: 'shop\n' })).out, /kept as shop_before_/);

    // docs/restoring.md: the 3 a.m. checklist against the stash in /var/backups/dbstash.
    await run('dbstash backup shop --output-dir /var/backups/dbstash');
    const checklist = commandLines(docBlock('docs/restoring.md', 'The 3 a.m. checklist'));
    assert.equal(checklist.length, 4);
    assert.match((await run(checklist[0])).out, /shop\.[0-9a-f]{8}_dev_/);
    assert.match((await run(checklist[1])).out, /drill passed/);
    assert.match((await run(checklist[2])).out, /dry run/i);
    await pg.query(`DELETE FROM orders WHERE id > 10`, 'shop');
    assert.match((await run(atTerminal(checklist[3]), { input: 'shop\n' })).out, /kept as shop_before_/);
    assert.equal(await orders('shop'), 1000);

    // One table back: beside the live one, then --replace (the table's name typed at the terminal), then export.
    await run('dbstash backup shop --output-dir /var/backups/dbstash');
    await pg.query(`DELETE FROM orders WHERE id > 10`, 'shop');
    const one = commandLines(docBlock('docs/restoring.md', 'One table back: "someone deleted the rows of one table"'));
    assert.equal(one.length, 4);
    assert.match((await run(one[0])).out, /public\.orders\s+1000/);
    assert.match((await run(one[1])).out, /^1\s+2\s+1\.5$/m);
    assert.match((await run(one[2])).out, /dry run: would restore 1 table\(s\)/);
    const beside = await run(one[3]);
    assert.match(beside.out, /public\.orders → dbstash_restored_\d{8}_\d{6}\.orders \(1000 rows\)/);
    assert.equal(await orders('shop'), 10, 'beside: the live table is untouched');
    const replace = commandLines(docBlock('docs/restoring.md', '--replace: the restored table takes the live one\'s place'));
    assert.equal(replace.length, 2);
    assert.match((await run(replace[0])).out, /stays behind: the live table itself, kept as public\.orders__before_/);
    assert.match((await run(atTerminal(replace[1]), { input: 'public.orders\n' })).out, /replaced public\.orders .* row counts match the manifest/);
    assert.equal(await orders('shop'), 1000, 'replaced: the rows are back');
    const exports = commandLines(docBlock('docs/restoring.md', 'export: the rows of one table, without touching any live database'));
    assert.equal(exports.length, 3);
    await run(exports[0]);
    assert.equal(readFileSync(path.join(work, 'orders.jsonl'), 'utf8').trim().split('\n').length, 1000);
    await run(exports[1]);
    assert.equal(readFileSync(path.join(work, 'orders.csv'), 'utf8').trim().split('\r\n').length, 1 + 934);
    assert.match((await run(exports[2])).out, /\(first 5 rows\)/);

    // … and by hand: each part after the first is one way, run with the first part's S and ID set to a real
    // backup of the kind it restores (made here: --jobs, gzip; --globals comes from the config; SQLite).
    await run('dbstash backup shop --output-dir /var/backups/dbstash --jobs 2');
    await run('dbstash backup shop --output-dir /var/backups/dbstash --compression gzip');
    await run('dbstash backup ./data/app.db --output-dir /var/backups/dbstash');
    const parts = docBlock('docs/restoring.md', 'By hand, with standard tools')
      .lines.join('\n')
      .split(/\n\s*\n/)
      .map((p) => p.trim());
    assert.equal(parts.length, 6);
    const [prelude, ...ways] = parts;
    assert.match(prelude, /^S=\S+ .*\nID=\S+\n/);
    const script = (way: string) => {
      const ext = [...way.matchAll(/\$ID(\.[a-z.]+[a-z])/g)].map((m) => m[1]).find((e) => e !== '.manifest.json')!;
      const real = newest(ext === '.sqlite.zst' ? 'app' : 'shop', ext, ext === '.sqlite.zst' ? 'sqlite' : 'postgres');
      return `set -e\n${prelude.replace(/^S=\S+/m, `S=${real.dir}`).replace(/^ID=\S+/m, `ID=${real.id}`)}\n${way}`;
    };
    const scratch = (n: string) => {
      const d = path.join(box, 'by-hand', n);
      mkdirSync(d, { recursive: true });
      return d;
    };
    const [custom, parallel, gzip, roles, sqlite] = ways;
    assert.match(custom, /^# PostgreSQL, custom format/);
    await run('dropdb --if-exists shop_restoring && dropdb --if-exists shop_before');
    await pg.query(`DELETE FROM orders WHERE id > 10`, 'shop');
    const c = await run(script(custom), { cwd: scratch('custom') });
    assert.match(c.out, /: OK$/m, 'sha256sum -c checks every artifact');
    assert.match(c.out, /"encoding": "UTF8"/);
    assert.equal(await orders('shop'), 1000, 'the restored database is shop now');
    assert.equal(await orders('shop_before'), 10, 'and the one it replaced is kept');
    for (const [way, name] of [[parallel, 'parallel'], [gzip, 'gzip']] as const) {
      await run('dropdb --if-exists shop_restoring && createdb -O app shop_restoring');
      await run(script(way), { cwd: scratch(name) });
      assert.equal(await orders('shop_restoring'), 1000, name);
    }
    assert.match((await run(script(roles), { cwd: scratch('roles'), env: { PGUSER: 'postgres', PGPASSWORD: pg.password } })).out, /role "app" already exists/);
    const data = path.join(work, 'data');
    await run(script(sqlite), { cwd: data });
    assert.ok(existsSync(path.join(data, 'app.before.db')));
    const restoredApp = new Database(path.join(data, 'app.db'), { readonly: true });
    assert.equal((restoredApp.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n, 2);
    restoredApp.close();

    // docs/storage.md: S3 with the SDK's variables; several destinations and copies with its config.
    const creds = (l: string) => l.replace('AWS_ACCESS_KEY_ID=…', `AWS_ACCESS_KEY_ID=${s3.accessKeyId}`).replace('AWS_SECRET_ACCESS_KEY=…', `AWS_SECRET_ACCESS_KEY=${s3.secretAccessKey}`);
    const s3Block = docBlock('docs/storage.md', 'S3 and S3-compatible stores');
    assert.match((await run(`set -e\n${creds(s3Block.lines.join('\n'))}`, { env: { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_REGION: undefined } })).out, /shop\.[0-9a-f]{8}_dev_/);
    const storageDir = path.join(box, 'storage-reader');
    mkdirSync(storageDir);
    const storageYaml = codeBlocks('docs/storage.md').find((b) => b.lang === 'yaml' && b.lines.some((l) => l.startsWith('databases:')))!;
    writeFileSync(path.join(storageDir, 'dbstash.yaml'), here(storageYaml.lines.join('\n')));
    const [destinations] = commandLines(docBlock('docs/storage.md', 'Several destinations (3-2-1)'));
    // The same database into the same bucket: a backup id is stamped to the second, and a second
    // backup within the same second is refused as "already exists" (nothing is overwritten).
    await new Promise((r) => setTimeout(r, 1010 - (Date.now() % 1000)));
    await run(destinations, { cwd: storageDir });
    const copies = commandLines(docBlock('docs/storage.md', 'Copying between storages'));
    assert.equal(copies.length, 2);
    const oldest = readdirSync(newest('shop', '.dump.gz', 'postgres').dir).find((f) => f.endsWith('.dump.gz'))!.replace('.dump.gz', '');
    theirs.push([/shop\.[0-9a-f]{8}_prod_\S+/.exec(copies[0])![0], oldest]);
    assert.match((await run(copies[0], { cwd: storageDir })).out, new RegExp(oldest));
    await run(copies[1], { cwd: storageDir });

    // docs/mysql.md: the URL and the DB_* variables; by hand, the dump and the users and grants.
    const myReader = path.join(box, 'mysql-reader');
    mkdirSync(myReader);
    const myLines = commandLines(docBlock('docs/mysql.md', 'MySQL and MariaDB'));
    assert.equal(myLines.length, 3);
    await run(myLines[0], { cwd: myReader, env: { DATABASE_URL: undefined } });
    await run(myLines[1].replace('DB_HOST=db.internal', `DB_HOST=127.0.0.1 DB_PORT=${my.port}`).replace('DB_PASSWORD=…', 'DB_PASSWORD=secret'), { cwd: myReader, env: { DATABASE_URL: undefined } });
    // (the third connects through the server's socket as an OS user of that host: test/mysql covers sockets)
    await run(`dbstash backup mysql://root:${my.password}@127.0.0.1:${my.port}/shop --globals --env prod`, { cwd: myReader, env: { DATABASE_URL: undefined } });
    const myByHand = commandLines(docBlock('docs/mysql.md', 'By hand, without dbstash'));
    assert.equal(myByHand.length, 3);
    await run(`mariadb -e 'DROP DATABASE IF EXISTS shop_restored'`);
    await run(myByHand[0]);
    const dump = realFile(myByHand[1]);
    await run(dump.line, { cwd: dump.dir });
    assert.deepEqual(await my.query(`SELECT label FROM shop_restored.items ORDER BY id`), [{ label: 'one' }, { label: 'two' }, { label: 'three' }]);
    const grants = realFile(myByHand[2]);
    assert.match(grants.file, /\.globals\.sql\.zst$/);
    await run(grants.line, { cwd: grants.dir });

    // docs/operations.md: prune and status with its config (notifications pointed nowhere: neither sends any).
    const opsDir = path.join(box, 'ops-reader');
    mkdirSync(opsDir);
    const opsYaml = codeBlocks('docs/operations.md').find((b) => b.lang === 'yaml' && b.lines.some((l) => l.startsWith('databases:')))!;
    writeFileSync(path.join(opsDir, 'dbstash.yaml'), here(opsYaml.lines.join('\n')));
    const quiet = { SLACK_WEBHOOK_URL: 'http://127.0.0.1:9/slack', HC_UUID: 'none', SMTP_PASSWORD: 'none' };
    const prune = commandLines(docBlock('docs/operations.md', 'Prune'));
    assert.equal(prune.length, 3);
    assert.match((await run(prune[0], { cwd: opsDir, env: quiet })).out, /keep/);
    await run(prune[1], { cwd: opsDir, env: quiet });
    await run(prune[2], { cwd: opsDir, env: quiet });
    const status = commandLines(docBlock('docs/operations.md', 'Status'));
    assert.equal(status.length, 3);
    assert.match((await run(status[0], { cwd: opsDir, env: quiet, codes: [0, 13] })).out, /^shop — postgres:\/\/(localhost|127\.0\.0\.1):\d+\/shop$/m);
    const json = await run(status[1], { cwd: opsDir, env: quiet, codes: [0, 13] });
    assert.ok(JSON.parse(json.stdout), 'status --json prints JSON');
    assert.match((await run(status[2], { cwd: opsDir, env: quiet, codes: [0, 13] })).out, /app\./);

    // Every shell block of docs/ was run, or is named here with the reason it is not.
    const notRun = new Map<string, string>([
      ['docs/operations.md:Cron and systemd timers instead of the daemon', 'writes the system\'s units and runs systemctl: test/ops/schedule.test.ts runs these with --unit-dir'],
      ['docs/operations.md:Status', 'the second block: a crontab line mailing `dbstash status` when unhealthy (its status command runs above; no cron or mail here)'],
      ['docs/performance.md', 'the benchmark (minutes on end) and the commands that made the figures shown: npm run bench'],
      ['docs/pitr.md', 'run line by line by test/pitr/pitr.test.ts, against a cluster whose archive_command is dbstash wal push'],
      ['docs/fleet.md', 'the fleet needs a PostgreSQL control database: test/fleet/fleet.test.ts starts one and runs worker (with --tags, --concurrency), run (with --wait), two daemons and daemon --agent against it; worker and daemon serve until stopped'],
      ['docs/dashboard.md', 'the API blocks run as written by test/web/api.test.ts against a dashboard on a free port; `user add` asks on a terminal (api.test.ts runs it with --password-stdin) and `dashboard` serves until stopped (every web test starts one)'],
      // The remote stores' blocks reach a real cloud account (az, a B2 or Drive remote made with rclone's wizard) or
      // change the system (useradd, sshd_config): the drivers' tests do the same against Azurite, a harness sshd
      // and rclone remotes of rclone's own (test/contract/*-driver.test.ts, test/drivers/remote.test.ts).
      ['docs/storage.md:Azure Blob Storage', 'an Azure account\'s variables: test/drivers/remote.test.ts backs up to Azurite with a connection string from the environment'],
      ['docs/storage.md:A minimal account', 'az against a real subscription (Azure), useradd and sshd_config on a server (SFTP)'],
      ['docs/storage.md:Access tiers and rehydration', 'az against a real account: test/contract/azure-driver.test.ts archives a blob in Azurite and checks the rehydration hint'],
      ['docs/storage.md:By hand, without dbstash', 'az, rclone and sftp against real accounts and servers'],
      ['docs/storage.md:rclone remotes', 'rclone config is an interactive wizard and the remote a real B2 account: the rclone tests use a generated rclone.conf'],
      ['docs/storage.md:SFTP servers', 'a real server\'s host key: test/contract/sftp-driver.test.ts refuses an unknown host with the fingerprint and accepts it once in known_hosts'],
      ['docs/storage.md:Host keys (known_hosts)', 'reads a server\'s own host key file'],
    ]);
    for (const file of DOCS.filter((f) => f.startsWith('docs/'))) {
      for (const b of codeBlocks(file).filter((x) => x.lang === 'sh')) {
        if (ranDocs.has(`${file}:${b.line}`)) continue;
        assert.ok(notRun.has(`${file}:${b.heading}`) || notRun.has(file), `${file}:${b.line} (under "${b.heading}") is neither run nor named`);
      }
    }
  });
});
