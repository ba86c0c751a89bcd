// A page that dials a phone into its channel with the SDK's `client.dial` (tests/sip.rs): it
// joins with a token that allows dialling, dials a bad number (which must be refused), then
// the number given, again while the trunk the test just wrote has not reached the server's
// cached store ("no enabled trunk"), and waits until the callee joins the channel as
// `sip:<number>`.
//
// usage: node dial_page.mjs <base-url> <channel> <token> <number> <caller-id>
// Prints one JSON line {ok, call, refused, joined, error}; exits 1 on failure.

import { launch } from './chromium.mjs';

const [base, channel, token, number, callerId] = process.argv.slice(2);
const DEADLINE_MS = 20_000;

const browser = await launch();
let result = { ok: false };
try {
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  result = await page.evaluate(
    async ({ token, channel, number, callerId, deadlineMs }) => {
      const { Client } = await import('/switchyard.js');
      const client = new Client({ token, channel, autoSubscribe: false });
      const joined = new Promise((resolve) => {
        client.addEventListener('participant-joined', (e) => {
          if (e.detail.user === `sip:${number}`) resolve(e.detail.user);
        });
      });
      await client.join();
      const refused = await client.dial('12 34').then(
        () => null,
        (e) => e.message,
      );
      const deadline = Date.now() + deadlineMs;
      let call;
      for (;;) {
        try {
          call = await client.dial(number, { callerId });
          break;
        } catch (e) {
          if (!e.message.includes('no enabled trunk') || Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      const timeout = new Promise((r) => setTimeout(() => r(null), deadlineMs));
      const user = await Promise.race([joined, timeout]);
      await client.leave();
      return { ok: typeof call === 'string' && user !== null, call, refused, joined: user };
    },
    { token, channel, number, callerId, deadlineMs: DEADLINE_MS },
  );
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
