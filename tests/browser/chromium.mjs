// What every browser test script shares: how Chromium is started (headless, fake camera and
// microphone, loopback ICE allowed) and how a demo page is opened and waited for.

import { chromium } from 'playwright-core';

export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** The flags every test Chromium runs with; `extra` are appended. */
export function chromiumArgs(extra = []) {
  return [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    ...extra,
  ];
}

/** A headless Chromium with the test flags (and `options` for playwright's launch). */
export function launch(extra = [], options = {}) {
  return chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs(extra), ...options });
}

/**
 * Opens the demo page at `url` in `context` (a browser or a browser context), collecting page
 * errors and console errors, and waits until its client is ready. Returns { page, errors }.
 */
export async function openDemo(context, url) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => window.switchyard !== undefined);
  await page.evaluate(() => window.switchyard.ready);
  return { page, errors };
}
