// Data channels and channel messages between three pages through the SDK: page 0 publishes its
// fake camera with data channels on the same connection (BUNDLE), the others data channels
// only, and each subscribes to the other two. Checks that
//   - the others receive page 0's video beside its data channels;
//   - ordered reliable messages ('chat') from every page reach every other page, all of them,
//     in order;
//   - a 256 KiB binary message ('big') arrives whole;
//   - an unordered channel with maxRetransmits 0 ('lossy') still delivers most messages when
//     the server's datagrams to the pages (the subscribers' path) lose 10% (iptables, in this
//     test's own network namespace);
//   - a signalling `message` reaches everyone else, and one sent `to` a participant reaches
//     only that one.
// Prints one JSON line with what each page saw; exits 1 on failure.
//
// usage: node data_pages.mjs <base-url> <channel> <media-port> <token> <token> <token>

import { execFileSync } from 'node:child_process';
import { launch } from './chromium.mjs';

const [base, channel, mediaPort, ...tokens] = process.argv.slice(2);
const CHAT = 200;
const LOSSY = 300;
const BIG = 256 * 1024;
const DEADLINE_MS = 20_000;

const browser = await launch();
const pages = [];
const result = { ok: false, pages: [] };

/** Polls `check` on every page until all say true, or the deadline. */
async function waitAll(check, arg, ms = DEADLINE_MS) {
  const start = Date.now();
  while (Date.now() - start < ms) {
    const done = await Promise.all(pages.map(({ page }) => page.evaluate(check, arg)));
    if (done.every(Boolean)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

try {
  for (const token of tokens) {
    const page = await (await browser.newContext()).newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`);
    });
    await page.goto(`${base}/`);
    await page.evaluate(
      async ({ token, channel, video }) => {
        const { Client } = await import('/switchyard.js');
        const client = new Client({ token, channel });
        const seen = { chat: {}, big: [], lossy: {}, messages: [], channels: 0, tracks: 0, errors: [] };
        window.t = { client, seen };
        client.addEventListener('datachannel', () => seen.channels++);
        client.addEventListener('track', () => seen.tracks++);
        client.addEventListener('error', (e) => seen.errors.push(e.detail.reason));
        client.addEventListener('message', (e) => seen.messages.push(e.detail));
        client.addEventListener('data', (e) => {
          const { participant, label, data } = e.detail;
          if (label === 'chat') (seen.chat[participant] ??= []).push(data);
          if (label === 'lossy') seen.lossy[participant] = (seen.lossy[participant] ?? 0) + 1;
          if (label === 'big') {
            const bytes = new Uint8Array(data);
            let ok = true;
            for (let i = 0; i < bytes.length; i++) if (bytes[i] !== (i * 7) % 251) ok = false;
            seen.big.push({ from: participant, length: bytes.length, ok });
          }
        });
        await client.join();
        const stream = video ? await navigator.mediaDevices.getUserMedia({ video: true }) : null;
        window.t.publication = await client.publish(stream, {
          dataChannels: [{ label: 'chat' }, { label: 'big' }, { label: 'lossy', ordered: false, maxRetransmits: 0 }],
        });
      },
      { token, channel, video: pages.length === 0 },
    );
    pages.push({ page, errors });
  }
  const others = pages.length - 1;
  const first = await pages[0].page.evaluate(() => window.t.client.participant);
  for (const { page } of pages) await page.evaluate((p) => (window.t.first = p), first);

  // Every page has the other two's three channels open toward it, and its own open.
  result.channels_open = await waitAll(
    (n) => {
      const { client, publication, seen } = window.t;
      const own = ['chat', 'big', 'lossy'].every((l) => client.dataChannel(publication, l)?.readyState === 'open');
      // Page 0's video reaches the others too.
      const video = client.participant === window.t.first || seen.tracks >= 1;
      return own && video && seen.channels >= n * 3;
    },
    others,
  );

  // Ordered, reliable: CHAT numbered messages from every page; one 256 KiB message from page 0.
  for (const [i, { page }] of pages.entries()) {
    await page.evaluate(
      ({ n, big }) => {
        const { client, publication } = window.t;
        for (let k = 0; k < n; k++) client.sendData(publication, 'chat', `${k}`);
        if (big > 0) {
          const bytes = new Uint8Array(big);
          for (let k = 0; k < big; k++) bytes[k] = (k * 7) % 251;
          client.sendData(publication, 'big', bytes.buffer);
        }
      },
      { n: CHAT, big: i === 0 ? BIG : 0 },
    );
  }
  result.chat_complete = await waitAll(
    ({ n, others }) => {
      const chat = Object.values(window.t.seen.chat);
      return chat.length === others && chat.every((list) => list.length >= n);
    },
    { n: CHAT, others },
  );
  result.big_arrived = await waitAll(
    (first) => window.t.client.participant === first || window.t.seen.big.length > 0,
    await pages[0].page.evaluate(() => window.t.client.participant),
  );

  // Channel messages through signalling: page 0 to everyone, page 1 to page 0 only.
  const ids = await Promise.all(pages.map(({ page }) => page.evaluate(() => window.t.client.participant)));
  await pages[0].page.evaluate(() => window.t.client.sendMessage({ hello: 'everyone' }));
  await pages[1].page.evaluate((to) => window.t.client.sendMessage({ hello: 'you' }, to), ids[0]);
  result.messages_arrived = await waitAll(
    (ids) => {
      const m = window.t.seen.messages;
      const me = window.t.client.participant;
      if (me === ids[0]) return m.some((x) => x.from === ids[1] && x.data.hello === 'you');
      return m.some((x) => x.from === ids[0] && x.data.hello === 'everyone');
    },
    ids,
    5_000,
  );

  // Unordered, unreliable, with 10% of the server's datagrams lost.
  execFileSync('iptables', ['-w', '-A', 'OUTPUT', '-p', 'udp', '--sport', mediaPort, '-m', 'statistic', '--mode', 'random', '--probability', '0.1', '-j', 'DROP']);
  await pages[0].page.evaluate(async (n) => {
    const { client, publication } = window.t;
    for (let k = 0; k < n; k++) {
      client.sendData(publication, 'lossy', `${k}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }, LOSSY);
  await new Promise((r) => setTimeout(r, 2_000));
  execFileSync('iptables', ['-w', '-D', 'OUTPUT', '-p', 'udp', '--sport', mediaPort, '-m', 'statistic', '--mode', 'random', '--probability', '0.1', '-j', 'DROP']);

  for (const [i, { page, errors }] of pages.entries()) {
    const seen = await page.evaluate(() => window.t.seen);
    const chat = Object.fromEntries(
      Object.entries(seen.chat).map(([from, list]) => [
        from,
        { count: list.length, in_order: list.every((v, k) => v === `${k}`) },
      ]),
    );
    const lossy = i === 0 ? null : seen.lossy[ids[0]] ?? 0;
    result.pages.push({ page: i, participant: ids[i], tracks: seen.tracks, chat, big: seen.big, lossy, messages: seen.messages, sdk_errors: seen.errors, errors });
  }
  result.ok =
    result.channels_open &&
    result.chat_complete &&
    result.big_arrived &&
    result.messages_arrived &&
    result.pages.every(
      (p, i) =>
        Object.values(p.chat).length === others &&
        Object.values(p.chat).every((c) => c.count === CHAT && c.in_order) &&
        (i === 0 || (p.big.length === 1 && p.big[0].length === BIG && p.big[0].ok)) &&
        (i === 0 || p.tracks >= 1) &&
        (i === 0 || (p.lossy >= LOSSY * 0.6 && p.lossy <= LOSSY)) &&
        // Page 2 got only the message to everyone, not the one to page 0.
        (i !== 2 || p.messages.length === 1),
    );
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
