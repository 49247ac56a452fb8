/** The engine contract suite against SQLite files (the online backup API; no server, no credentials, no dump tool). */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Target } from '../../src/engines/engine.js';
import { parseTarget } from '../../src/engines/target.js';
import { ALL_BYTES, bigValue, canonicalRow, HOSTILE_TEXT, JSON_TEXT, ODD_TABLE, runEngineContract, type DbPicture } from './engine.js';

let dir: string;

function createSource(file: string): void {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    db.exec(`CREATE TABLE "${ODD_TABLE}" (
      id INTEGER PRIMARY KEY,
      "Mixed Case" TEXT, "select" TEXT, "with space" TEXT,
      t TEXT, b BLOB, big BLOB,
      ts TEXT, num TEXT, exact NUMERIC, f REAL,
      j TEXT CHECK (j IS NULL OR json_valid(j)),
      g INTEGER GENERATED ALWAYS AS (id * 2) STORED,
      gv TEXT GENERATED ALWAYS AS ('v' || "select") VIRTUAL
    )`);
    db.exec(`CREATE TABLE "order" ("key" INTEGER PRIMARY KEY AUTOINCREMENT, "Desc" TEXT NOT NULL DEFAULT '')`);
    db.exec(`INSERT INTO "order" ("Desc") VALUES ('a'), (''), ('😀')`);
    db.exec(`CREATE VIEW "odd view" AS SELECT id, "select" FROM "${ODD_TABLE}" WHERE id > 1`);
    db.exec(`CREATE TRIGGER "order bi" BEFORE INSERT ON "order" BEGIN SELECT 1; END`);
    const ins = db.prepare(`INSERT INTO "${ODD_TABLE}" (id, "Mixed Case", "select", "with space", t, b, big, ts, num, exact, f, j) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    ins.run(1, null, null, null, null, null, null, null, null, null, null, null);
    ins.run(2, '', '', '', '', Buffer.alloc(0), Buffer.alloc(0), '', '', 0, 0, '{}');
    ins.run(3, HOSTILE_TEXT, 'from', ' leading and trailing ', HOSTILE_TEXT, ALL_BYTES, ALL_BYTES, '2026-03-29T02:30:00.123456+02:00', '-12345678901234567890123456789012345.123456789012345678901234567890', 9007199254740993n, 0.1 + 0.2, JSON_TEXT);
    ins.run(4, 'big', 'big', 'big', 'x', Buffer.from([0]), bigValue(), '1970-01-01T00:00:00Z', '1e-30', -1, -1.7976931348623157e308, '[]');
  } finally {
    db.close();
  }
}

function picture(target: Target): DbPicture {
  const db = new Database(target.path!, { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const objects = db.prepare(`SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name`).all() as { type: string; name: string; sql: string }[];
    const tables: DbPicture['tables'] = {};
    for (const o of objects.filter((x) => x.type === 'table')) {
      const cols = (db.prepare(`SELECT name FROM pragma_table_xinfo(?)`).all(o.name) as { name: string }[]).map((c) => `"${c.name.replace(/"/g, '""')}"`);
      const rows = db.prepare(`SELECT ${cols.join(', ')} FROM "${o.name.replace(/"/g, '""')}" ORDER BY 1`).all() as Record<string, unknown>[];
      tables[o.name] = rows.map(canonicalRow);
    }
    return { schema: objects.map((o) => `${o.type} ${o.name}: ${o.sql}`).join('\n'), tables };
  } finally {
    db.close();
  }
}

runEngineContract('sqlite', {
  engine: 'sqlite',
  async setUp() {
    dir = mkdtempSync(path.join(os.tmpdir(), 'dbstash-contract-sqlite-'));
    createSource(path.join(dir, 'shop.db'));
  },
  async tearDown() {
    rmSync(dir, { recursive: true, force: true });
  },
  sourceUrl: () => path.join(dir, 'shop.db'),
  async scratchTarget(name) {
    return parseTarget(path.join(dir, `${name}.db`));
  },
  picture: async (target) => picture(target),
  restoreUrl: (name) => path.join(dir, `${name}.db`),
  failures: {
    badCredentials: { notApplicable: 'a SQLite database is a file; it has no credentials' },
    missingDatabase: { url: () => path.join(dir, 'no_such_db.db'), message: /no_such_db\.db does not exist/ },
    unreachableHost: { notApplicable: 'a SQLite database is a local file, there is no host' },
    silentServer: { notApplicable: 'a SQLite database is a local file, there is no server to wait for' },
    missingDumpTool: { notApplicable: 'SQLite backups use the online backup API inside dbstash, no external dump tool' },
    dumpToolProcess: { notApplicable: 'there is no dump tool process to kill; the online backup API runs in-process' },
  },
});
