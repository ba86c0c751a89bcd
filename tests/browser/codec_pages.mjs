// One page publishes the fake camera (240 lines unless told) and microphone with a codec for a while,
// then leaves. For a recording test: prints one JSON line with what the publisher's encoder
// sent (codec, scalability mode, frame size, frames) and for how long it sent video
// (`published_ms`: from its first encoded frame to leaving). Exits 1 on failure.
//
// usage: node codec_pages.mjs <base-url> <channel> <token> <codec> <seconds> [height]

import { launch, openDemo } from './chromium.mjs';

const [base, channel, token, codec, seconds, height = '240'] = process.argv.slice(2);
const DEADLINE_MS = 15_000;
const result = { ok: false };
const browser = await launch([`--unsafely-treat-insecure-origin-as-secure=${base}`]);

/** The publisher's outbound video: codec, scalability mode, size, frames encoded. */
async function sent(page) {
  return page.evaluate(async () => {
    const pub = window.switchyard.client.connections().find((c) => c.kind === 'publish');
    if (!pub) return undefined;
    const stats = await pub.pc.getStats();
    let out;
    stats.forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out = {
          codec: stats.get(r.codecId)?.mimeType,
          scalability: r.scalabilityMode,
          width: r.frameWidth,
          height: r.frameHeight,
          frames: r.framesEncoded,
          encoder: r.encoderImplementation,
        };
      }
    });
    return out;
  });
}

try {
  const q = new URLSearchParams({ channel, token, codec, user: 'publisher', autojoin: '1', height });
  const { page, errors } = await openDemo(browser, `${base}/?${q}`);
  const deadline = Date.now() + DEADLINE_MS;
  let first;
  while (Date.now() < deadline) {
    const s = await sent(page);
    if (s?.frames > 0) {
      first = Date.now();
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (first === undefined) throw new Error(`no ${codec} frame encoded in ${DEADLINE_MS} ms`);
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  Object.assign(result, await sent(page));
  await page.close();
  result.published_ms = Date.now() - first;
  result.errors = errors;
  result.ok = true;
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
