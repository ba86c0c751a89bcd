// Two pages: the first publishes its fake camera and microphone, the second subscribes. Once
// the subscriber decodes video, 5% of the datagrams the media server sends to the subscriber's
// subscription (its selected ICE pair, server port to page port) are dropped by iptables in
// this network namespace; the subscriber's NACKs must then be answered with RTX. Samples the
// subscriber's video inbound-rtp every 200 ms for LOSS_MS and prints one JSON line with the
// counters' rise over that time and the longest stretch in which framesDecoded did not rise.
//
// usage: node rtx_pages.mjs <base-url> <channel> <publisher token> <subscriber token>
// (RTX_TEST_LOSS overrides the drop probability, 0.05; 0 gives a baseline to compare with.)
//
// Runs as root in the test's private network namespace (iptables is called from here, since
// only the page knows its port). Exits 1 when video never arrives or iptables fails.

import { execFileSync } from 'node:child_process';

import { launch, openDemo } from './chromium.mjs';

const [base, channel, publisherToken, subscriberToken] = process.argv.slice(2);
const DEADLINE_MS = 20_000;
const LOSS_MS = 10_000;
const SAMPLE_MS = 200;
const LOSS = process.env.RTX_TEST_LOSS ?? '0.05';

const browser = await launch();
const result = { ok: false, pages: [] };
const pages = [];
let rule;

/** The subscriber's video inbound-rtp of `publication`, from the SDK. */
async function video(page, publication) {
  const stats = await page.evaluate(() => window.switchyard.client.getRemoteStats());
  return stats.find((s) => s.kind === 'video' && s.publication === publication);
}

try {
  for (const [i, token] of [publisherToken, subscriberToken].entries()) {
    const q = new URLSearchParams({ channel, token, codec: 'VP8', user: `user${i}`, autojoin: '1' });
    q.set('height', i === 0 ? '720' : '180');
    pages.push(await openDemo(await browser.newContext(), `${base}/?${q}`));
    if (i === 0) await pages[0].page.waitForFunction(() => window.switchyard.client?.connections().some((c) => c.kind === 'publish'), null, { timeout: DEADLINE_MS });
  }
  const sub = pages[1].page;
  // The subscription that decodes video, and its selected pair: the server's port and the
  // page's. Retried: a subscription may be replaced while the pages start (a republish).
  let publication;
  let ports;
  const deadline = Date.now() + DEADLINE_MS;
  while (Date.now() < deadline && !(ports?.page && ports?.server)) {
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
    [publication, ports] = await sub.evaluate(async () => {
      const client = window.switchyard.client;
      const v = (await client.getRemoteStats()).find((s) => s.kind === 'video' && s.framesDecoded > 0);
      const c = client.connections().find((x) => x.kind === 'subscribe' && x.publication === v?.publication);
      if (!c) return [undefined, undefined];
      const report = await c.pc.getStats();
      let pair;
      report.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
      });
      if (!pair) return [v.publication, undefined];
      return [v.publication, { page: report.get(pair.localCandidateId)?.port, server: report.get(pair.remoteCandidateId)?.port }];
    });
  }
  result.publication = publication;
  if (!ports?.page || !ports?.server) throw new Error(`no selected candidate pair: ${JSON.stringify(ports)}`);
  result.ports = ports;
  rule = ['OUTPUT', '-p', 'udp', '--sport', String(ports.server), '--dport', String(ports.page),
    '-m', 'statistic', '--mode', 'random', '--probability', LOSS, '-j', 'DROP'];
  execFileSync('iptables', ['-A', ...rule]);

  const first = await video(sub, publication);
  if (!first) throw new Error(`publication ${publication} is no longer received`);
  const start = Date.now();
  let lastDecoded = first.framesDecoded;
  let lastRise = start;
  let stall = 0;
  let last = first;
  while (Date.now() - start < LOSS_MS) {
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
    const v = await video(sub, publication);
    if (!v) continue;
    const now = Date.now();
    if (v.framesDecoded > lastDecoded) {
      stall = Math.max(stall, now - lastRise);
      lastDecoded = v.framesDecoded;
      lastRise = now;
    }
    last = v;
  }
  stall = Math.max(stall, Date.now() - lastRise);
  const rise = (k) => (last[k] ?? 0) - (first[k] ?? 0);
  result.loss = {
    frames_decoded: rise('framesDecoded'),
    frames_dropped: rise('framesDropped'),
    packets_received: rise('packetsReceived'),
    packets_lost: rise('packetsLost'),
    nacks: rise('nackCount'),
    retransmitted: rise('retransmittedPacketsReceived'),
    freezes: rise('freezeCount'),
    max_stall_ms: stall,
  };
  // Audio: RED (RFC 2198) where both pages offered it, decoded all the same.
  const audio = await sub.evaluate(async (publication) => {
    const stats = await window.switchyard.client.getRemoteStats();
    return stats.find((s) => s.kind === 'audio' && s.publication === publication);
  }, publication);
  // The publisher's audio send codecs, first the one it sends: RED, as our answer lists it
  // first.
  const sent = await pages[0].page.evaluate(() => {
    const c = window.switchyard.client.connections().find((x) => x.kind === 'publish');
    return c.pc.getSenders().find((x) => x.track?.kind === 'audio')?.getParameters().codecs.map((x) => x.mimeType);
  });
  result.audio = { send_codecs: sent, packets_received: audio?.packetsReceived, bytes_received: audio?.bytesReceived };
  result.ok = true;
} catch (e) {
  result.error = String(e);
} finally {
  if (rule) {
    try {
      execFileSync('iptables', ['-D', ...rule]);
    } catch {
      // The namespace goes with the test anyway.
    }
  }
  result.pages = pages.map((p) => ({ errors: p.errors }));
  console.log(JSON.stringify(result));
  await browser.close();
  process.exit(result.ok ? 0 : 1);
}
