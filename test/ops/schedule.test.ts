// dbstash schedule: crontab blocks and systemd units written into temp locations (never the real
// crontab or /etc). Installing is idempotent, status tells up to date from out of date, uninstall
// restores what was there; the timers' OnCalendar= is checked by systemd-analyze to fire exactly
// when croner (the daemon's scheduler) fires; the installed command line really backs up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Cron } from 'croner';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb, writeConfig } from './helpers.js';
import { seriesDir } from '../harness/stash.js';

function setup(schedules: Record<string, Record<string, string>>) {
  const dir = tempDir('schedule');
  const databases = Object.fromEntries(
    Object.entries(schedules).map(([name, schedule]) => [name, { url: makeSqliteDb(path.join(dir, `${name}.db`), 10), schedule }]),
  );
  const write = (s = databases) => writeConfig(dir, { stash: path.join(dir, 'stash'), databases: s });
  return { dir, config: write(), databases, write };
}

test('cron: install keeps other lines and is idempotent; status and uninstall; the installed line really backs up', async () => {
  const { dir, config, databases, write } = setup({ shop: { backup: '0 3 * * *', prune: '30 4 * * 1-5', timezone: 'Europe/Berlin' }, app: { backup: '*/15 * * * *' } });
  const tab = path.join(dir, 'crontab');
  const mine = 'MAILTO=ops@example.test\n17 * * * * /usr/local/bin/something\n';
  writeFileSync(tab, mine);
  const flags = ['--cron', '--crontab-file', tab, '--config', config];

  const notYet = await runCli(['schedule', 'status', ...flags]);
  assert.equal(notYet.code, 13);
  assert.match(notYet.stdout, /not installed/);
  const first = await runCli(['schedule', 'install', ...flags]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^installed: 3 schedules of /);
  const text = readFileSync(tab, 'utf8');
  assert.ok(text.startsWith(mine), 'the lines that were there stay first');
  const block = text.slice(mine.length).split('\n');
  assert.equal(block[0], `# BEGIN dbstash ${config}`);
  assert.match(block[2], /^\*\/15 \* \* \* \* cd \S+ && \S+ \S+ backup app --config \S+ --quiet  # dbstash-app-backup$/);
  assert.equal(block[3], 'CRON_TZ=Europe/Berlin', 'schedules with a time zone come after those without');
  assert.match(block[4], /^0 3 \* \* \* .* backup shop /);
  assert.match(block[5], /^30 4 \* \* 1-5 .* prune shop /);

  const again = await runCli(['schedule', 'install', ...flags]);
  assert.match(again.stdout, /already installed, unchanged/);
  assert.equal(readFileSync(tab, 'utf8'), text);
  assert.equal((await runCli(['schedule', 'status', ...flags])).code, 0);

  write({ ...databases, shop: { ...databases.shop, schedule: { backup: '0 2 * * *' } } });
  const changed = await runCli(['schedule', 'status', ...flags, '--json']);
  assert.equal(changed.code, 13);
  assert.equal(JSON.parse(changed.stdout).state, 'out of date');
  assert.equal((await runCli(['schedule', 'install', ...flags])).code, 0);
  const updated = readFileSync(tab, 'utf8');
  assert.equal(updated.split(`# BEGIN dbstash ${config}`).length, 2, 'one block, replaced');
  assert.match(updated, /^0 2 \* \* \* .* backup shop /m);
  assert.doesNotMatch(updated, /prune shop/);

  // The installed command line, run the way cron runs it, makes a backup.
  const line = updated.split('\n').find((l) => l.endsWith('# dbstash-app-backup'))!;
  const command = line.split(' ').slice(5).join(' ');
  const ran = spawnSync('/bin/sh', ['-c', command], { encoding: 'utf8' });
  assert.equal(ran.status, 0, ran.stderr);
  assert.equal(readdirSync(seriesDir(path.join(dir, 'stash'), 'app')).filter((f) => f.endsWith('.manifest.json')).length, 1);

  const removed = await runCli(['schedule', 'uninstall', ...flags]);
  assert.match(removed.stdout, /^removed: /);
  assert.equal(readFileSync(tab, 'utf8'), mine);
  assert.match((await runCli(['schedule', 'uninstall', ...flags])).stdout, /nothing to remove/);
  assert.equal(readFileSync(tab, 'utf8'), mine);
});

test('cron refuses a seconds field; bad actions and flags are usage errors; nothing is written', async () => {
  const { dir, config } = setup({ app: { backup: '*/5 * * * * *' } });
  const tab = path.join(dir, 'crontab');
  const r = await runCli(['schedule', 'install', '--cron', '--crontab-file', tab, '--config', config]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /error: databases\.app\.schedule\.backup: cron needs 5 fields, "\*\/5 \* \* \* \* \*" has 6\nhint: .*--systemd/);
  assert.ok(!existsSync(tab));
  assert.equal((await runCli(['schedule', 'install', '--config', config])).code, 2);
  assert.match((await runCli(['schedule', 'enable', '--cron', '--config', config])).stderr, /error: unknown action "enable"\nhint: use install, status or uninstall/);
  const invalid = writeConfig(dir, { databases: { app: { url: 'x.db', schedule: { backup: '61 * * * *' } } } }, 'bad.yaml');
  const bad = await runCli(['schedule', 'install', '--cron', '--crontab-file', tab, '--config', invalid]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /databases\.app\.schedule\.backup: "61 \* \* \* \*" is not a valid cron expression/);
});

test('systemd: timers fire when croner fires (systemd-analyze), install is idempotent, uninstall removes only this config\'s units', async () => {
  const schedules = {
    shop: { backup: '0 3 * * *', verify: '0 5 * * sun', prune: '30 4 * * 1-5', timezone: 'Europe/Berlin' },
    app: { backup: '*/15 * * * *' },
    fast: { backup: '*/20 * * * * *' },
    monthly: { backup: '15 2 1 */3 *', timezone: 'America/New_York' },
  };
  const { dir, config, databases, write } = setup(schedules);
  const units = path.join(dir, 'units');
  const foreign = path.join(units, 'dbstash-other-backup.timer');
  const flags = ['--systemd', '--unit-dir', units, '--config', config];
  const r = await runCli(['schedule', 'install', ...flags, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.written.length, 12);
  assert.match(out.next, /^systemctl daemon-reload && systemctl enable --now dbstash-shop-backup\.timer /);
  writeFileSync(foreign, '# Managed by dbstash schedule for /elsewhere/dbstash.yaml\n[Timer]\nOnCalendar=daily\n');

  for (const [db, schedule] of Object.entries(schedules)) {
    for (const kind of ['backup', 'verify', 'prune'] as const) {
      const pattern = (schedule as Record<string, string>)[kind];
      if (!pattern) continue;
      const timer = readFileSync(path.join(units, `dbstash-${db}-${kind}.timer`), 'utf8');
      const calendar = /^OnCalendar=(.*)$/m.exec(timer)![1];
      const analyzed = spawnSync('systemd-analyze', ['calendar', '--iterations=3', calendar], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } });
      assert.equal(analyzed.status, 0, `systemd-analyze calendar "${calendar}": ${analyzed.stderr}`);
      const systemdRuns = [...analyzed.stdout.matchAll(/(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC/g)].map((m) => new Date(`${m[1].replace(' ', 'T')}Z`).toISOString());
      assert.equal(systemdRuns.length, 3, analyzed.stdout);
      const cron = new Cron(pattern, { timezone: (schedule as { timezone?: string }).timezone, paused: true });
      const cronerRuns = cron.nextRuns(4, new Date(Date.now() - 1000)).map((d) => d.toISOString());
      cron.stop();
      const at = cronerRuns.indexOf(systemdRuns[0]);
      assert.ok(at >= 0, `${db} ${kind} "${pattern}" → "${calendar}": systemd ${systemdRuns} vs croner ${cronerRuns}`);
      assert.deepEqual(systemdRuns, cronerRuns.slice(at, at + 3));
    }
  }
  const service = readFileSync(path.join(units, 'dbstash-shop-verify.service'), 'utf8');
  assert.match(service, new RegExp(`^WorkingDirectory=${dir}$`, 'm'));
  assert.match(service, /^ExecStart=\S+ \S+ verify --latest shop --drill --config \S+ --quiet$/m);

  const again = await runCli(['schedule', 'install', ...flags, '--json']);
  assert.deepEqual([JSON.parse(again.stdout).written, JSON.parse(again.stdout).removed], [[], []]);
  assert.equal((await runCli(['schedule', 'status', ...flags])).code, 0);

  const { fast: _fast, ...fewer } = databases;
  write(fewer);
  assert.equal((await runCli(['schedule', 'status', ...flags])).code, 13);
  const shrink = JSON.parse((await runCli(['schedule', 'install', ...flags, '--json'])).stdout);
  assert.deepEqual(shrink.removed.sort(), ['dbstash-fast-backup.service', 'dbstash-fast-backup.timer']);

  const gone = await runCli(['schedule', 'uninstall', ...flags]);
  assert.equal(gone.code, 0);
  assert.match(gone.stdout, /then run: systemctl disable --now /);
  assert.deepEqual(readdirSync(units), ['dbstash-other-backup.timer'], 'another config\'s unit stays');

  const both = writeConfig(dir, { databases: { app: { url: 'x.db', schedule: { backup: '0 3 1 * 1' } } } }, 'both.yaml');
  const refused = await runCli(['schedule', 'install', '--systemd', '--unit-dir', units, '--config', both]);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /cannot be expressed as a systemd timer: both day of month and weekday/);
});
