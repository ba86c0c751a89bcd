// MCU participants in headless Chromium: each page joins the channel's mix (`client.mix`)
// sending a solid colour (a canvas) and a sine (an OscillatorNode) of its own, and reads what
// the mixer sends back: every participant's colour somewhere in the composite, the others'
// tones in the audio (an FFT) and its own tone absent. Then the last page leaves (its colour
// must go from the others' composites) and the first mutes (its tone must go).
// A late joiner's first composite frame is timed.
//
// usage: node mix_pages.mjs <base-url> <channel> <VP8|H264> <token>...
// Prints one JSON line; exits 1 on failure.

import { launch } from './chromium.mjs';

const [base, channel, codec, ...tokens] = process.argv.slice(2);
const COLOURS = ['#ff0000', '#00c800', '#0000ff', '#ffff00'];
const RGB = [[255, 0, 0], [0, 200, 0], [0, 0, 255], [255, 255, 0]];
const TONES = [440, 620, 810, 1070];
const DEADLINE_MS = 25_000;

const browser = await launch();
const pages = [];
let result = { ok: false, codec, pages: [] };

/** Opens a page, joins and mixes as participant `i`; resolves when the mix is received. */
async function open(i) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/`);
  const started = Date.now();
  await page.evaluate(
    async ({ token, channel, colour, tone, codec }) => {
      const { Client } = await import('/switchyard.js');
      const client = new Client({ token, channel, autoSubscribe: false });
      await client.join();
      const canvas = document.createElement('canvas');
      canvas.width = 320;
      canvas.height = 180;
      const ctx = canvas.getContext('2d');
      // captureStream sends frames only when the canvas is drawn.
      setInterval(() => {
        ctx.fillStyle = colour;
        ctx.fillRect(0, 0, 320, 180);
      }, 50);
      const video = canvas.captureStream(15);
      const ac = new AudioContext();
      const osc = ac.createOscillator();
      osc.frequency.value = tone;
      const gain = ac.createGain();
      gain.gain.value = 0.3;
      const dest = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dest);
      osc.start();
      const sent = new MediaStream([video.getVideoTracks()[0], dest.stream.getAudioTracks()[0]]);
      const mixed = await client.mix(sent, { videoCodec: codec });
      const el = document.createElement('video');
      el.muted = true;
      el.srcObject = new MediaStream(mixed.getVideoTracks());
      document.body.append(el);
      await el.play();
      window.firstFrame = new Promise((resolve) => el.requestVideoFrameCallback(() => resolve(performance.now())));
      // Chromium feeds a remote track to Web Audio only while a media element plays it.
      const audio = new Audio();
      audio.srcObject = new MediaStream(mixed.getAudioTracks());
      audio.muted = true;
      await audio.play();
      const analyser = ac.createAnalyser();
      analyser.fftSize = 8192;
      analyser.smoothingTimeConstant = 0.5;
      ac.createMediaStreamSource(new MediaStream(mixed.getAudioTracks())).connect(analyser);
      window.mixTest = { client, el, ac, analyser, sent, mixedAt: performance.now() };
    },
    { token: tokens[i], channel, colour: COLOURS[i], tone: TONES[i], codec },
  );
  const firstFrameMs = await page.evaluate(async () => Math.round((await window.firstFrame) - window.mixTest.mixedAt));
  pages.push({ i, page, errors, firstFrameMs, joinMs: Date.now() - started });
}

/** What page `p` receives now: which colours its composite shows, each tone's dB above the floor. */
function look(p) {
  return p.page.evaluate(
    ({ RGB, TONES }) => {
      const { el, ac, analyser } = window.mixTest;
      const w = el.videoWidth;
      const h = el.videoHeight;
      const c = document.createElement('canvas');
      c.width = w;
      c.height = h;
      const ctx = c.getContext('2d');
      ctx.drawImage(el, 0, 0);
      const data = w && h ? ctx.getImageData(0, 0, w, h).data : [];
      // Each sampled pixel counts for the nearest of the colours (or black): colour matrices
      // on the way (canvas capture, the mixer, the decoder) shift saturated colours a little.
      const counts = RGB.map(() => 0);
      for (let y = 4; y < h - 4; y += Math.max(2, Math.floor(h / 24))) {
        for (let x = 4; x < w - 4; x += Math.max(2, Math.floor(w / 32))) {
          const at = (y * w + x) * 4;
          const px = [data[at], data[at + 1], data[at + 2]];
          const dist = (rgb) => Math.hypot(...rgb.map((v, k) => v - px[k]));
          let best = -1;
          let bestDist = dist([0, 0, 0]);
          RGB.forEach((rgb, k) => {
            if (dist(rgb) < bestDist) {
              best = k;
              bestDist = dist(rgb);
            }
          });
          if (best >= 0 && bestDist < 90) counts[best]++;
        }
      }
      const colours = counts.map((n) => n >= 3);
      // The picture's main colours (quantized), for a failure's message.
      const seen = {};
      for (let y = 4; y < h - 4; y += Math.max(2, Math.floor(h / 12))) {
        for (let x = 4; x < w - 4; x += Math.max(2, Math.floor(w / 16))) {
          const at = (y * w + x) * 4;
          const key = [0, 1, 2].map((k) => Math.round(data[at + k] / 16) * 16).join(',');
          seen[key] = (seen[key] ?? 0) + 1;
        }
      }
      const bins = new Float32Array(analyser.frequencyBinCount);
      analyser.getFloatFrequencyData(bins);
      const hz = ac.sampleRate / analyser.fftSize;
      const level = (f) => Math.max(...[-2, -1, 0, 1, 2].map((d) => bins[Math.round(f / hz) + d]));
      const sorted = [...bins.slice(Math.round(200 / hz), Math.round(2000 / hz))].sort((a, b) => a - b);
      const floor = sorted[Math.floor(sorted.length / 2)];
      const main = Object.entries(seen).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k]) => k);
      return { size: [w, h], colours, tones_db: TONES.map((f) => Math.round(level(f) - floor)), main };
    },
    { RGB, TONES },
  );
}

/** Waits until every page's view passes `ok`, or the deadline; the last views. */
async function until(ok) {
  const start = Date.now();
  let views = [];
  while (Date.now() - start < DEADLINE_MS) {
    views = await Promise.all(pages.map(look));
    if (views.every((v, k) => ok(v, pages[k].i))) return { views, passed: true, ms: Date.now() - start };
    await new Promise((r) => setTimeout(r, 500));
  }
  return { views, passed: false, ms: Date.now() - start };
}

const all = (n) => (v, i) =>
  v.colours.slice(0, n).every(Boolean) &&
  v.tones_db.slice(0, n).every((db, j) => (j === i ? db < 10 : db >= 20));

try {
  const n = tokens.length;
  for (let i = 0; i < n - 1; i++) await open(i);
  // The late joiner: everyone already mixing.
  await open(n - 1);
  const together = await until(all(n));
  result.together = together;

  // The last page leaves: its colour goes from the others' composites.
  const leaver = pages.pop();
  await leaver.page.evaluate(() => window.mixTest.client.leave());
  await leaver.page.close();
  const left = await until((v) => !v.colours[n - 1]);
  result.left = left;

  // The first page mutes its microphone: its tone goes from the others' audio.
  await pages[0].page.evaluate(() => window.mixTest.sent.getAudioTracks()[0].enabled = false);
  const muted = await until((v, i) => i === 0 || v.tones_db[0] < 10);
  result.muted = muted;

  result.pages = [...pages, leaver].map((p) => ({ i: p.i, firstFrameMs: p.firstFrameMs, joinMs: p.joinMs, errors: p.errors }));
  result.ok = together.passed && left.passed && muted.passed;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  console.log(JSON.stringify(result));
  await browser.close();
  process.exit(result.ok ? 0 : 1);
}
