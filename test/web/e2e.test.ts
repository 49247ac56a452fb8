/**
 * The dashboard end to end in a real browser: Playwright (playwright-core) driving Debian's
 * Chromium against `dbstash dashboard` with real SQLite and PostgreSQL databases. Log in; the
 * overview lists the databases; "Back up now" streams the job's events and the backup appears in
 * the history; "Drill now" shows its result; a failing backup shows red with its reason; a hostile
 * label and table name render as text; a viewer sees no action buttons and its POST is refused, yet
 * sees the retention policy's preview.
 * With DBSTASH_SCREENSHOTS=<dir>, each page is also saved there, desktop and narrow.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startDashboardFixture, HOSTILE, PASSWORDS, type DashboardFixture } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
let d: DashboardFixture;
let browser: Browser;
const shots = process.env.DBSTASH_SCREENSHOTS;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (.ci/install-deps does)`);
  d = await startDashboardFixture();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  if (shots) mkdirSync(shots, { recursive: true });
});
after(async () => {
  await browser?.close();
  await d?.stop();
});

async function loggedIn(user: keyof typeof PASSWORDS, viewport = { width: 1280, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport, baseURL: d.url });
  const page = await context.newPage();
  page.on('dialog', (dialog) => {
    void dialog.dismiss();
    throw new Error(`a dialog opened: ${dialog.message()} (script ran from page content)`);
  });
  await page.goto('/login');
  await page.getByLabel('User').fill(user);
  await page.getByLabel('Password').fill(PASSWORDS[user]);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(`${d.url}/`);
  return page;
}

async function shot(page: Page, name: string): Promise<void> {
  if (!shots) return;
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

test('an operator logs in, backs up and drills from the overview; the history and the backup page show the result; a failing backup shows red', async () => {
  const page = await loggedIn('admin');
  const rows = page.locator('table.databases tbody tr');
  await assert.doesNotReject(rows.first().waitFor());
  assert.deepEqual((await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-database')))).sort(), ['broken', 'pg', 'shop']);

  // The hostile label is text: the characters are visible and no element was made of them.
  const shop = page.locator('tr[data-database="shop"]');
  assert.match(await shop.innerText(), /note=<img src=x onerror=alert\(1\)>/);
  assert.equal(await shop.locator('img').count(), 0);
  assert.equal((await shop.innerHTML()).includes(HOSTILE), false, 'escaped in the markup');

  await shop.getByRole('button', { name: 'Back up now' }).click();
  const done = page.locator('#job-area [data-job-state]');
  await done.waitFor({ timeout: 60_000 });
  assert.equal(await done.getAttribute('data-job-state'), 'succeeded', await page.locator('#job-area').innerText());
  assert.match(await page.locator('#job-area').innerText(), /backup .* done/, 'the job\'s events streamed into the page');

  await page.goto('/databases/shop');
  const history = page.locator('table.history tbody tr');
  assert.equal(await history.count(), 1);
  assert.equal(await page.locator('.chart').count(), 0, 'no chart of a single backup');
  await page.getByRole('button', { name: 'Drill now' }).click();
  await page.locator('#job-area [data-job-state]').waitFor({ timeout: 90_000 });
  assert.match(await page.locator('#job-area').innerText(), /verify succeeded/);
  await page.reload();
  assert.match(await page.locator('table.history tbody tr').first().innerText(), /1×/, 'the drill\'s record shows in the history');
  // A second backup: the page draws its charts (uPlot, served by the dashboard itself).
  await page.getByRole('button', { name: 'Back up now' }).click();
  await page.locator('#job-area [data-job-state]').waitFor({ timeout: 60_000 });
  await page.reload();
  await page.locator('.chart[data-points="2"] canvas').first().waitFor();
  assert.equal(await page.locator('.chart canvas').count(), 3, 'size, duration and rows');
  await shot(page, 'database');

  await page.locator('table.history tbody tr a').first().click();
  await page.waitForURL(/\/backups\//);
  const body = await page.locator('main').innerText();
  assert.match(body, /orders\s+500/);
  assert.match(body, /<script>alert\(2\)<\/script>/, 'a hostile table name renders as text');
  assert.match(body, /dbstash restore shop\./);
  // Restore from the backup page: the plan first; a mistyped name restores nothing.
  const restored = path.join(d.root, 'restored.db');
  await page.getByLabel('Into').fill(restored);
  await page.getByRole('button', { name: 'Show the plan' }).click();
  await page.locator('#restore-area ul.plan').waitFor({ timeout: 60_000 });
  assert.match(await page.locator('#restore-area [data-job-state]').innerText(), /^restore-plan succeeded/, 'the plan ran as a job');
  assert.match(await page.locator('#restore-area').innerText(), /mode: a new database/);
  await shot(page, 'backup');
  await page.locator('#restore-confirm input').fill('shop');
  await page.getByRole('button', { name: 'Restore', exact: true }).click();
  assert.match(await page.locator('#restore-area p.error').innerText(), /does not match restored: nothing was restored/);
  assert.equal(existsSync(restored), false);
  await page.locator('#restore-confirm input').fill('restored');
  await page.getByRole('button', { name: 'Restore', exact: true }).click();
  // The plan was a job too: wait for the restore's own end, not the plan's.
  const restoreEnd = page.locator('#restore-area [data-job-state]').filter({ hasText: /^restore (succeeded|failed)/ });
  await restoreEnd.waitFor({ timeout: 60_000 });
  assert.equal(await restoreEnd.getAttribute('data-job-state'), 'succeeded', await page.locator('#restore-area').innerText());
  assert.ok(existsSync(restored), 'the restored database file is there');

  await page.goto('/');
  await page.locator('tr[data-database="broken"]').getByRole('button', { name: 'Back up now' }).click();
  await page.locator('#job-area [data-job-state]').waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('#job-area [data-job-state]').getAttribute('data-job-state'), 'failed');
  assert.match(await page.locator('#job-area p.error').innerText(), /authentication failed/);
  await page.reload();
  const broken = page.locator('tr[data-database="broken"]');
  assert.equal(await broken.locator('.badge.failing').count(), 1, 'the failing database is red');
  assert.doesNotMatch(await page.content(), /wrong-password/);
  await shot(page, 'overview');

  await page.goto('/activity');
  assert.match(await page.locator('main').innerText(), /admin · backup shop · succeeded/);
  await shot(page, 'activity');

  await page.goto('/settings');
  await shot(page, 'settings');

  // Every page fits a phone's width (wide tables scroll inside their own box).
  const narrow = await loggedIn('admin', { width: 390, height: 844 });
  const newest = await (await narrow.request.get('/api/v1/databases/shop/backups?limit=1')).json() as { backups: { id: string }[] };
  for (const [route, name] of [
    ['/', 'overview-narrow'],
    ['/databases/shop', 'database-narrow'],
    [`/backups/${encodeURIComponent(newest.backups[0].id)}`, 'backup-narrow'],
    ['/activity', 'activity-narrow'],
    ['/settings', 'settings-narrow'],
  ] as const) {
    await narrow.goto(route);
    const width = await narrow.evaluate<number>('document.documentElement.scrollWidth');
    assert.ok(width <= 390, `${route} fits a phone's width (scrollWidth ${width})`);
    await shot(narrow, name);
  }
  await narrow.context().close();
  await page.context().close();
});

test('a viewer sees no action buttons, and a POST from its session is refused; the logout ends the session', async () => {
  const page = await loggedIn('viewer');
  assert.equal(await page.getByRole('button', { name: 'Back up now' }).count(), 0);
  assert.equal(await page.getByRole('button', { name: 'Drill now' }).count(), 0);
  const status = await page.evaluate<number>(
    `fetch('/api/v1/databases/shop/backup', { method: 'POST', headers: { 'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]').getAttribute('content') } }).then((r) => r.status)`,
  );
  assert.equal(status, 403);
  // The retention policy's preview is a read: the viewer sees what prune would remove, and no way to prune.
  await page.goto('/databases/shop');
  assert.equal(await page.getByRole('button', { name: 'Prune…' }).count(), 0);
  await page.getByRole('button', { name: 'Retention preview' }).click();
  await page.locator('#prune-area').getByText(/to remove, \d+ kept|Nothing to remove/).first().waitFor();
  assert.match(await page.locator('#prune-area').innerText(), /^local \(last 1 \(UTC\)\): \d+ to remove, \d+ kept/, 'the policy is shown');
  assert.equal(await page.locator('#prune-confirm').count(), 0);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/\/login$/);
  await page.goto('/');
  assert.match(page.url(), /\/login$/, 'the session is gone');
  await page.context().close();
});
