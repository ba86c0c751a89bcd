// Opens one demo page per token, each in a Chromium of its own (so that each can live in its own
// network namespace), and checks that every page decodes every other page's video and receives
// its audio; then reports, for every RTCPeerConnection of every page, the candidate pair ICE
// selected (types, protocol, and the TURN transport of a relay candidate), for the caller to
// judge. Prints one JSON line; exits 1 when the pages did not decode each other.
//
// usage: node relay_pages.mjs <base-url> <channel> <token>...
//
// Environment:
//   MODE=sfu|p2p     sfu (default): each page publishes and subscribes through the media server;
//                    p2p: no publishing, each page connects peer to peer to the earlier ones
//   RELAY=1          opens the pages with `relay=1` (iceTransportPolicy 'relay')
//   NETNS=a,b,...    page i's Chromium runs in the network namespace at path NETNS[i]
//                    (e.g. /proc/PID/ns/net), through netns_chromium.sh
//   CHROMIUM_ARGS    extra Chromium switches, separated by spaces
//   DEADLINE_MS      how long the pages have to decode each other (default 40000)
//   HOLD_MS          once they do, how long to keep them running before the result (default 0;
//                    scripts/bench_turn_sfu.sh measures the server meanwhile): "holding" and
//                    "held" go to stderr at its start and end

import { chromium } from 'playwright-core';
import { chromiumArgs, chromiumPath, openDemo } from './chromium.mjs';
import { fileURLToPath } from 'node:url';

const [base, channel, ...tokens] = process.argv.slice(2);
const mode = process.env.MODE ?? 'sfu';
const relay = process.env.RELAY === '1';
const namespaces = process.env.NETNS ? process.env.NETNS.split(',') : [];
const extraArgs = (process.env.CHROMIUM_ARGS ?? '').split(' ').filter(Boolean);
const DEADLINE_MS = Number(process.env.DEADLINE_MS ?? 40_000);
const HOLD_MS = Number(process.env.HOLD_MS ?? 0);
const SAMPLE_GAP_MS = 2_000;

const args = chromiumArgs([
  // Cameras need a secure context; across the test's networks the server is a plain-HTTP IP.
  `--unsafely-treat-insecure-origin-as-secure=${base}`,
  ...extraArgs,
]);

/** A Chromium of its own, in namespace `ns` when given (through a wrapper that enters it). */
function launch(ns) {
  if (!ns) return chromium.launch({ executablePath: chromiumPath, headless: true, args });
  return chromium.launch({
    executablePath: fileURLToPath(new URL('./netns_chromium.sh', import.meta.url)),
    headless: true,
    args,
    env: { ...process.env, SWITCHYARD_NETNS: ns, CHROMIUM: chromiumPath },
  });
}

const expected = tokens.length - 1;
const browsers = [];
const pages = [];
let result = { ok: false, mode, relay, pages: [] };

/** What arrives from the others: remote publications (sfu) or peer connections (p2p). */
const received = () =>
  Promise.all(
    pages.map(({ page }) =>
      page.evaluate((p2p) => (p2p ? window.switchyard.client.getPeerStats() : window.switchyard.client.getRemoteStats()), mode === 'p2p'),
    ),
  );

/** Every connection of every page with its state and the selected candidate pair. */
const transports = () =>
  Promise.all(
    pages.map(({ page }) =>
      page.evaluate(async () => {
        const candidate = (c) =>
          c && {
            type: c.candidateType,
            protocol: c.protocol,
            relayProtocol: c.relayProtocol,
            address: c.address,
            port: c.port,
            url: c.url,
          };
        const out = [];
        for (const x of window.switchyard.client.connections()) {
          const report = await x.pc.getStats();
          let pair;
          report.forEach((r) => {
            if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
          });
          const local = [];
          report.forEach((r) => {
            if (r.type === 'local-candidate') local.push(candidate(r));
          });
          out.push({
            kind: x.kind,
            id: x.id,
            state: x.pc.connectionState,
            policy: x.pc.getConfiguration().iceTransportPolicy,
            local: pair && candidate(report.get(pair.localCandidateId)),
            remote: pair && candidate(report.get(pair.remoteCandidateId)),
            gathered: local,
          });
        }
        return out;
      }),
    ),
  );

try {
  // One after the other: each newcomer finds the earlier pages in `joined` (p2p: connects to them).
  for (const [i, token] of tokens.entries()) {
    const browser = await launch(namespaces[i]);
    browsers.push(browser);
    const q = new URLSearchParams({ channel, token, user: `user${i}`, autojoin: '1' });
    if (mode === 'p2p') q.set('p2p', '1');
    if (relay) q.set('relay', '1');
    pages.push(await openDemo(browser, `${base}/?${q}`));
  }

  const start = Date.now();
  let ok = false;
  let last = [];
  while (!ok && Date.now() - start < DEADLINE_MS) {
    const before = await received();
    await new Promise((r) => setTimeout(r, SAMPLE_GAP_MS));
    const after = await received();
    last = after;
    ok = after.every((list, i) => {
      const key = (s) => `${s.publication ?? s.participant}/${s.kind}`;
      const earlier = new Map(before[i].map((s) => [key(s), s]));
      // Growing by more than a jitter buffer could hold: media is arriving now.
      const rising = (s, field, by) => s[field] >= (earlier.get(key(s))?.[field] ?? 0) + by;
      const videos = list.filter((s) => s.kind === 'video');
      const audios = list.filter((s) => s.kind === 'audio');
      return (
        videos.length === expected &&
        audios.length === expected &&
        videos.every((v) => v.framesDecoded > 10 && rising(v, 'framesDecoded', 10)) &&
        audios.every((a) => a.packetsReceived > 0 && rising(a, 'packetsReceived', 20))
      );
    });
  }
  if (ok && HOLD_MS > 0) {
    console.error('holding');
    await new Promise((r) => setTimeout(r, HOLD_MS));
    console.error('held');
  }
  const selected = await transports();
  result = {
    ok,
    mode,
    relay,
    elapsed_ms: Date.now() - start,
    pages: last.map((received, i) => ({ page: i, received, connections: selected[i], errors: pages[i].errors })),
  };
} catch (e) {
  result.error = String(e?.stack ?? e);
  result.pages = pages.map((p, i) => ({ page: i, errors: p.errors }));
} finally {
  await Promise.all(browsers.map((b) => b.close()));
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
