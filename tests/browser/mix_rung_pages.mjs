// The mixer's lower rung (MCU:LOWERRUNG) reaches a viewer on a weak link. A demo page publishes
// a camera over the SFU; a second demo page mixes (`mcu=1`) from its own Chromium in the
// namespace SUB_NETNS, whose link LIMIT_DEV `tc` limits. Phases, on the mixing page's composite
// (`frameHeight` of its mix connection's inbound video): `top` (the full canvas, TOP lines),
// `limited` (LIMIT_KBIT on the link: the half rung, TOP / 2 lines), `lifted` (the limit
// removed: back to TOP).
//
// usage: node mix_rung_pages.mjs <base-url> <channel> <publisher token> <mixer token> <canvas height>
// Prints one JSON line; exits 1 when a phase misses its height within DEADLINE_MS.

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { chromiumArgs, chromiumPath, launch, openDemo } from './chromium.mjs';

const [base, channel, publisherToken, mixerToken, canvasHeight] = process.argv.slice(2);
const TOP = Number(canvasHeight);
const DEADLINE_MS = 30_000;
const limitDev = process.env.LIMIT_DEV;
const limitKbit = Number(process.env.LIMIT_KBIT ?? 250);
const tc = (...args) => execFileSync('tc', ['qdisc', ...args], { stdio: 'pipe' });

const browser = await launch([`--unsafely-treat-insecure-origin-as-secure=${base}`]);
const subBrowser = await chromium.launch({
  executablePath: fileURLToPath(new URL('./netns_chromium.sh', import.meta.url)),
  headless: true,
  args: chromiumArgs([`--unsafely-treat-insecure-origin-as-secure=${base}`]),
  env: { ...process.env, SWITCHYARD_NETNS: process.env.SUB_NETNS, CHROMIUM: chromiumPath },
});
const result = { ok: false, phases: {} };
const pages = [];

/** The composite's height on the mixing page, and its frames decoded. */
async function composite(page) {
  return page.evaluate(async () => {
    const mix = window.switchyard.client?.connections().find((c) => c.kind === 'mix');
    let out;
    (await mix?.pc.getStats())?.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') out = { height: r.frameHeight, frames: r.framesDecoded };
    });
    return out;
  });
}

/** Samples until the composite is `height` lines; how long that took and the heights seen. */
async function reach(page, height) {
  const start = Date.now();
  const heights = new Set();
  while (Date.now() - start < DEADLINE_MS) {
    const c = await composite(page);
    if (c?.height) heights.add(c.height);
    if (c?.height === height) return { ok: true, switch_ms: Date.now() - start, heights: [...heights] };
    await new Promise((r) => setTimeout(r, 200));
  }
  return { ok: false, heights: [...heights] };
}

try {
  const q = (token, i) => new URLSearchParams({ channel, token, codec: 'VP8', user: `user${i}`, autojoin: '1', height: '360' });
  pages.push(await openDemo(await browser.newContext(), `${base}/?${q(publisherToken, 0)}`));
  const mixing = q(mixerToken, 1);
  mixing.set('mcu', '1');
  pages.push(await openDemo(await subBrowser.newContext(), `${base}/?${mixing}`));
  const viewer = pages[1].page;
  result.phases.top = await reach(viewer, TOP);
  if (result.phases.top.ok) {
    tc('add', 'dev', limitDev, 'root', 'tbf', 'rate', `${limitKbit}kbit`, 'burst', '16kbit', 'latency', '200ms');
    result.phases.limited = await reach(viewer, TOP / 2);
    tc('del', 'dev', limitDev, 'root');
    result.phases.lifted = await reach(viewer, TOP);
  }
  result.ok = Object.values(result.phases).length === 3 && Object.values(result.phases).every((p) => p.ok);
  result.errors = pages.flatMap((p) => p.errors);
} catch (e) {
  result.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(result));
await browser.close();
await subBrowser.close();
process.exit(result.ok ? 0 : 1);
