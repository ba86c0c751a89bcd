// Two pages: the first publishes a 720p fake camera as three simulcast layers (the SDK's
// default for VP8 and H264) or, with codec VP9 or AV1, as one SVC stream of three spatial
// layers (the SDK's L3T3_KEY), the second subscribes. Samples the subscriber's getStats every
// 100 ms and prints one JSON line: for each phase, how long the switch took and the longest
// stretch in which framesDecoded did not rise.
//
// usage: node simulcast_pages.mjs <base-url> <channel> <publisher token> <subscriber token> [codec [scalability mode [height|framerate]]]
// (an empty scalability mode: the SDK's default)
//
// Default phases (the subscriber steers with `setPreferences`): `top` (no preference: 720
// lines), `capped` (maxHeight 360: the middle layer, held for HOLD_MS), `uncapped` (no
// preference again: back to 720).
//
// With `framerate` (for an SVC mode with temporal layers; the camera is 360 lines, 30 fps):
// `url_capped` (the subscriber's demo page asks maxFrameRate 15 itself, from its `maxfps`:
// 35% to 65% of CAMERA_FPS), `full` (no preference: framesPerSecond at 80% of it or more),
// `capped` (maxFrameRate 15 again: 35% to 65%, held for FRAME_RATE_HOLD_MS without leaving
// that range), `uncapped` (no preference: 80% or more again). Uncapped phases count until the
// rate settles (Chromium's framesPerSecond covers the last second, and wobbles).
//
// With LIMIT_DEV (a network interface toward the subscriber, whose Chromium then runs in the
// namespace SUB_NETNS through netns_chromium.sh), the link steers instead: `top`, `limited`
// (tc limits LIMIT_DEV to LIMIT_KBIT: the lowest layer, 180 lines, held for HOLD_MS),
// `lifted` (the limit removed: back to 720). The publisher's `availableOutgoingBitrate` is
// reported too. Exits 1 when a phase misses its height within DEADLINE_MS.

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { chromiumArgs, chromiumPath, launch, openDemo } from './chromium.mjs';

const [base, channel, publisherToken, subscriberToken, codec = 'VP8', svc, mode = 'height'] = process.argv.slice(2);
const frameRateMode = mode === 'framerate';
const DEADLINE_MS = 20_000;
const HOLD_MS = 4_000;
const FRAME_RATE_HOLD_MS = 2_000;
/** The fake camera's frame rate in `framerate` mode. */
const CAMERA_FPS = 30;
const SAMPLE_MS = 100;
const limitDev = process.env.LIMIT_DEV;
const limitKbit = Number(process.env.LIMIT_KBIT ?? 300);

// The fake camera runs at 20 fps unless told; 30 halves to 15.
const cameraArgs = frameRateMode ? [`--use-fake-device-for-media-stream=fps=${CAMERA_FPS}`] : [];
const browser = await launch([`--unsafely-treat-insecure-origin-as-secure=${base}`, ...cameraArgs]);
// The subscriber's own Chromium, in its namespace behind the limited link.
const subBrowser = process.env.SUB_NETNS
  ? await chromium.launch({
      executablePath: fileURLToPath(new URL('./netns_chromium.sh', import.meta.url)),
      headless: true,
      args: chromiumArgs([`--unsafely-treat-insecure-origin-as-secure=${base}`]),
      env: { ...process.env, SWITCHYARD_NETNS: process.env.SUB_NETNS, CHROMIUM: chromiumPath },
    })
  : browser;
const result = { ok: false, phases: {}, pages: [] };
const pages = [];

/** What the publisher sends per simulcast layer: rid, height, bytes so far, encoder target. */
async function layers(page) {
  return page.evaluate(async () => {
    const pub = window.switchyard.client.connections().find((c) => c.kind === 'publish');
    const out = [];
    (await pub.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.rid) {
        out.push({ rid: r.rid, height: r.frameHeight, bytes: r.bytesSent, target: r.targetBitrate });
      }
    });
    return out;
  });
}

