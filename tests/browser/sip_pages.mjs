// Browser participants of a channel that phones call into (tests/sip.rs). Each page joins the
// channel's mix (`client.mix`) sending a sine of its own (an OscillatorNode), and reads the
// mixed audio it gets back with an FFT: the phones' tones and the other pages' must be there,
// its own must not. Once every page hears what it should, the pages go on sending for
// `hold` seconds (the phone side records that long), collecting the DTMF digits the channel
// announces; then each presses the digits it was given (sent to the phones) and leaves.
//
// usage: node sip_pages.mjs <base-url> <channel> <hold-seconds> <phone-tones-csv> <token>:<tone>[:<digits>]...
// Prints one JSON line; exits 1 on failure.

import { launch } from './chromium.mjs';

const [base, channel, holdArg, phoneArg, ...specs] = process.argv.slice(2);
const HOLD_MS = Number(holdArg) * 1000;
const PHONE_TONES = phoneArg ? phoneArg.split(',').map(Number) : [];
const PAGES = specs.map((s) => {
  const [token, tone, digits] = s.split(':');
  return { token, tone: Number(tone), digits: digits ?? '' };
});
const DEADLINE_MS = 25_000;

const browser = await launch();
const pages = [];
const result = { ok: false, pages: [] };

async function open(i) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/`);
  await page.evaluate(
    async ({ token, channel, tone }) => {
      const { Client } = await import('/switchyard.js');
      const client = new Client({ token, channel, autoSubscribe: false });
      const digits = [];
      client.addEventListener('dtmf', (e) => digits.push(e.detail.digit));
      await client.join();
      const ac = new AudioContext();
      const osc = ac.createOscillator();
      osc.frequency.value = tone;
      const gain = ac.createGain();
      gain.gain.value = 0.1; // -23 dBov: several such tones mixed stay far from clipping
      const dest = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dest);
      osc.start();
      const mixed = await client.mix(dest.stream);
      // Chromium feeds a remote track to Web Audio only while a media element plays it.
      const audio = new Audio();
      audio.srcObject = new MediaStream(mixed.getAudioTracks());
      audio.muted = true;
      await audio.play();
      const analyser = ac.createAnalyser();
      analyser.fftSize = 8192;
      analyser.smoothingTimeConstant = 0.5;
      ac.createMediaStreamSource(new MediaStream(mixed.getAudioTracks())).connect(analyser);
      window.sipTest = { client, ac, analyser, digits };
    },
    { token: PAGES[i].token, channel, tone: PAGES[i].tone },
  );
  pages.push({ i, page, errors });
}

/** Each frequency's level in page `p`'s received mix, in dB above the median floor. */
function levels(p, freqs) {
  return p.page.evaluate((freqs) => {
    const { ac, analyser } = window.sipTest;
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    const hz = ac.sampleRate / analyser.fftSize;
    const level = (f) => Math.max(...[-2, -1, 0, 1, 2].map((d) => bins[Math.round(f / hz) + d]));
    const sorted = [...bins.slice(Math.round(200 / hz), Math.round(3400 / hz))].sort((a, b) => a - b);
    const floor = sorted[Math.floor(sorted.length / 2)];
    return freqs.map((f) => Math.round(level(f) - floor));
  }, freqs);
}

const pageTones = PAGES.map((p) => p.tone);
const all = [...PHONE_TONES, ...pageTones];

/**
 * Whether page `i` hears every phone and every other page (20 dB above the floor), and not
 * itself: its own tone at least 25 dB under the weakest of the others. (Two lossy codecs on the
 * way leave a trace of it tens of dB down, not always under the floor.)
 */
function hears(db, i) {
  const own = PHONE_TONES.length + i;
  const others = db.filter((_, k) => k !== own);
  return others.every((d) => d >= 20) && db[own] <= Math.min(...others) - 25;
}

try {
  for (let i = 0; i < PAGES.length; i++) await open(i);
  const start = Date.now();
  let views = [];
  let passed = false;
  while (Date.now() - start < DEADLINE_MS) {
    views = await Promise.all(pages.map((p) => levels(p, all)));
    if (views.every((db, i) => hears(db, i))) {
      passed = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  result.heard = { passed, ms: Date.now() - start, tones: all, views };
  if (passed) await new Promise((r) => setTimeout(r, HOLD_MS));
  for (const p of pages) {
    const digits = PAGES[p.i].digits;
    if (digits) await p.page.evaluate((d) => window.sipTest.client.sendDtmf(d), digits);
  }
  // Digits pressed on the phones arrive while the pages hold; give the last ones a moment.
  await new Promise((r) => setTimeout(r, 1500));
  result.pages = await Promise.all(
    pages.map(async (p) => ({
      i: p.i,
      errors: p.errors,
      digits: (await p.page.evaluate(() => window.sipTest.digits)).join(''),
    })),
  );
  for (const p of pages) await p.page.evaluate(() => window.sipTest.client.leave());
  result.ok = passed;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  console.log(JSON.stringify(result));
  await browser.close();
  process.exit(result.ok ? 0 : 1);
}
