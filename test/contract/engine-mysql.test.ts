/**
 * The engine contract suite against a throwaway MariaDB server. The source database is latin1
 * with a non-default collation and a comment, and holds one of each table type the server has
 * (base, system-versioned with history, sequence) and each kind of object (views, triggers,
 * procedures, functions, a package, an event), created under differing session settings: a
 * utf8mb3 client, other sql_modes, another definer, SQL SECURITY INVOKER.
 */
import mysql from 'mysql2/promise';
import { loadEngine } from '../../src/engines/index.js';
import type { Target } from '../../src/engines/engine.js';
import { parseTarget } from '../../src/engines/target.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { freePort } from '../harness/proc.js';
import { tempDir } from '../harness/tmp.js';
import { ALL_BYTES, bigValue, canonicalRow, HOSTILE_TEXT, JSON_TEXT, ODD_TABLE, runEngineContract, type DbPicture } from './engine.js';

let server: MariaServer;
let emptyBinDir: string;
let deadPort: number;

const q = (name: string) => mysql.escapeId(name);
const SYSTEM_VERSIONED = 'versioned';

async function createSource(): Promise<void> {
  await server.query(`SET GLOBAL max_allowed_packet = 1073741824`);
  await server.query(`CREATE DATABASE shop CHARACTER SET latin1 COLLATE latin1_german1_ci COMMENT 'the shop; süß'`);
  await server.query(`CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'`);
  const conn = await mysql.createConnection({ host: server.host, port: server.port, user: 'root', password: server.password, database: 'shop', charset: 'utf8mb4_general_ci' });
  try {
    await conn.query(`CREATE TABLE ${q(ODD_TABLE)} (
      id INT PRIMARY KEY,
      \`Mixed Case\` TEXT, \`select\` VARCHAR(100), \`with space\` TEXT,
      t LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
      b VARBINARY(1024), big LONGBLOB,
      ts TIMESTAMP(6) NULL, dt DATETIME(6) NULL,
      num DECIMAL(65,30), f DOUBLE,
      j JSON,
      g_stored BIGINT AS (id * 2) STORED,
      g_virtual VARCHAR(200) AS (CONCAT('v', \`select\`)) VIRTUAL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
    await conn.query(`CREATE TABLE \`order\` (\`key\` INT AUTO_INCREMENT PRIMARY KEY, \`Desc\` VARCHAR(50) NOT NULL DEFAULT '') ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
    await conn.query(`INSERT INTO \`order\` (\`Desc\`) VALUES ('a'), (''), ('😀')`);
    // A system-versioned table with history (updated and deleted rows), and a used sequence.
    await conn.query(`CREATE TABLE ${SYSTEM_VERSIONED} (id INT PRIMARY KEY, note VARCHAR(20)) WITH SYSTEM VERSIONING`);
    await conn.query(`INSERT INTO ${SYSTEM_VERSIONED} VALUES (1, 'first'), (2, 'second'), (3, 'third')`);
    await conn.query(`UPDATE ${SYSTEM_VERSIONED} SET note = 'changed' WHERE id = 1`);
    await conn.query(`DELETE FROM ${SYSTEM_VERSIONED} WHERE id = 2`);
    await conn.query(`CREATE SEQUENCE \`order seq\` START WITH 100 INCREMENT BY 5`);
    await conn.query(`SELECT NEXTVAL(\`order seq\`)`);
    await conn.query(`CREATE VIEW \`odd view\` AS SELECT id, \`select\` FROM ${q(ODD_TABLE)} WHERE id > 1`);
    await conn.query(`CREATE TRIGGER \`order bi\` BEFORE INSERT ON \`order\` FOR EACH ROW SET NEW.\`Desc\` = TRIM(NEW.\`Desc\`)`);
    await conn.query(`CREATE PROCEDURE \`count odd\`() SELECT COUNT(*) FROM ${q(ODD_TABLE)}`);
    // Objects an older client created: utf8mb3 session, latin1 literals, other sql_modes, another
    // definer, SQL SECURITY INVOKER, a time zone for the event.
    await conn.query(`SET NAMES utf8mb3`);
    await conn.query(`CREATE DEFINER = 'app'@'%' SQL SECURITY INVOKER VIEW \`names view\` AS SELECT \`key\`, \`Desc\` FROM \`order\``);
    await conn.query(`CREATE VIEW \`on a view\` AS SELECT \`key\` FROM \`names view\` WHERE \`key\` > 1`);
    await conn.query(`CREATE TRIGGER ${SYSTEM_VERSIONED}_bu BEFORE UPDATE ON ${SYSTEM_VERSIONED} FOR EACH ROW SET NEW.note = CONCAT(NEW.note, '!')`);
    await conn.query(`SET sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT'`);
    await conn.query(`CREATE DEFINER = 'app'@'%' FUNCTION "greeting"(who VARCHAR(20)) RETURNS VARCHAR(40) DETERMINISTIC RETURN 'hello ' || who`);
    await conn.query(`SET NAMES latin1`);
    await conn.query(`SET sql_mode = 'STRICT_ALL_TABLES', time_zone = '+03:00'`);
    await conn.query(`CREATE EVENT \`nightly\` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00' DISABLE COMMENT 'nightly cleanup' DO DELETE FROM \`order\` WHERE \`key\` < 0`);
    await conn.query(`CREATE PROCEDURE \`latin1 proc\`() SQL SECURITY INVOKER SELECT 'Grüße' AS greeting`);
    await conn.query(`SET sql_mode = 'ORACLE'`);
    await conn.query(`CREATE PACKAGE shop_pkg AS FUNCTION answer RETURN INT; END`);
    await conn.query(`CREATE PACKAGE BODY shop_pkg AS FUNCTION answer RETURN INT AS BEGIN RETURN 42; END; END`);
    await conn.query(`SET NAMES utf8mb4 COLLATE utf8mb4_general_ci`);
    await conn.query(`SET sql_mode = DEFAULT, time_zone = '+00:00'`);
    // Timestamps are entered in a non-UTC session zone: the dump must keep the instant.
    await conn.query(`SET time_zone = '+05:30'`);
    const cols = 'id, `Mixed Case`, `select`, `with space`, t, b, big, ts, dt, num, f, j';
    const ins = `INSERT INTO ${q(ODD_TABLE)} (${cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;
    await conn.query(ins, [1, null, null, null, null, null, null, null, null, null, null, null]);
    await conn.query(ins, [2, '', '', '', '', Buffer.alloc(0), Buffer.alloc(0), null, null, '0', 0, '{}']);
    await conn.query(ins, [
      3, HOSTILE_TEXT, 'from', ' leading and trailing ', HOSTILE_TEXT, ALL_BYTES, ALL_BYTES,
      '2026-03-29 02:30:00.123456', '2026-10-25 02:59:59.999999',
      '-12345678901234567890123456789012345.123456789012345678901234567891', 0.1 + 0.2, JSON_TEXT,
    ]);
    await conn.query(ins, [4, 'big', 'big', 'big', 'x', Buffer.from([0]), bigValue(), '1970-01-01 05:30:01', '9999-12-31 23:59:59.999999', '1e-30', -1.7976931348623157e308, '[]']);
  } finally {
    await conn.end();
  }
}

async function picture(target: Target): Promise<DbPicture> {
  const conn = await mysql.createConnection({
    host: server.host, port: server.port, user: 'root', password: server.password, database: target.database,
    charset: 'utf8mb4_general_ci', dateStrings: true, supportBigNumbers: true, bigNumberStrings: true,
  });
  try {
    await conn.query(`SET time_zone = '+00:00'`);
    const schema: string[] = [];
    const tables: DbPicture['tables'] = {};
    const [objects] = await conn.query(`SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY BINARY TABLE_NAME`);
    for (const o of objects as { name: string; type: string }[]) {
      const [create] = await conn.query(`SHOW CREATE TABLE ${q(o.name)}`);
      schema.push(Object.values((create as Record<string, string>[])[0])[1]);
      if (o.type === 'VIEW') continue;
      // Every row a table has held, with the times it was current; a sequence's one row is its state.
      const history = o.type === 'SYSTEM VERSIONED' ? ', ROW_START, ROW_END' : '';
      const [rows] = await conn.query(`SELECT *${history} FROM ${q(o.name)}${history ? ' FOR SYSTEM_TIME ALL' : ''} ORDER BY 1${history ? ', ROW_START' : ''}`);
      tables[o.name] = (rows as Record<string, unknown>[]).map(canonicalRow);
    }
    const [triggers] = await conn.query(`SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1`);
    for (const t of triggers as { name: string }[]) {
      const [c] = await conn.query(`SHOW CREATE TRIGGER ${q(t.name)}`);
      schema.push((c as Record<string, string>[])[0]['SQL Original Statement']);
    }
    const [routines] = await conn.query(`SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS type FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1, 2`);
    for (const r of routines as { name: string; type: string }[]) {
      const [c] = await conn.query(`SHOW CREATE ${r.type} ${q(r.name)}`);
      schema.push(Object.values((c as Record<string, string>[])[0])[2]);
    }
    const [events] = await conn.query(`SELECT EVENT_NAME AS name FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY 1`);
    for (const e of events as { name: string }[]) {
      const [c] = await conn.query(`SHOW CREATE EVENT ${q(e.name)}`);
      schema.push((c as Record<string, string>[])[0]['Create Event']);
    }
    return { schema: schema.join('\n;\n'), tables };
  } finally {
    await conn.end();
  }
}

/**
 * The session settings every view, trigger, routine and event was created with, and the
 * database's own properties, as information_schema reports them.
 */
async function metadata(target: Target): Promise<Record<string, unknown>> {
  const db = target.database;
  const rows = async (sql: string) => (await server.query<mysql.RowDataPacket[]>(sql.replace(/\?/g, mysql.escape(db)))).map((r) => ({ ...r }));
  return {
    database: await rows(`SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`),
    tables: await rows(`SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY BINARY TABLE_NAME`),
    views: await rows(
      `SELECT TABLE_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DEFINER, SECURITY_TYPE, CHECK_OPTION, ALGORITHM
       FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY BINARY TABLE_NAME`,
    ),
    triggers: await rows(
      `SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, DEFINER
       FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY BINARY TRIGGER_NAME`,
    ),
    routines: await rows(
      `SELECT ROUTINE_NAME, ROUTINE_TYPE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, DEFINER, SECURITY_TYPE
       FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY BINARY ROUTINE_NAME, ROUTINE_TYPE`,
    ),
    events: await rows(
      `SELECT EVENT_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, DEFINER, TIME_ZONE, STATUS, EVENT_COMMENT
       FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY BINARY EVENT_NAME`,
    ),
  };
}

runEngineContract('mysql (MariaDB)', {
  engine: 'mysql',
  async setUp() {
    server = await startMariadb();
    emptyBinDir = tempDir('dbstash-no-tools');
    deadPort = await freePort();
    await createSource();
  },
  async tearDown() {
    await server?.stop();
  },
  sourceUrl: () => server.url('shop'),
  async scratchTarget(name, properties) {
    const engine = await loadEngine('mysql');
    return engine.createDatabase!(parseTarget(server.url('shop')), name, { properties });
  },
  picture,
  metadata,
  restoreUrl: (name) => server.url(name),
  failures: {
    badCredentials: { url: () => `mysql://root:wrong-password@127.0.0.1:${server.port}/shop`, message: /authentication failed/ },
    missingDatabase: { url: () => server.url('no_such_db'), message: /database "no_such_db" does not exist/ },
    unreachableHost: { url: () => `mysql://root:x@127.0.0.1:${deadPort}/shop`, message: /connection refused/ },
    silentServer: (port) => `mysql://root:x@127.0.0.1:${port}/shop`,
    missingDumpTool: { url: () => server.url('shop'), args: () => ['--bin-dir', emptyBinDir], message: /mariadb-dump or mysqldump not found/ },
    dumpToolProcess: 'mariadb-dump',
  },
});
