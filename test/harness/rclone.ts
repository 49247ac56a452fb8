/**
 * Throwaway rclone remotes for tests: an rclone.conf in a temp dir that defines `stash`, a
 * `local`-type remote, and `stash-alias`, an `alias` remote onto a folder of the same directory,
 * so the driver goes through rclone's own remote machinery with nothing to start or stop. Files
 * are read back straight from disk, independently of rclone and of the driver under test.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { removeTempDir, tempDir } from './tmp.js';

export interface RcloneRemotes {
  /** The rclone.conf to pass as the storage's `config` option. */
  config: string;
  /** The directory the remotes store into. */
  dir: string;
  /** Where `stash-alias:` points (a folder of dir). */
  aliasDir: string;
  /** `rclone:stash:<dir>/<sub>`. */
  url(sub: string): string;
  /** Every file under dir/<sub> (temporaries and claims included), as sorted "/" paths relative to it. */
  files(sub?: string): Promise<string[]>;
  /**
   * An executable that stands in for rclone: it logs its arguments to `log` (one line per run),
   * then runs `body` (a shell snippet; "$@" are rclone's arguments) or the real rclone.
   */
  wrapper(name: string, body?: string): { binary: string; log: string };
  remove(): Promise<void>;
}

/** The rclone binary is required: a test that cannot find it fails, with what to install. */
export function requireRclone(): string {
  const res = spawnSync('rclone', ['version'], { encoding: 'utf8' });
  if (res.error || res.status !== 0) throw new Error('[harness/rclone] rclone is not installed: apt install rclone (.ci/install-deps)');
  return res.stdout.split('\n')[0];
}

export async function makeRcloneRemotes(): Promise<RcloneRemotes> {
  requireRclone();
  const dir = tempDir('dbstash-rclone');
  const data = path.join(dir, 'data');
  const aliasDir = path.join(data, 'aliased');
  await mkdir(aliasDir, { recursive: true });
  const config = path.join(dir, 'rclone.conf');
  writeFileSync(config, `[stash]\ntype = local\n\n[stash-alias]\ntype = alias\nremote = stash:${aliasDir}\n`, { mode: 0o600 });
  return {
    config,
    dir: data,
    aliasDir,
    url: (sub) => `rclone:stash:${path.join(data, sub)}`,
    async files(sub = '') {
      const root = path.join(data, sub);
      const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
      return entries
        .filter((e) => e.isFile())
        .map((e) => path.relative(root, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
        .sort();
    },
    wrapper(name, body) {
      const binary = path.join(dir, name);
      const log = `${binary}.log`;
      writeFileSync(binary, `#!/bin/sh\necho "$@" >> '${log}'\n${body ?? 'exec rclone "$@"'}\n`);
      chmodSync(binary, 0o755);
      return { binary, log };
    },
    remove: () => removeTempDir(dir),
  };
}