/** Each simulcast layer's bitrate as the publisher sends it, over `ms`. */
async function layerRates(page, ms) {
  const before = await layers(page);
  await new Promise((r) => setTimeout(r, ms));
  return (await layers(page)).map((l) => ({
    rid: l.rid,
    height: l.height,
    kbps: Math.round(((l.bytes - (before.find((b) => b.rid === l.rid)?.bytes ?? 0)) * 8) / ms),
    target_kbps: Math.round((l.target ?? 0) / 1000),
  }));
}

/** Samples the publisher's estimate until `done(bps)` (or DEADLINE_MS); the last and when. */
async function publisherEstimate(done) {
  const start = Date.now();
  let bps;
  while (Date.now() - start < DEADLINE_MS) {
    bps = await outgoing(pages[0].page);
    if (bps !== undefined && done(bps)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return { outgoing_bps: bps, after_ms: Date.now() - start };
}

/** Runs tc on the limited interface (the test's namespace is ours). */
const tc = (...args) => execFileSync('tc', ['qdisc', ...args], { stdio: 'pipe' });

/** The publisher's estimate of its uplink (candidate-pair availableOutgoingBitrate). */
async function outgoing(page) {
  return page.evaluate(async () => {
    const pub = window.switchyard.client.connections().find((c) => c.kind === 'publish');
    let bps;
    (await pub.pc.getStats()).forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate) bps = r.availableOutgoingBitrate;
    });
    return bps;
  });
}

/** The subscriber's one video inbound-rtp: its height, frames decoded and freezes. */
async function video(page) {
  const stats = await page.evaluate(() => window.switchyard.client.getRemoteStats());
  return stats.find((s) => s.kind === 'video');
}

/**
 * Samples until the video's frameHeight is `height` (or, `height` a function, until it holds
 * for the sample) (then keeps sampling for `hold` ms, during
 * which, when `strict`, it must stay there; when not, the time counts until it stays there for
 * `hold` ms); returns the time it took, the longest stall of framesDecoded,
 * the heights seen and the lowest and highest framesPerSecond once there.
 */
