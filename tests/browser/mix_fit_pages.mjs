// The mixer asks its inputs for what their tiles show. Two demo pages share a channel: the
// first publishes a 720p camera over the SFU as three simulcast layers (the SDK's default), the
// second mixes (`mcu=1`) its own 720p camera. On a small canvas both tiles are under 180 lines,
// so the server must tell the publisher to stop its two upper layers (nobody else watches
// them), and lower its REMB to the mixing page to the tile's bitrate, which Chromium's
// estimate (`availableOutgoingBitrate`) then follows. The first page subscribes to the mixing
// page's camera, as SFU participants do, and pauses it: a subscriber that takes the full
// stream would keep the REMB up, a paused one has no say.
//
// usage: node mix_fit_pages.mjs <base-url> <channel> <publisher token> <mixer token> <most bps>
// Prints one JSON line; exits 1 when either has not happened within DEADLINE_MS.

import { launch, openDemo } from './chromium.mjs';

const [base, channel, publisherToken, mixerToken, mostBps] = process.argv.slice(2);
const DEADLINE_MS = 25_000;
const SAMPLE_MS = 1_000;

const browser = await launch([`--unsafely-treat-insecure-origin-as-secure=${base}`]);
const result = { ok: false };
const pages = [];

/** The page's connection of `kind`, its outbound video per rid (bytes) and its uplink estimate. */
async function sample(page, kind) {
  return page.evaluate(async (kind) => {
    const conn = window.switchyard.client?.connections().find((c) => c.kind === kind);
    if (!conn) return undefined;
    const sender = conn.pc.getSenders().find((s) => s.track?.kind === 'video');
    const out = { bytes: {}, outgoing: undefined, active: sender?.getParameters().encodings.map((e) => e.active) };
    (await conn.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') out.bytes[r.rid ?? '-'] = r.bytesSent;
      if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate) out.outgoing = r.availableOutgoingBitrate;
    });
    return out;
  }, kind);
}

try {
  for (const [i, token] of [publisherToken, mixerToken].entries()) {
    const q = new URLSearchParams({ channel, token, codec: 'VP8', user: `user${i}`, autojoin: '1', height: '720' });
    if (i === 1) q.set('mcu', '1');
    pages.push(await openDemo(await browser.newContext(), `${base}/?${q}`));
  }
  const start = Date.now();
  let before;
  while (Date.now() - start < DEADLINE_MS) {
    await pages[0].page.evaluate(async () => {
      const client = window.switchyard.client;
      for (const s of (await client?.getRemoteStats()) ?? []) {
        try {
          client.setPreferences(s.publication, { paused: true });
        } catch {
          // Gone meanwhile, or not yet subscribed: the next sample pauses it.
        }
      }
    });
    const publisher = await sample(pages[0].page, 'publish');
    const mixer = await sample(pages[1].page, 'mix');
    if (before && publisher && mixer) {
      // Each simulcast layer's bitrate over the last sample.
      const kbps = Object.fromEntries(
        Object.entries(publisher.bytes).map(([rid, b]) => [rid, Math.round(((b - (before.bytes[rid] ?? 0)) * 8) / SAMPLE_MS)]),
      );
      result.publisher_kbps = kbps;
      result.publisher_active = publisher.active;
      result.mixer_outgoing_bps = mixer.outgoing;
      result.after_ms = Date.now() - start;
      // The SDK turned the upper layers off, as the server told it (lowest first).
      const upperOff = publisher.active?.join() === 'true,false,false';
      const remb = mixer.outgoing !== undefined && mixer.outgoing <= Number(mostBps);
      if (upperOff && remb) {
        result.ok = true;
        break;
      }
    }
    before = publisher;
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
  }
  result.errors = pages.flatMap((p) => p.errors);
} catch (e) {
  result.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(result));
await browser.close();
process.exit(result.ok ? 0 : 1);
