// Shared by the operations tests: small real SQLite databases, config files and stashes in temp dirs.

import { copyFileSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { stringify } from 'yaml';
import { makeBackupId } from '../../src/core/id.js';
import { folderOf } from '../harness/stash.js';

/** A SQLite database with one table of `rows` rows of some text (about 100 bytes each). */
export function makeSqliteDb(file: string, rows: number): string {
  const db = new Database(file);
  db.exec('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  db.exec('DELETE FROM items');
  const insert = db.prepare('INSERT INTO items (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`item ${i} `.padEnd(100, 'x'));
  })();
  db.exec('VACUUM');
  db.close();
  return file;
}

export function writeConfig(dir: string, config: unknown, name = 'dbstash.yaml'): string {
  const file = path.join(dir, name);
  writeFileSync(file, stringify(config));
  return file;
}

/**
 * Copies a real backup (artifacts and manifest) under the id it would have had at `at`, so a
 * test can build a stash spanning weeks from one real backup. Returns the new id.
 */
export function cloneBackup(stash: string, sourceId: string, at: Date, labels: Record<string, string> = {}): string {
  const folder = folderOf(sourceId);
  const dir = path.join(stash, folder);
  const manifest = JSON.parse(readFileSync(path.join(dir, `${sourceId}.manifest.json`), 'utf8'));
  const id = makeBackupId(folder, manifest.environment, at);
  for (const a of manifest.artifacts) {
    const file = a.file.replace(sourceId, id);
    copyFileSync(path.join(dir, a.file), path.join(dir, file));
    a.file = file;
  }
  const ms = Date.parse(manifest.finishedAt) - Date.parse(manifest.startedAt);
  Object.assign(manifest, { id, startedAt: at.toISOString(), finishedAt: new Date(at.getTime() + ms).toISOString(), labels });
  writeFileSync(path.join(dir, `${id}.manifest.json`), JSON.stringify(manifest, null, 2) + '\n');
  return id;
}

/** Sets a file's modification time to `ageMs` ago. */
export function age(file: string, ageMs: number): void {
  const t = new Date(Date.now() - ageMs);
  utimesSync(file, t, t);
}
