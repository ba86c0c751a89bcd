// Opens one page per token on the demo page, each publishing Chromium's fake camera and
// microphone, and checks that every page decodes every other page's video and receives its
// audio, with the forced codec. Prints one JSON line with what each page saw; exits 1 on failure.
//
// usage: node three_pages.mjs <base-url> <channel> <VP8|H264|VP9|AV1> <token>...
//
// For a cluster, environment variables add:
//   BASES=url,url,...   page i opens BASES[i % n] instead of <base-url> (different gateways)
//   REGIONS=a,b,,...    page i asks for region REGIONS[i] ('' for no claim)
//   KILL_PID=pid        once everyone decodes everyone, SIGKILL this process (a media server
//                       or a gateway) and measure how long until everyone decodes everyone
//                       again (`recovery_ms`; the SDKs publish again on a live server, or
//                       reconnect to a live gateway)
//   FAILOVER=1          page i is given every base's /sync, its own first, to reconnect to

import { launch, openDemo } from './chromium.mjs';

const [base, channel, codec, ...tokens] = process.argv.slice(2);
const bases = process.env.BASES ? process.env.BASES.split(',') : [base];
const regions = process.env.REGIONS ? process.env.REGIONS.split(',') : [];
const killPid = process.env.KILL_PID ? Number(process.env.KILL_PID) : undefined;
const DEADLINE_MS = 60_000;
const SAMPLE_GAP_MS = 2_500;

const browser = await launch();

const expected = tokens.length - 1;
const pages = [];
let result = { ok: false, codec, pages: [] };

/**
 * Samples every page twice and says whether each decodes every other page's media, receiving
 * only publications that the pages currently have (none left over from a killed server).
 */
async function everyoneDecodes(deadlineMs, replaced = new Set()) {
  const stats = () => Promise.all(pages.map(({ page }) => page.evaluate(() => window.switchyard.client.getRemoteStats())));
  const byKey = (list) => new Map(list.map((s) => [`${s.publication}/${s.kind}`, s]));
  const start = Date.now();
  let ok = false;
  let last = [];
  while (!ok && Date.now() - start < deadlineMs) {
    const before = await stats();
    await new Promise((r) => setTimeout(r, SAMPLE_GAP_MS));
    const after = await stats();
    const live = new Set((await identities()).flatMap((p) => p.publications));
    last = after;
    ok = after.every((list, i) => {
      if (!list.every((s) => live.has(s.publication))) return false;
      // After a kill, at least one publication must have been published again.
      if (replaced.size > 0 && [...replaced].every((p) => live.has(p))) return false;
      const earlier = byKey(before[i]);
      const videos = list.filter((s) => s.kind === 'video');
      const audios = list.filter((s) => s.kind === 'audio');
      // Growing by more than a jitter buffer could hold: media is arriving now.
      const rising = (s, field, by) => s[field] >= (earlier.get(`${s.publication}/${s.kind}`)?.[field] ?? 0) + by;
      return (
        videos.length === expected &&
        audios.length === expected &&
        videos.every((v) => v.framesDecoded > 10 && rising(v, 'framesDecoded', 15) && v.codec?.toLowerCase() === `video/${codec.toLowerCase()}`) &&
        audios.every((a) => a.packetsReceived > 0 && rising(a, 'packetsReceived', 25))
      );
    });
  }
  return { ok, elapsed_ms: Date.now() - start, last };
}

/** The SRTP profiles the pages' connections negotiated with the server, each once. */
async function srtpCiphers() {
  const all = await Promise.all(
    pages.map(({ page }) =>
      page.evaluate(async () => {
        const out = [];
        for (const c of window.switchyard.client.connections()) {
          (await c.pc.getStats()).forEach((r) => {
            if (r.type === 'transport' && r.srtpCipher) out.push(r.srtpCipher);
          });
        }
        return out;
      }),
    ),
  );
  return [...new Set(all.flat())].sort();
}

/** Each page's participant id and the ids of its own publications. */
const identities = () =>
  Promise.all(
    pages.map(({ page }) =>
      page.evaluate(() => {
        const c = window.switchyard.client;
        return { participant: c.participant, publications: c.connections().filter((x) => x.kind === 'publish').map((x) => x.id) };
      }),
    ),
  );

try {
  for (const [i, token] of tokens.entries()) {
    const q = new URLSearchParams({ channel, token, codec, user: `user${i}`, autojoin: '1' });
    if (regions[i]) q.set('region', regions[i]);
    if (process.env.FAILOVER === '1') {
      const own = i % bases.length;
      const order = [...bases.slice(own), ...bases.slice(0, own)];
      q.set('sync', order.map((b) => `${b.replace(/^http/, 'ws')}/sync`).join(','));
    }
    pages.push(await openDemo(await browser.newContext(), `${bases[i % bases.length]}/?${q}`));
  }

  const first = await everyoneDecodes(DEADLINE_MS);
  result = {
    ok: first.ok,
    codec,
    elapsed_ms: first.elapsed_ms,
    before: await identities(),
    pages: first.last.map((list, i) => ({ page: i, remote: list, errors: pages[i].errors })),
    srtp_ciphers: await srtpCiphers(),
  };
  if (first.ok && killPid !== undefined) {
    const previous = new Set(result.before.flatMap((p) => p.publications));
    process.kill(killPid, 'SIGKILL');
    const killed = Date.now();
    const again = await everyoneDecodes(DEADLINE_MS, previous);
    result.ok = again.ok;
    result.recovery_ms = Date.now() - killed;
    result.after = await identities();
    result.pages = again.last.map((list, i) => ({ page: i, remote: list, errors: pages[i].errors }));
  }
} catch (e) {
  result.error = String(e?.stack ?? e);
  result.pages = pages.map((p, i) => ({ page: i, errors: p.errors }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
