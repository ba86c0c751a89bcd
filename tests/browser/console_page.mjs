// Drives the operator's console (/admin) as an operator would: refused with a wrong key, logs
// in with the right one, sees the media servers with their public IPs, drains one, kicks a
// client, rotates an application's secret, gets the API's refusal for a bad channel
// configuration and saves a good one (with its MCU canvas), opens the deployments, and finds
// all of it in the audit log. Takes a screenshot after each step into the artefacts directory.
// Prints one JSON line; exits 1 on failure.
//
// usage: node console_page.mjs <console-url> <admin-key> <artefacts-dir>
// environment:
//   SERVERS=id=publicIP,...   the media servers the console must list, with their public IPs
//   DRAIN=id                  the one to drain
//   CHANNEL=name CLIENT=id    the client to kick
//   APPLICATION=id            an application with one secret and a channel configuration `team-*`

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { launch } from './chromium.mjs';

const [url, key, artefacts] = process.argv.slice(2);
const servers = process.env.SERVERS.split(',').map((s) => s.split('='));
const { DRAIN: drain, CHANNEL: channel, CLIENT: client, APPLICATION: application } = process.env;
const WAIT = { timeout: 10_000 };

mkdirSync(artefacts, { recursive: true });
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
const errors = [];
page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
page.on('console', (m) => {
  // The refusals the test provokes (401, 400) are logged by Chromium as failed loads.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console: ${m.text()}`);
});
// Kick and retire ask for confirmation.
page.on('dialog', (d) => d.accept());

const screenshots = [];
async function shot(name) {
  const path = join(artefacts, `${String(screenshots.length + 1).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  screenshots.push(path);
}

const started = Date.now();
const steps = {};
let step = 'start';
async function run(name, body) {
  step = name;
  const t = Date.now();
  await body();
  steps[name] = Date.now() - t;
}

const result = { ok: false, steps, screenshots };
try {
  await run('login', async () => {
    await page.goto(url);
    await page.fill('#key', 'not-the-admin-key-at-all');
    await page.click('#login button[type=submit]');
    await page.locator('#login-error', { hasText: 'not valid' }).waitFor(WAIT);
    await shot('wrong-key');
    await page.fill('#key', key);
    await page.click('#login button[type=submit]');
    await page.locator('#app').waitFor(WAIT);
  });

  await run('servers', async () => {
    for (const [id, ip] of servers) {
      await page.locator(`tr[data-server="${id}"] .public-ip`, { hasText: ip }).waitFor(WAIT);
    }
    await shot('media-servers');
  });

  await run('drain', async () => {
    const row = page.locator(`tr[data-server="${drain}"]`);
    await row.getByRole('button', { name: 'Drain', exact: true }).click();
    await row.locator('.state', { hasText: 'draining' }).waitFor(WAIT);
    await row.getByRole('button', { name: 'Undrain', exact: true }).waitFor(WAIT);
    await shot('drained');
  });

  await run('kick', async () => {
    await page.click('#tabs a[href="#channels"]');
    const row = page.locator(`[data-channel="${channel}"] tr[data-client="${client}"]`);
    await row.waitFor(WAIT);
    await shot('channels');
    await row.getByRole('button', { name: 'Kick', exact: true }).click();
    await row.waitFor({ state: 'detached', ...WAIT });
    await shot('kicked');
  });

  const card = page.locator(`[data-application="${application}"]`);
  await run('rotate', async () => {
    await page.click('#tabs a[href="#applications"]');
    await card.waitFor(WAIT);
    await card.getByRole('button', { name: 'Rotate…', exact: true }).click();
    result.newSecret = await page.inputValue('#editor input[name=secret]');
    await page.click('#editor button[type=submit]');
    await page.locator('#notice', { hasText: 'has a new secret' }).waitFor(WAIT);
    await card.locator('.secrets li').nth(1).waitFor(WAIT);
    // The newest is the one shown as the one to sign with, and can be shown in full.
    const newest = card.locator('.secrets li').nth(1);
    await newest.getByRole('button', { name: 'show', exact: true }).click();
    await card.locator('.secrets li code', { hasText: result.newSecret }).waitFor(WAIT);
    await shot('rotated');
  });

  await run('channel-config', async () => {
    await card.locator('tr[data-pattern="team-*"]').getByRole('button', { name: 'Edit', exact: true }).click();
    await page.fill('#editor input[name=codecs]', 'opus, mp3');
    await page.click('#editor button[type=submit]');
    const error = page.locator('#editor .error', { hasText: 'unknown codec' });
    await error.waitFor(WAIT);
    result.validationError = await error.textContent();
    await shot('invalid-config');
    await page.fill('#editor input[name=codecs]', 'opus');
    await page.fill('#editor input[name=bitrate]', '1500');
    await page.selectOption('#editor select[name=layout]', 'speaker');
    await page.fill('#editor input[name=width]', '320');
    await page.fill('#editor input[name=height]', '180');
    await page.click('#editor button[type=submit]');
    await page.locator('#editor').waitFor({ state: 'hidden', ...WAIT });
    await card.locator('tr[data-pattern="team-*"]', { hasText: '1500 kbps' }).waitFor(WAIT);
    await card.locator('tr[data-pattern="team-*"]', { hasText: 'speaker, 320×180' }).waitFor(WAIT);
    await shot('config-saved');
  });

  await run('deployments', async () => {
    await page.click('#tabs a[href="#deployments"]');
    await page.locator('#view > *').first().waitFor(WAIT);
    await shot('deployments');
  });

  await run('audit', async () => {
    await page.click('#tabs a[href="#audit"]');
    for (const action of ['mediaServer.drain', 'client.kick', 'application.rotateSecret', 'channelConfig.put']) {
      await page.locator('#view code', { hasText: action }).first().waitFor(WAIT);
    }
    await shot('audit');
  });

  result.ok = errors.length === 0;
} catch (e) {
  result.failedAt = step;
  result.error = e.message;
  await shot(`failed-${step}`).catch(() => {});
}
result.errors = errors;
result.ms = Date.now() - started;
await browser.close();
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
