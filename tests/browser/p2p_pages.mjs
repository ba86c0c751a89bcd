// Opens one demo page per token in peer-to-peer mode (`p2p=1`: no publishing; each page
// connects directly to everyone already in the channel through the server's `signal` relay)
// and checks that every page decodes every other page's video and receives its audio over its
// peer connections, and that every RTCPeerConnection got the client's ICE configuration.
// Prints one JSON line with what each page saw; exits 1 on failure.
//
// usage: node p2p_pages.mjs <base-url> <channel> <token>...
//
// Environment: RELAY=1 opens the pages with `relay=1` (iceTransportPolicy 'relay': media only
// through the TURN server of `joined.iceServers`) and expects relay candidates on both ends.

import { launch, openDemo } from './chromium.mjs';

const [base, channel, ...tokens] = process.argv.slice(2);
const relay = process.env.RELAY === '1';
const DEADLINE_MS = 60_000;
const SAMPLE_GAP_MS = 2_500;

const browser = await launch();

const expected = tokens.length - 1;
const pages = [];
let result = { ok: false, relay, pages: [] };

const peerStats = () => Promise.all(pages.map(({ page }) => page.evaluate(() => window.switchyard.client.getPeerStats())));

/** Each page's id, ICE servers, and every connection's kind and ICE configuration. */
const configurations = () =>
  Promise.all(
    pages.map(({ page }) =>
      page.evaluate(() => {
        const c = window.switchyard.client;
        return {
          participant: c.participant,
          iceServers: c.iceServers,
          connections: c.connections().map((x) => {
            const config = x.pc.getConfiguration();
            return { kind: x.kind, id: x.id, iceTransportPolicy: config.iceTransportPolicy, iceServers: config.iceServers ?? [] };
          }),
        };
      }),
    ),
  );

/** The same URLs, in order, for every server (the browser may normalise `urls` to an array). */
const urls = (servers) => servers.flatMap((s) => (Array.isArray(s.urls) ? s.urls : [s.urls]));

try {
  // One after the other: each newcomer finds the earlier pages in `joined` and connects to them.
  for (const [i, token] of tokens.entries()) {
    const q = new URLSearchParams({ channel, token, user: `user${i}`, autojoin: '1', p2p: '1' });
    if (relay) q.set('relay', '1');
    pages.push(await openDemo(await browser.newContext(), `${base}/?${q}`));
  }

  const start = Date.now();
  let ok = false;
  let last = [];
  while (!ok && Date.now() - start < DEADLINE_MS) {
    const before = await peerStats();
    await new Promise((r) => setTimeout(r, SAMPLE_GAP_MS));
    const after = await peerStats();
    last = after;
    ok = after.every((list, i) => {
      const earlier = new Map(before[i].map((s) => [`${s.participant}/${s.kind}`, s]));
      const rising = (s, field, by) => s[field] >= (earlier.get(`${s.participant}/${s.kind}`)?.[field] ?? 0) + by;
      const videos = list.filter((s) => s.kind === 'video');
      const audios = list.filter((s) => s.kind === 'audio');
      return (
        videos.length === expected &&
        audios.length === expected &&
        videos.every((v) => v.framesDecoded > 10 && rising(v, 'framesDecoded', 15)) &&
        audios.every((a) => a.packetsReceived > 0 && rising(a, 'packetsReceived', 25)) &&
        list.every((s) => !relay || (s.localCandidate === 'relay' && s.remoteCandidate === 'relay'))
      );
    });
  }
  const configs = await configurations();
  const policy = relay ? 'relay' : 'all';
  const configured = configs.every(
    (c) =>
      c.connections.length > 0 &&
      c.connections.every(
        (x) => x.kind === 'peer' && x.iceTransportPolicy === policy && JSON.stringify(urls(x.iceServers)) === JSON.stringify(urls(c.iceServers)),
      ),
  );
  result = {
    ok: ok && configured,
    decoded: ok,
    configured,
    relay,
    elapsed_ms: Date.now() - start,
    pages: last.map((peers, i) => ({ page: i, ...configs[i], peers, errors: pages[i].errors })),
  };
} catch (e) {
  result.error = String(e?.stack ?? e);
  result.pages = pages.map((p, i) => ({ page: i, errors: p.errors }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
