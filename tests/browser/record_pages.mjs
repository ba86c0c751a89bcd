// Publishers for the recording tests, in headless Chromium: each page joins the channel and
// publishes, with the SDK and the video codec it is given, a canvas (canvas.captureStream) and
// a WebAudio oscillator (MediaStreamAudioDestinationNode).
//
// - A `flash` page draws black, and white for 100 ms once a second, and beeps (1 kHz, loud) at
//   the same instants: both follow the AudioContext's clock, the beeps as scheduled gain
//   changes, the canvas redrawn at every animation frame from the time being output
//   (`getOutputTimestamp`). What a recording
//   keeps of the two tells its A/V sync. It publishes as the SDK does by default, with
//   simulcast: its canvas is 640x360, for which Chromium sends two of the SDK's three layers
//   (160x90 and 320x180; it drops the top one below 960x540).
// - A `plain` page draws a still blue and plays a quiet 300 Hz tone, on a 320x240 canvas sent
//   as one stream (`simulcast: false`: at that size Chromium would send only the SDK's quarter
//   layer, 80x60).
//
// Each page publishes for <seconds> counted from when its publication's connection is up, or,
// with RECORDINGS=<the channel's recording directory>, from when the server has started both
// of its files (checking that it sends audio and video), then leaves (its publication ends); with `--stay` it never leaves and the script only waits that
// long and exits (the server was killed under it).
//
// usage: node record_pages.mjs [--stay] <base-url> <channel> <seconds> <kind>:<codec>:<token>...
// Prints one JSON line: per page the codecs it sent, frames, draws and flashes, and how long it
// published; exits 1 on failure.

import { readdirSync } from 'node:fs';

import { launch } from './chromium.mjs';

const argv = process.argv.slice(2);
const stay = argv[0] === '--stay';
const [base, channel, seconds, ...specs] = stay ? argv.slice(1) : argv;
const PUBLISH_MS = Number(seconds) * 1000;
const START_DEADLINE_MS = 20_000;
const recordings = process.env.RECORDINGS;

const browser = await launch();
const result = { ok: false, pages: [] };

