// The demo page: join a channel, publish camera and microphone, show everyone else.
// Query parameters: channel, token (else a dev token is fetched), codec (VP8|H264|VP9|AV1),
// user, region (a cluster's media server region), autojoin=1, relay=1 (every connection's media
// through the TURN server the server names: iceTransportPolicy 'relay'), p2p=1 (no media
// server: connect peer to peer to everyone in the channel instead of publishing), svc (VP9/AV1
// scalability mode, e.g. L3T3_KEY, instead of the SDK's default), height (camera lines),
// maxheight and maxfps (the preferences asked of every subscription: `setPreferences`).
// Tests read `window.switchyard.client` once `window.switchyard.ready` resolves.

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
$('p2p').checked = params.get('p2p') === '1';
$('relay').checked = params.get('relay') === '1';
$('mcu').checked = params.get('mcu') === '1';

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
  for (const box of [$('p2p'), $('relay'), $('mcu')]) box.disabled = true;
  status(`Joining ${channel}…`);
  if (!navigator.mediaDevices) {
    throw new Error('This browser allows the camera only on https:// or http://localhost pages; open the demo that way.');
  }
  // `height` (URL) sets the camera's size (default 360 lines, 16:9).
  const height = Number(params.get('height')) || 360;
  const video = { width: Math.round((height * 16) / 9), height };
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  $('local').srcObject = stream;
  document.querySelector('.tile.local').hidden = false;

  const region = params.get('region') || undefined;
  const iceTransportPolicy = $('relay').checked ? 'relay' : 'all';
  const p2p = $('p2p').checked;
  const mcu = $('mcu').checked && !p2p;
  // `sync` (URL): the signalling URLs to use, comma-separated (a cluster's gateways: the client
  // reconnects to the next when one drops); default: this page's server.
  const url = params.get('sync')?.split(',').filter(Boolean);
  // An MCU participant receives the mix only, not everyone's publications.
  const client = new Client({ url: url?.length ? url : undefined, token: await token(channel, user), channel, region, iceTransportPolicy, autoSubscribe: !mcu });
  window.switchyard.client = client;
  // `maxheight` and `maxfps` (URL) are asked of every subscription.
  const preferences = {
    maxHeight: Number(params.get('maxheight')) || undefined,
    maxFrameRate: Number(params.get('maxfps')) || undefined,
  };
  client.addEventListener('track', (e) => {
    const { participant, publication, track, stream: remote } = e.detail;
    const video = tile(publication, participant).querySelector('video');
    if (video.srcObject !== remote) video.srcObject = remote;
    if (track.kind === 'video' && (preferences.maxHeight || preferences.maxFrameRate)) {
      client.setPreferences(publication, preferences);
    }
  });
  client.addEventListener('track-ended', (e) => {
    tiles.get(e.detail.publication)?.remove();
    tiles.delete(e.detail.publication);
  });
  client.addEventListener('peer', (e) => {
    const { participant, peer, incoming } = e.detail;
    // Whoever connects to us gets our camera too (the SDK answers once this returns).
    if (incoming) peer.addStream(stream);
    const key = `peer:${participant}`;
    peer.addEventListener('track', (t) => {
      const video = tile(key, `${participant} (peer to peer)`).querySelector('video');
      if (video.srcObject !== t.detail.stream) video.srcObject = t.detail.stream;
    });
    peer.addEventListener('error', (t) => status(`${participant}: ${t.detail.reason}`, true));
    peer.addEventListener('closed', () => {
      tiles.get(key)?.remove();
      tiles.delete(key);
    });
  });
  client.addEventListener('error', (e) => status(e.detail.reason, true));
  client.addEventListener('disconnected', (e) => status(`Disconnected: ${e.detail.reason}`, true));
  client.addEventListener('reconnecting', (e) => status(`Reconnecting (try ${e.detail.attempt}): ${e.detail.reason}`, true));
  client.addEventListener('reconnected', (e) => status(`Reconnected as ${e.detail.participant}${e.detail.resumed ? '' : ' (a new participant)'}.`));

  const joined = await client.join();
  const codec = $('codec').value || undefined;
  if (p2p) {
    // Those who join later connect to us.
    for (const p of joined.participants) client.connectPeer(p.participant, { stream });
  } else if (mcu) {
    // The server mixes everyone (VP8 or H264) into one picture and our audio out of theirs.
    const mixed = await client.mix(stream, { videoCodec: codec === 'H264' ? 'H264' : 'VP8' });
    tile('mix', 'everyone (mixed by the server)').querySelector('video').srcObject = mixed;
  } else {
    // `simulcast=0` (URL) publishes one video stream instead of three layers.
    // `maxkbps` (URL) sets the top layer's ceiling; `svc` the SVC mode (VP9, AV1).
    const maxBitrate = Number(params.get('maxkbps')) * 1000 || undefined;
    const scalabilityMode = params.get('svc') || undefined;
    await client.publish(stream, { videoCodec: codec, simulcast: params.get('simulcast') !== '0', maxBitrate, scalabilityMode });
  }
  $('leave-button').disabled = false;
  const others = joined.participants.length;
  const how = [p2p ? 'peer to peer' : mcu ? 'mixed' : codec, iceTransportPolicy === 'relay' ? 'relayed' : undefined].filter(Boolean).join(', ');
  status(`In ${joined.channel} as ${joined.participant}${how ? ` (${how})` : ''}; ${others} other participant(s) when you joined.`);
  return client;
}

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  join().then(resolveReady, (err) => {
    status(err.message, true);
    $('join-button').disabled = false;
    for (const box of [$('p2p'), $('relay'), $('mcu')]) box.disabled = false;
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
  for (const box of [$('p2p'), $('relay'), $('mcu')]) box.disabled = false;
  $('leave-button').disabled = true;
  status('Left the channel.');
});

if (params.get('autojoin') === '1') $('join').requestSubmit();
