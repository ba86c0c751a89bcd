// The demo page: join a channel, publish camera and microphone, show everyone else.
// Query parameters: channel, token (else a dev token is fetched), codec (VP8|H264|VP9|AV1),
// user, region (a cluster's media server region), autojoin=1. Tests read `window.switchyard.client` once `window.switchyard.ready` resolves.

import { Client } from '/switchyard.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const status = (text, error = false) => {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
};

if (params.get('channel')) $('channel').value = params.get('channel');
if (params.get('user')) $('user').value = params.get('user');
if (params.get('codec')) $('codec').value = params.get('codec').toUpperCase();

let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
window.switchyard = { client: undefined, ready };

/** One tile per remote publication. */
const tiles = new Map();

function tile(publication, label) {
  let t = tiles.get(publication);
  if (!t) {
    t = document.createElement('figure');
    t.className = 'tile';
    t.innerHTML = '<video autoplay playsinline></video><figcaption></figcaption>';
    t.querySelector('figcaption').textContent = label;
    $('videos').append(t);
    tiles.set(publication, t);
  }
  return t;
}

async function token(channel, user) {
  if (params.get('token')) return params.get('token');
  const q = new URLSearchParams({ channel, ...(user ? { user } : {}) });
  const res = await fetch(`/api/dev-token?${q}`);
  if (!res.ok) throw new Error(`no token: ${(await res.text()).trim()} (pass ?token=...)`);
  return (await res.text()).trim();
}

async function join() {
  const channel = $('channel').value.trim();
  const user = $('user').value.trim();
  $('join-button').disabled = true;
  status(`Joining ${channel}…`);
  if (!navigator.mediaDevices) {
    throw new Error('This browser allows the camera only on https:// or http://localhost pages; open the demo that way.');
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  $('local').srcObject = stream;
  document.querySelector('.tile.local').hidden = false;

  const region = params.get('region') || undefined;
  const client = new Client({ token: await token(channel, user), channel, region });
  window.switchyard.client = client;
  client.addEventListener('track', (e) => {
    const { participant, publication, stream: remote } = e.detail;
    const video = tile(publication, participant).querySelector('video');
    if (video.srcObject !== remote) video.srcObject = remote;
  });
  client.addEventListener('track-ended', (e) => {
    tiles.get(e.detail.publication)?.remove();
    tiles.delete(e.detail.publication);
  });
  client.addEventListener('error', (e) => status(e.detail.reason, true));
  client.addEventListener('disconnected', (e) => status(`Disconnected: ${e.detail.reason}`, true));

  const joined = await client.join();
  const codec = $('codec').value || undefined;
  await client.publish(stream, { videoCodec: codec });
  $('leave-button').disabled = false;
  const others = joined.participants.length;
  status(`In ${joined.channel} as ${joined.participant}${codec ? ` (${codec})` : ''}; ${others} other participant(s) when you joined.`);
  return client;
}

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  join().then(resolveReady, (err) => {
    status(err.message, true);
    $('join-button').disabled = false;
    rejectReady(err);
  });
});

$('leave-button').addEventListener('click', async () => {
  await window.switchyard.client?.leave();
  for (const t of tiles.values()) t.remove();
  tiles.clear();
  $('local').srcObject?.getTracks().forEach((t) => t.stop());
  document.querySelector('.tile.local').hidden = true;
  $('join-button').disabled = false;
  $('leave-button').disabled = true;
  status('Left the channel.');
});

if (params.get('autojoin') === '1') $('join').requestSubmit();