async function reach(page, height, hold, strict = true, deadline = DEADLINE_MS) {
  const there = typeof height === 'function' ? height : (v) => v.frameHeight === height;
  const fps = [];
  const start = Date.now();
  let reached;
  let lastRise = Date.now();
  let lastDecoded = -1;
  let stall = 0;
  let left = false;
  const heights = new Set();
  const first = await video(page);
  while (Date.now() - start < deadline) {
    const v = await video(page);
    const now = Date.now();
    if (v) {
      heights.add(v.frameHeight);
      if (v.framesDecoded > lastDecoded) {
        if (lastDecoded >= 0) stall = Math.max(stall, now - lastRise);
        lastDecoded = v.framesDecoded;
        lastRise = now;
      }
      if (reached === undefined && there(v)) reached = now - start;
      if (reached !== undefined) fps.push(v.framesPerSecond);
      if (reached !== undefined && !there(v)) {
        left = true;
        // Not strict: the time until it settles at `height`.
        if (!strict) {
          reached = undefined;
          fps.length = 0;
        }
      }
      if (reached !== undefined && now - start >= reached + hold) {
        stall = Math.max(stall, now - lastRise);
        return {
          ok: !strict || !left,
          left,
          switch_ms: reached,
          max_stall_ms: stall,
          heights: [...heights],
          fps: [Math.min(...fps), Math.max(...fps)],
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
    // The publisher's camera is 720p (360 for frame rates: the software AV1 encoder keeps
    // 30 fps there on a busy machine); the subscriber publishes a small one, unused.
    q.set('height', i > 0 ? '180' : frameRateMode ? '360' : '720');
    // Room above REMB's old 3 Mbit/s for the publisher's estimate to show.
    if (i === 0 && limitDev) q.set('maxkbps', '8000');
    if (svc && i === 0) q.set('svc', svc);
    if (frameRateMode && i === 1) q.set('maxfps', '15');
    pages.push(await openDemo(await (i === 0 ? browser : subBrowser).newContext(), `${base}/?${q}`));
    if (i === 0) await pages[0].page.waitForFunction(() => window.switchyard.client?.connections().some((c) => c.kind === 'publish'), null, { timeout: DEADLINE_MS });
  }
  const sub = pages[1].page;
  // The publisher's estimate, sampled all along (its highest is reported).
  let publisherMax = 0;
  const sampler = setInterval(async () => {
    const bps = await outgoing(pages[0].page).catch(() => undefined);
    if (bps !== undefined) publisherMax = Math.max(publisherMax, bps);
  }, 500);
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
  if (frameRateMode) {
    // The server drops the top temporal layer (30 fps to 15), then brings it back.
    const half = (v) => v.framesPerSecond >= 0.35 * CAMERA_FPS && v.framesPerSecond <= 0.65 * CAMERA_FPS;
    const full = (v) => v.framesPerSecond >= 0.8 * CAMERA_FPS;
    result.phases.url_capped = await reach(sub, half, 1_000, false);
    await prefer({});
    result.phases.full = await reach(sub, full, 1_000, false);
    await prefer({ maxFrameRate: 15 });
    result.phases.capped = await reach(sub, half, FRAME_RATE_HOLD_MS);
    await prefer({});
    result.phases.uncapped = await reach(sub, full, 1_000, false);
  } else {
    // The first climb follows the publisher's own ramp (Chromium's VP9 encoder steps through
    // 270 and 540 lines first, ~15 s on a busy machine): not timed, given longer.
    result.phases.top = await reach(sub, 720, 1_000, true, 2 * DEADLINE_MS);
    // Each layer's bitrate over 2 s, as the publisher sends it (for the log).
    result.layers_kbps = await layerRates(pages[0].page, 2_000);
    if (limitDev) {
      tc('add', 'dev', limitDev, 'root', 'tbf', 'rate', `${limitKbit}kbit`, 'burst', '16kbit', 'latency', '200ms');
      // Probes may try a higher layer now and then while limited (and the first moments after
      // the limit is lifted): the times are until the height settles.
      result.phases.limited = await reach(sub, 180, 0, false);
      result.phases.limited_hold = await reach(sub, 180, HOLD_MS, false);
      tc('del', 'dev', limitDev, 'root');
      result.phases.lifted = await reach(sub, 720, 2_000, false);
    } else {
      await prefer({ maxHeight: 360 });
      result.phases.capped = await reach(sub, 360, HOLD_MS);
      // Nobody watches the top simulcast layer now: the publisher was told to stop it.
      result.capped_layers_kbps = await layerRates(pages[0].page, 1_000);
      await prefer({});
      result.phases.uncapped = await reach(sub, 720, 1_000);
    }
    if (limitDev) {
      // The publisher's estimate of its unlimited uplink went past 3 Mbit/s (what REMB used to
      // cap it at) at some point: it sends less than that, so only Chromium's probes show it.
      clearInterval(sampler);
      result.publisher_max_bps = publisherMax;
      // The publisher's uplink (loopback, in the test's namespace) limited to 1 Mbit/s: its
      // estimate, from our transport-cc feedback, must follow.
      // (tbf needs packets no larger than its burst: loopback's 64 KiB MTU becomes Ethernet's.)
      execFileSync('ip', ['link', 'set', 'lo', 'mtu', '1500']);
      tc('add', 'dev', 'lo', 'root', 'tbf', 'rate', '1mbit', 'burst', '16kbit', 'latency', '200ms');
      result.publisher_limited = await publisherEstimate((bps) => bps < 1_200_000);
      tc('del', 'dev', 'lo', 'root');
    }
  }
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
            type: r.type, rid: r.rid, scalabilityMode: r.scalabilityMode, frameHeight: r.frameHeight, fps: r.framesPerSecond,
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
  if (subBrowser !== browser) await subBrowser.close();
  process.exit(result.ok ? 0 : 1);
}
