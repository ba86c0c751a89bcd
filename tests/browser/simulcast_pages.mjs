// Two pages: the first publishes a 720p fake camera as three simulcast layers (the SDK's
// default for VP8 and H264) or, with codec VP9 or AV1, as one SVC stream of three spatial
// layers (the SDK's L3T3_KEY), the second subscribes and steers the layer it gets with `setPreferences`. Samples
// the subscriber's getStats every 100 ms and prints one JSON line: for each phase, how long the
// switch took and the longest stretch in which framesDecoded did not rise.
//
// usage: node simulcast_pages.mjs <base-url> <channel> <publisher token> <subscriber token> [codec [scalability mode]]
//
// Phases: `top` (no preference: 720 lines), `capped` (maxHeight 360: the middle layer, held for
// HOLD_MS), `uncapped` (no preference again: back to 720). Exits 1 when a phase misses its
// height within DEADLINE_MS.

import { launch, openDemo } from './chromium.mjs';

const [base, channel, publisherToken, subscriberToken, codec = 'VP8', svc] = process.argv.slice(2);
const DEADLINE_MS = 20_000;
const HOLD_MS = 4_000;
const SAMPLE_MS = 100;

const browser = await launch();
const result = { ok: false, phases: {}, pages: [] };
const pages = [];

/** The subscriber's one video inbound-rtp: its height, frames decoded and freezes. */
async function video(page) {
  const stats = await page.evaluate(() => window.switchyard.client.getRemoteStats());
  return stats.find((s) => s.kind === 'video');
}

/**
 * Samples until the video's frameHeight is `height` (then keeps sampling for `hold` ms, during
 * which it must stay there); returns the time it took, the longest stall of framesDecoded and
 * the heights seen.
 */
async function reach(page, height, hold) {
  const start = Date.now();
  let reached;
  let lastRise = Date.now();
  let lastDecoded = -1;
  let stall = 0;
  let left = false;
  const heights = new Set();
  const first = await video(page);
  while (Date.now() - start < DEADLINE_MS) {
    const v = await video(page);
    const now = Date.now();
    if (v) {
      heights.add(v.frameHeight);
      if (v.framesDecoded > lastDecoded) {
        if (lastDecoded >= 0) stall = Math.max(stall, now - lastRise);
        lastDecoded = v.framesDecoded;
        lastRise = now;
      }
      if (reached === undefined && v.frameHeight === height) reached = now - start;
      if (reached !== undefined && v.frameHeight !== height) left = true;
      if (reached !== undefined && now - start >= reached + hold) {
        stall = Math.max(stall, now - lastRise);
        return {
          ok: !left,
          switch_ms: reached,
          max_stall_ms: stall,
          heights: [...heights],
          freezes: (v.freezeCount ?? 0) - (first?.freezeCount ?? 0),
          frames_decoded: v.framesDecoded - (first?.framesDecoded ?? 0),
        };
      }
    }
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
  }
  return { ok: false, switch_ms: reached, max_stall_ms: stall, heights: [...heights] };
}

try {
  for (const [i, token] of [publisherToken, subscriberToken].entries()) {
    const q = new URLSearchParams({ channel, token, codec, user: `user${i}`, autojoin: '1' });
    // The publisher's camera is 720p; the subscriber publishes a small one, unused.
    q.set('height', i === 0 ? '720' : '180');
    if (svc && i === 0) q.set('svc', svc);
    pages.push(await openDemo(await browser.newContext(), `${base}/?${q}`));
    if (i === 0) await pages[0].page.waitForFunction(() => window.switchyard.client?.connections().some((c) => c.kind === 'publish'), null, { timeout: DEADLINE_MS });
  }
  const sub = pages[1].page;
  await sub.waitForFunction(() => window.switchyard.client?.getRemoteStats !== undefined);
  // Polled from here: waitForFunction with an async predicate could resolve to undefined.
  let publication;
  for (const start = Date.now(); !publication && Date.now() - start < DEADLINE_MS;) {
    const v = await video(sub);
    if (v?.framesDecoded > 0) publication = v.publication;
    else await new Promise((r) => setTimeout(r, 200));
  }
  if (!publication) throw new Error('no video decoded');
  const prefer = (p) => sub.evaluate(([id, p]) => window.switchyard.client.setPreferences(id, p), [publication, p]);

  result.codec = (await video(sub))?.codec;
  result.phases.top = await reach(sub, 720, 1_000);
  await prefer({ maxHeight: 360 });
  result.phases.capped = await reach(sub, 360, HOLD_MS);
  await prefer({});
  result.phases.uncapped = await reach(sub, 720, 1_000);
  result.ok = Object.values(result.phases).every((p) => p.ok);
} catch (e) {
  result.error = String(e);
} finally {
  result.pages = [];
  for (const p of pages) {
    // What each page's video encoders and decoders did, to tell a codec problem from ours.
    const rtp = await p.page.evaluate(async () => {
      const out = [];
      for (const c of window.switchyard.client?.connections() ?? []) {
        (await c.pc.getStats()).forEach((r) => {
          if (r.kind !== 'video' || (r.type !== 'outbound-rtp' && r.type !== 'inbound-rtp')) return;
          out.push({
            type: r.type, rid: r.rid, scalabilityMode: r.scalabilityMode, frameHeight: r.frameHeight,
            frames: r.framesEncoded ?? r.framesDecoded, packets: r.packetsSent ?? r.packetsReceived,
            implementation: r.encoderImplementation ?? r.decoderImplementation,
          });
        });
      }
      return out;
    }).catch((e) => String(e));
    result.pages.push({ errors: p.errors, rtp });
  }
  console.log(JSON.stringify(result));
  await browser.close();
  process.exit(result.ok ? 0 : 1);
}
