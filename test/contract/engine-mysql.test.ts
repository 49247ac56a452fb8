/** The engine contract suite against a throwaway MariaDB server. */
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

async function createSource(): Promise<void> {
  await server.query(`SET GLOBAL max_allowed_packet = 1073741824`);
  await server.createDatabase('shop');
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
    await conn.query(`CREATE TABLE \`order\` (\`key\` INT AUTO_INCREMENT PRIMARY KEY, \`Desc\` VARCHAR(50) NOT NULL DEFAULT '') ENGINE=InnoDB`);
    await conn.query(`INSERT INTO \`order\` (\`Desc\`) VALUES ('a'), (''), ('😀')`);
    await conn.query(`CREATE VIEW \`odd view\` AS SELECT id, \`select\` FROM ${q(ODD_TABLE)} WHERE id > 1`);
    await conn.query(`CREATE TRIGGER \`order bi\` BEFORE INSERT ON \`order\` FOR EACH ROW SET NEW.\`Desc\` = TRIM(NEW.\`Desc\`)`);
    await conn.query(`CREATE PROCEDURE \`count odd\`() SELECT COUNT(*) FROM ${q(ODD_TABLE)}`);
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
      if (o.type !== 'BASE TABLE') continue;
      const [rows] = await conn.query(`SELECT * FROM ${q(o.name)} ORDER BY 1`);
      tables[o.name] = (rows as Record<string, unknown>[]).map(canonicalRow);
    }
    const [triggers] = await conn.query(`SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1`);
    for (const t of triggers as { name: string }[]) {
      const [c] = await conn.query(`SHOW CREATE TRIGGER ${q(t.name)}`);
      schema.push((c as Record<string, string>[])[0]['SQL Original Statement']);
    }
    const [routines] = await conn.query(`SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS type FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1`);
    for (const r of routines as { name: string; type: string }[]) {
      const [c] = await conn.query(`SHOW CREATE ${r.type} ${q(r.name)}`);
      schema.push(Object.values((c as Record<string, string>[])[0])[2]);
    }
    return { schema: schema.join('\n;\n'), tables };
  } finally {
    await conn.end();
  }
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
  async scratchTarget(name) {
    const engine = await loadEngine('mysql');
    return engine.createDatabase!(parseTarget(server.url('shop')), name);
  },
  picture,
  failures: {
    badCredentials: { url: () => `mysql://root:wrong-password@127.0.0.1:${server.port}/shop`, message: /authentication failed/ },
    missingDatabase: { url: () => server.url('no_such_db'), message: /database "no_such_db" does not exist/ },
    unreachableHost: { url: () => `mysql://root:x@127.0.0.1:${deadPort}/shop`, message: /connection refused/ },
    silentServer: (port) => `mysql://root:x@127.0.0.1:${port}/shop`,
    missingDumpTool: { url: () => server.url('shop'), args: () => ['--bin-dir', emptyBinDir], message: /mariadb-dump or mysqldump not found/ },
    dumpToolProcess: 'mariadb-dump',
  },
});
