// Opens one demo page in a channel (it publishes Chromium's fake camera and subscribes to
// everyone) and prints, every 500 ms for <seconds>, one JSON line with the video frames it has
// decoded from the others: {"t": ms, "frames": n}. Then a last line {"ok": bool, "errors": [...]}.
// Used by tests that attack a server while a real browser watches.
//
// usage: node watch_page.mjs <base-url> <channel> <token> <seconds>

import { launch, openDemo } from './chromium.mjs';

const [base, channel, token, seconds] = process.argv.slice(2);
const browser = await launch();
let result = { ok: false };
try {
  const q = new URLSearchParams({ channel, token, user: 'watcher', autojoin: '1', height: '180' });
  const { page, errors } = await openDemo(browser, `${base}/?${q}`);
  const start = Date.now();
  while (Date.now() - start < Number(seconds) * 1000) {
    const stats = await page.evaluate(() => window.switchyard.client.getRemoteStats());
    const frames = stats.filter((s) => s.kind === 'video').reduce((sum, s) => sum + s.framesDecoded, 0);
    console.log(JSON.stringify({ t: Date.now() - start, frames }));
    await new Promise((r) => setTimeout(r, 500));
  }
  result = { ok: true, errors };
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