/** Opens a page that publishes as `spec` (kind:codec:token) and runs it to its end. */
async function run(spec) {
  const [kind, codec, ...rest] = spec.split(':');
  const token = rest.join(':');
  // A context each: every page is a foreground page with its own animation frames.
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  const out = { kind, codec, errors };
  try {
    await page.goto(`${base}/`);
    await page.evaluate(
      async ({ token, channel, kind, codec }) => {
        const { Client } = await import('/switchyard.js');
        const client = new Client({ token, channel, autoSubscribe: false, reconnect: false });
        await client.join();
        const canvas = document.createElement('canvas');
        const [width, height] = kind === 'flash' ? [640, 360] : [320, 240];
        canvas.width = width;
        canvas.height = height;
        document.body.append(canvas);
        const ctx = canvas.getContext('2d');
        const ac = new AudioContext({ sampleRate: 48_000 });
        await ac.resume();
        const osc = ac.createOscillator();
        const gain = ac.createGain();
        const dest = ac.createMediaStreamDestination();
        osc.connect(gain).connect(dest);
        const state = { draws: 0, flashes: 0, white: false };
        // The first flash a second from now, on the audio clock; then one a second.
        const t0 = Math.ceil(ac.currentTime) + 1;
        if (kind === 'flash') {
          osc.frequency.value = 1000;
          gain.gain.value = 0;
          for (let k = 0; k < 120; k++) {
            gain.gain.setValueAtTime(0.5, t0 + k);
            gain.gain.setValueAtTime(0, t0 + k + 0.1);
          }
        } else {
          osc.frequency.value = 300;
          gain.gain.value = 0.02;
        }
        osc.start();
        // Redrawn at every animation frame (captureStream takes a frame each time the canvas
        // is drawn): white while the sound being output is within 100 ms after a whole second
        // of the audio clock. "Output", not `currentTime`: the context renders ahead of its
        // output by its base and output latencies (10 + 32 ms in headless Chromium), and the
        // track from a MediaStreamAudioDestinationNode is timestamped at output, so a flash
        // drawn at `currentTime` came that much before its beep in what Chromium sends.
        const outputTime = () => {
          const { contextTime, performanceTime } = ac.getOutputTimestamp();
          return contextTime + (performance.now() - performanceTime) / 1000;
        };
        const draw = () => {
          const t = outputTime() - t0;
          const white = kind === 'flash' && t >= 0 && t % 1 < 0.1;
          if (white && !state.white) state.flashes++;
          state.white = white;
          ctx.fillStyle = kind === 'flash' ? (white ? '#ffffff' : '#000000') : '#3050a0';
          ctx.fillRect(0, 0, width, height);
          state.draws++;
          requestAnimationFrame(draw);
        };
        requestAnimationFrame(draw);
        const audioTrack = dest.stream.getAudioTracks()[0];
        state.latency_ms = Math.round((ac.baseLatency + ac.outputLatency) * 1000);
        const video = canvas.captureStream();
        const stream = new MediaStream([video.getVideoTracks()[0], audioTrack]);
        const publication = await client.publish(stream, { videoCodec: codec, simulcast: kind === 'flash' });
        // When the publication's connection is up: its media flows from then on (the first
        // outbound stats that show it come 100 to 300 ms later on a busy machine).
        const pc = client.connections().find((c) => c.id === publication).pc;
        const connected = new Promise((resolve) => {
          const check = () => pc.connectionState === 'connected' && resolve(Date.now());
          pc.addEventListener('connectionstatechange', check);
          check();
        });
        window.recordTest = { client, publication, state, ac, connected };
      },
      { token, channel, kind, codec },
    );

    /** What the publication's connection has sent: per kind, packets, frames and codec. */
    const sent = () =>
      page.evaluate(async () => {
        const { client, publication } = window.recordTest;
        const pc = client.connections().find((c) => c.id === publication)?.pc;
        const report = pc ? await pc.getStats() : new Map();
        const totals = { audio: { packets: 0, codecs: [] }, video: { packets: 0, frames: 0, codecs: [] } };
        for (const r of report.values()) {
          if (r.type !== 'outbound-rtp') continue;
          const t = totals[r.kind];
          t.packets += r.packetsSent ?? 0;
          if (r.kind === 'video') {
            t.frames += r.framesEncoded ?? 0;
            t.layers = [...(t.layers ?? []), { rid: r.rid, width: r.frameWidth, height: r.frameHeight, frames: r.framesEncoded ?? 0, nacks: r.nackCount, plis: r.pliCount, firs: r.firCount, rtx: r.retransmittedPacketsSent, keyframes: r.keyFramesEncoded, limit: r.qualityLimitationReason, bytes: r.bytesSent }];
          }
          const codec = r.codecId ? report.get(r.codecId)?.mimeType : undefined;
          if (codec && !t.codecs.includes(codec)) t.codecs.push(codec);
        }
        return totals;
      });
    const asked = Date.now();
    let now = await sent();
    while (!(now.audio.packets > 0 && now.video.frames > 0)) {
      if (Date.now() - asked > START_DEADLINE_MS) throw new Error(`nothing sent in 20 s: ${JSON.stringify(now)}`);
      await new Promise((r) => setTimeout(r, 20));
      now = await sent();
    }
    const connected = await page.evaluate(() => window.recordTest.connected);
    // With RECORDINGS (the channel's recording directory), from when the server has started
    // both of this publication's files (its first audio frame, its first video keyframe);
    // else from when the connection came up.
    let started = connected;
    if (recordings) {
      const publication = await page.evaluate(() => window.recordTest.publication);
      const list = () => {
        try {
          return readdirSync(recordings);
        } catch {
          return []; // not created yet
        }
      };
      const files = () => list().filter((f) => f.startsWith(`${publication}-`) && f.endsWith('.rec'));
      while (files().length < 2) {
        if (Date.now() - asked > START_DEADLINE_MS) throw new Error(`not recorded in 20 s: ${list()}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      started = Date.now();
    }
    out.start_ms = started - asked;
    out.recording_ms = started - connected;
    const until = (ms) => new Promise((r) => setTimeout(r, Math.max(0, started + ms - Date.now())));
    // What was sent, read a little before the end so that the end itself is on time.
    await until(PUBLISH_MS - 500);
    const end = await sent();
    const state = await page.evaluate(() => window.recordTest.state);
    await until(PUBLISH_MS);
    if (!stay) await page.evaluate(() => window.recordTest.client.leave());
    out.published_ms = Date.now() - started;
    out.ended_at = Date.now();
    out.sent = end;
    out.draws = state.draws;
    out.flashes = state.flashes;
    out.audio_latency_ms = state.latency_ms;
    out.ok =
      end.audio.codecs.some((c) => c.toLowerCase() === 'audio/opus') &&
      end.video.codecs.some((c) => c.toLowerCase() === `video/${codec.toLowerCase()}`) &&
      end.video.codecs.length === 1;
  } catch (e) {
    out.error = String(e?.stack ?? e);
    out.ok = false;
  } finally {
    await context.close().catch(() => {});
  }
  return out;
}

try {
  result.pages = await Promise.all(specs.map(run));
  result.ok = result.pages.every((p) => p.ok);
} catch (e) {
  result.error = String(e?.stack ?? e);
} finally {
  console.log(JSON.stringify(result));
  await browser.close();
  process.exit(result.ok ? 0 : 1);
}
