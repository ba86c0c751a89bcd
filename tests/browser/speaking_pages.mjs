// Two pages in one channel, each publishing the fake camera and a fake microphone read from a
// WAV file: one speaks (tone bursts, then silence), the other is silent throughout. Checks that
// the channel hears `speaking: true` for the speaker and then `speaking: false` once it falls
// silent, and never hears of the silent page. Prints one JSON line; exits 1 on failure.
//
// usage: node speaking_pages.mjs <base-url> <channel> <silent-token> <speaker-token>
//
// For a cluster, BASES=url,url has the silent page open the first and the speaker the second
// (different gateways) instead of <base-url>.

import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const [base, channel, silentToken, speakerToken] = process.argv.slice(2);
const bases = process.env.BASES ? process.env.BASES.split(',') : [base];
const DEADLINE_MS = 15_000;
const RATE = 16_000;
/** Tone for the first seconds of capture (joining and publishing take one or two), then silence. */
const TONE_S = 4;
/** Long enough that Chromium, which loops the file, does not play the tone again during the test. */
const FILE_S = 40;

/**
 * A mono 16-bit WAV: for `toneSeconds`, bursts of 300 ms of 440 + 660 Hz at about -12 dBFS with
 * 100 ms gaps (speech-like, so the browser's noise suppression does not learn it away), then
 * silence.
 */
function wav(toneSeconds) {
  const samples = RATE * FILE_S;
  const buf = Buffer.alloc(44 + samples * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + samples * 2, 4);
  buf.write('WAVEfmt ', 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(RATE, 24);
  buf.writeUInt32LE(RATE * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36);
  buf.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) {
    const t = i / RATE;
    const inBurst = t < toneSeconds && t % 0.4 < 0.3;
    const v = inBurst ? 0.125 * (Math.sin(2 * Math.PI * 440 * t) + Math.sin(2 * Math.PI * 660 * t)) : 0;
    buf.writeInt16LE(Math.round(v * 32767), 44 + i * 2);
  }
  return buf;
}

const dir = mkdtempSync(join(tmpdir(), 'speaking-'));
const files = { silent: join(dir, 'silent.wav'), speaker: join(dir, 'speaker.wav') };
writeFileSync(files.silent, wav(0));
writeFileSync(files.speaker, wav(TONE_S));

// One browser per microphone: the fake capture file is a browser-wide flag.
const browsers = [];
const pages = [];
let result = { ok: false, pages: [] };

/** Opens a page of the server, joins with `token`, records speaking events, publishes. */
async function open(name, token, base) {
  const browser = await launch([`--use-file-for-fake-audio-capture=${files[name]}`]);
  browsers.push(browser);
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/`);
  const participant = await page.evaluate(
    async ({ token, channel }) => {
      const { Client } = await import('/switchyard.js');
      const client = new Client({ token, channel });
      window.speakingEvents = [];
      const start = performance.now();
      for (const type of ['speaking', 'dominant-speaker']) {
        client.addEventListener(type, (e) => window.speakingEvents.push({ type, at_ms: Math.round(performance.now() - start), ...e.detail }));
      }
      await client.join();
      // The browser's audio processing off: the levels are those of the file.
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
        video: { width: 320, height: 180 },
      });
      await client.publish(stream);
      window.speakingClient = client;
      return client.participant;
    },
    { token, channel },
  );
  pages.push({ name, page, errors, participant });
}

const events = (p) => p.page.evaluate(() => window.speakingEvents);

try {
  await open('silent', silentToken, bases[0]);
  await open('speaker', speakerToken, bases[1 % bases.length]);
  const [silent, speaker] = pages;
  const start = Date.now();
  let heard = [];
  while (Date.now() - start < DEADLINE_MS) {
    heard = (await events(silent)).filter((e) => e.type === 'speaking');
    const about = heard.filter((e) => e.participant === speaker.participant).map((e) => e.speaking);
    if (about.includes(true) && about.lastIndexOf(false) > about.indexOf(true)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const seen = await Promise.all(pages.map(events));
  const about = (list, who) => list.filter((e) => e.type === 'speaking' && e.participant === who.participant);
  const speakerSeen = about(seen[0], speaker);
  const trueAt = speakerSeen.findIndex((e) => e.speaking);
  const falseAfter = speakerSeen.findIndex((e, i) => i > trueAt && !e.speaking);
  const silentNamed = seen.flat().filter((e) => e.participant === silent.participant);
  const dominant = seen[0].some((e) => e.type === 'dominant-speaker' && e.participant === speaker.participant);
  result = {
    ok: trueAt >= 0 && falseAfter > trueAt && silentNamed.length === 0 && dominant,
    elapsed_ms: Date.now() - start,
    participants: { silent: silent.participant, speaker: speaker.participant },
    silent_named: silentNamed,
    pages: pages.map((p, i) => ({ page: p.name, events: seen[i], errors: p.errors })),
  };
} catch (e) {
  result.error = String(e?.stack ?? e);
  result.pages = pages.map((p) => ({ page: p.name, errors: p.errors }));
} finally {
  for (const b of browsers) await b.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
