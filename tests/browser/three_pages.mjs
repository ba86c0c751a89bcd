// Opens one page per token on the demo page, each publishing Chromium's fake camera and
// microphone, and checks that every page decodes every other page's video and receives its
// audio, with the forced codec. Prints one JSON line with what each page saw; exits 1 on failure.
//
// usage: node three_pages.mjs <base-url> <channel> <VP8|H264|VP9|AV1> <token>...

import { chromium } from 'playwright-core';

const [base, channel, codec, ...tokens] = process.argv.slice(2);
const DEADLINE_MS = 60_000;
const SAMPLE_GAP_MS = 2_500;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
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
  ],
});

const expected = tokens.length - 1;
const pages = [];
let result = { ok: false, codec, pages: [] };
try {
  for (const [i, token] of tokens.entries()) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`);
    });
    const q = new URLSearchParams({ channel, token, codec, user: `user${i}`, autojoin: '1' });
    await page.goto(`${base}/?${q}`);
    await page.waitForFunction(() => window.switchyard !== undefined);
    await page.evaluate(() => window.switchyard.ready);
    pages.push({ page, errors });
  }

  const stats = () => Promise.all(pages.map(({ page }) => page.evaluate(() => window.switchyard.client.getRemoteStats())));
  const byKey = (list) => new Map(list.map((s) => [`${s.publication}/${s.kind}`, s]));
  const start = Date.now();
  let ok = false;
  let last = [];
  while (!ok && Date.now() - start < DEADLINE_MS) {
    const before = await stats();
    await new Promise((r) => setTimeout(r, SAMPLE_GAP_MS));
    const after = await stats();
    last = after;
    ok = after.every((list, i) => {
      const earlier = byKey(before[i]);
      const videos = list.filter((s) => s.kind === 'video');
      const audios = list.filter((s) => s.kind === 'audio');
      const rising = (s, field) => s[field] > (earlier.get(`${s.publication}/${s.kind}`)?.[field] ?? 0);
      return (
        videos.length === expected &&
        audios.length === expected &&
        videos.every((v) => v.framesDecoded > 10 && rising(v, 'framesDecoded') && v.codec?.toLowerCase() === `video/${codec.toLowerCase()}`) &&
        audios.every((a) => a.packetsReceived > 0 && rising(a, 'packetsReceived'))
      );
    });
  }
  result = {
    ok,
    codec,
    elapsed_ms: Date.now() - start,
    pages: last.map((list, i) => ({ page: i, remote: list, errors: pages[i].errors })),
  };
} catch (e) {
  result.error = String(e?.stack ?? e);
  result.pages = pages.map((p, i) => ({ page: i, errors: p.errors }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
