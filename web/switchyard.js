// Switchyard browser SDK: join a channel, publish a MediaStream, receive everyone else's, or
// connect directly to another participant (peer to peer).
//
// Each publication is its own RTCPeerConnection (sendonly), and each subscription to a remote
// publication is another (recvonly): the server is always the answerer, so no renegotiation is
// ever needed. A peer-to-peer connection (peer.js) is negotiated between the two browsers
// through the server's `signal` relay and its media never reaches a media server. Signalling is
// JSON over a WebSocket at /sync (docs/signalling.md).

import { Peer, receive } from './peer.js';

export { Peer };

/**
 * @typedef {{ kind: 'audio' | 'video' | 'data', codec: string }} TrackInfo
 *   a publication's data channels are listed as one track of kind 'data'
 * @typedef {{ label: string, ordered?: boolean, maxRetransmits?: number, maxPacketLifeTime?: number,
 *             protocol?: string }} DataChannelOptions
 * @typedef {{ publication: string, tracks: TrackInfo[] }} PublicationInfo
 * @typedef {{ participant: string, user: string, publications: PublicationInfo[] }} ParticipantInfo
 * @typedef {{ urls: string | string[], username?: string, credential?: string }} IceServer
 * @typedef {{ participant: string, channel: string, participants: ParticipantInfo[], iceServers?: IceServer[] }} JoinResult
 * @typedef {{ participant: string, publication: string, kind: string, codec: string | undefined,
 *             framesDecoded: number, packetsReceived: number, bytesReceived: number,
 *             frameHeight: number | undefined, framesPerSecond: number | undefined,
 *             freezeCount: number | undefined,
 *             framesDropped: number | undefined, packetsLost: number | undefined,
 *             nackCount: number | undefined,
 *             retransmittedPacketsReceived: number | undefined }} RemoteStats
 *   `nackCount`: NACKs this receiver sent; `retransmittedPacketsReceived`: retransmissions
 *   (RTX) it got for them
 * @typedef {{ maxHeight?: number, maxFrameRate?: number, paused?: boolean }} Preferences
 * @typedef {{ participant: string, kind: string, codec: string | undefined, framesDecoded: number,
 *             packetsReceived: number, bytesReceived: number, localCandidate: string | undefined,
 *             remoteCandidate: string | undefined }} PeerStats
 *   `localCandidate`/`remoteCandidate`: the types ('host', 'srflx', 'relay'...) of the selected pair
 */

/**
 * The simulcast layers a video publication sends by default, lowest first (the server takes
 * the order of `a=simulcast` as lowest first): a quarter, half and full resolution.
 */
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000 },
];
/** Codecs published with simulcast; VP9 and AV1 scale with SVC layers instead. */
const SIMULCAST_CODECS = ['VP8', 'H264'];
/**
 * Codecs published with SVC, and their default scalability mode. VP9: one stream of three
 * spatial layers (quarter, half and full resolution) and three temporal layers, spatial layers
 * refreshed by keyframes only (k-SVC, `L3T3_KEY`). AV1: three temporal layers only (`L1T3`),
 * because the Chromium we test with (156) decodes no AV1 stream with more than one spatial
 * layer, whether or not the server drops layers; `scalabilityMode: 'L3T3_KEY'` in `publish`
 * asks for spatial layers anyway. The server drops the layers a subscriber does not want from
 * the dependency descriptor alone.
 */
const SVC_MODES = { VP9: 'L3T3_KEY', AV1: 'L1T3' };

/** How long to wait for ICE gathering before sending an offer anyway. */
const GATHER_TIMEOUT_MS = 2000;
/** The first pause before reconnecting, doubled after each failed try up to the last. */
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 4000;
/**
 * Close codes after which reconnecting would not help or is not wanted: unauthorized (4001),
 * kicked (4003), join timeout (4008), resumed on another connection (4009), message rate (4029).
 */
const FINAL_CLOSE_CODES = new Set([4001, 4003, 4008, 4009, 4029]);


/** Each received track's counters in a getStats() report, with `fields` added to each. */
function inboundStats(report, fields) {
  const out = [];
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    out.push({
      ...fields,
      kind: r.kind,
      codec: r.codecId ? report.get(r.codecId)?.mimeType : undefined,
      framesDecoded: r.framesDecoded ?? 0,
      packetsReceived: r.packetsReceived ?? 0,
      bytesReceived: r.bytesReceived ?? 0,
      frameHeight: r.frameHeight,
      framesPerSecond: r.framesPerSecond,
      freezeCount: r.freezeCount,
      framesDropped: r.framesDropped,
      packetsLost: r.packetsLost,
      nackCount: r.nackCount,
      retransmittedPacketsReceived: r.retransmittedPacketsReceived,
    });
  });
  return out;
}

/**
 * A client in one channel.
 *
 * Events (CustomEvent, data in `detail`): `participant-joined` {participant, user},
 * `participant-left` {participant}, `track` {participant, publication, track, stream},
 * `track-ended` {participant, publication}, `republished` {previous, publication}, `kicked` {reason},
 * `disconnected` {reason}, `error` {reason}, `peer` {participant, peer, incoming} (a peer-to-peer
 * connection was made: by `connectPeer`, or, `incoming`, by the other participant; a listener
 * may call `peer.addStream(stream)` right then to send media on an incoming one, which is then
 * answered), `signal` {from, data} (a signal of the application's own, see `signal`),
 * `speaking` {participant, publication, speaking} (a publication's audio started or stopped
 * carrying speech; our own included), `dominant-speaker` {participant, publication} (the channel's
 * main speaker changed; both null when its publication ended),
 * `reconnecting` {attempt, reason} (the signalling connection dropped; each try to reconnect),
 * `reconnected` {participant, resumed} (connected again: `resumed` when it kept its participant id;
 * our publications are published again and every publication subscribed again),
 * `layers` {publication, active} (our simulcast layers the server turned on or off, lowest first:
 * only watched ones are sent), `message` {from, data} (a channel message, see `sendMessage`), `datachannel` {participant,
 * publication, label, channel} (a subscribed publication's data channel opened toward us) and
 * `data` {participant, publication, label, data} (a message on it: a string, or an ArrayBuffer
 * for binary).
 *
 * Every RTCPeerConnection (publish, subscribe, peer to peer) uses the `iceServers` of the
 * server's `joined` message (a TURN server with short-lived credentials, when it has one) and
 * the `iceTransportPolicy` given here: 'relay' sends all media through TURN.
 *
 * When the server reports one of our own publications unpublished (its media server stopped or
 * ended it), the client publishes the same stream again, on whichever server the gateway picks,
 * retrying for a while; subscribers then see the new publication like any other. A publication
 * or subscription whose media path fails (`connectionState` 'failed') is made again the same way,
 * on fresh ICE credentials: each has its own RTCPeerConnection and the server is ICE-lite, so a
 * new connection is the ICE restart.
 *
 * When the signalling connection drops (its gateway died, the network changed) the client
 * reconnects by itself, with back-off, to the next of its URLs (a cluster's gateways share every
 * channel), for up to `reconnectTimeout` ms. It presents the key its `joined` message gave, so
 * the server continues the same participant id and ends what was left of the old connection;
 * the client then publishes its streams again and subscribes to everyone again. `disconnected`
 * comes only when it gives up, or after a close that reconnecting cannot mend (kicked,
 * unauthorized, `leave`).
 */
export class Client extends EventTarget {
  /** @type {WebSocket | undefined} */ #ws;
  /** @type {string[]} where to connect; reconnects go to the next */ #urls;
  #urlIndex = 0;
  #reconnect;
  #reconnectTimeout;
  /** `joined.resumeKey`: what resumes this participant after a reconnect */ #resumeKey = '';
  #token;
  #channel;
  #autoSubscribe;
  #region;
  #iceTransportPolicy;
  /** @type {IceServer[]} from `joined` */ #iceServers = [];
  #nextId = 1;
  #leaving = false;
  /** @type {Map<number, {resolve: (m: any) => void, reject: (e: Error) => void}>} */ #pending = new Map();
  /** @type {Map<string, {pc: RTCPeerConnection, stream: MediaStream, options: object}>} our publications */
  #publications = new Map();
  /** Our MCU connection, if we mix: { id, pc }. */
  #mix = undefined;
  /** @type {Map<string, {participant: string, tracks: TrackInfo[]}>} remote publications */
  #remote = new Map();
  /** @type {Map<string, {id: string | undefined, participant: string, pc: RTCPeerConnection}>} by publication */
  #subscriptions = new Map();
  /** @type {Map<string, Map<string, RTCDataChannel>>} our publications' data channels by label */
  #dataChannels = new Map();
  /** @type {Map<string, Peer>} peer-to-peer connections by the other participant */
  #peers = new Map();
  /** @type {string | undefined} */ participant;
  /** @type {string | undefined} */ channel;

  /**
   * @param {{ url?: string | string[], token: string, channel?: string, autoSubscribe?: boolean, region?: string,
   *            iceTransportPolicy?: 'all' | 'relay', reconnect?: boolean, reconnectTimeout?: number }} options
   *   `url` defaults to ws(s)://<this page's host>/sync; several (a cluster's gateways) are tried
   *   in turn when reconnecting; `channel` may be left out when the
   *   token grants one channel; `region` asks a cluster for a media server in that region;
   *   `iceTransportPolicy` ('all' by default) goes to every RTCPeerConnection; `reconnect`
   *   (true by default) and `reconnectTimeout` (ms, 60 000 by default) say whether and for how
   *   long to reconnect after the connection drops.
   */
  constructor({ url, token, channel, autoSubscribe = true, region, iceTransportPolicy = 'all', reconnect = true, reconnectTimeout = 60_000 }) {
    super();
    if (iceTransportPolicy !== 'all' && iceTransportPolicy !== 'relay') {
      throw new TypeError(`iceTransportPolicy must be 'all' or 'relay', not ${JSON.stringify(iceTransportPolicy)}`);
    }
    this.#iceTransportPolicy = iceTransportPolicy;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.#urls = [url ?? `${scheme}//${location.host}/sync`].flat();
    if (this.#urls.length === 0) throw new TypeError('url must name at least one server');
    this.#reconnect = reconnect;
    this.#reconnectTimeout = reconnectTimeout;
    this.#token = token;
    this.#channel = channel;
    this.#autoSubscribe = autoSubscribe;
    this.#region = region;
  }

  /** Connects and joins the channel. @returns {Promise<JoinResult>} */
  join() {
    return this.#open(false);
  }

  /**
   * Opens a socket to the current URL and joins; `resuming` presents our participant and its
   * key, to continue as it. Resolves with `joined`; a socket that drops after that reconnects.
   */
  #open(resuming) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.#urls[this.#urlIndex]);
      this.#ws = ws;
      let joined = false;
      ws.onopen = () => {
        const resume = resuming && this.#resumeKey ? { participant: this.participant, key: this.#resumeKey } : undefined;
        ws.send(JSON.stringify({ type: 'join', token: this.#token, channel: this.#channel, region: this.#region, resume }));
      };
      ws.onmessage = (e) => {
        if (ws !== this.#ws) return; // a socket we have left behind
        let m;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        if (m.type === 'joined') {
          joined = true;
          this.#joined(m, resuming);
          resolve(m);
        } else if (m.type === 'error' && !joined) {
          reject(new Error(m.reason));
        } else {
          this.#onMessage(m);
        }
      };
      ws.onclose = (e) => {
        if (ws !== this.#ws) return;
        const reason = e.reason || `connection closed (${e.code})`;
        for (const { reject: r } of this.#pending.values()) r(new Error(reason));
        this.#pending.clear();
        if (!joined) {
          reject(new Error(reason));
        } else if (this.#leaving || !this.#reconnect || FINAL_CLOSE_CODES.has(e.code)) {
          this.#emit('disconnected', { reason });
        } else {
          this.#reconnectLoop(reason);
        }
      };
    });
  }

  /** What `joined` tells us; after a reconnect, every connection is made again. */
  #joined(m, resuming) {
    const previous = this.participant;
    this.participant = m.participant;
    this.channel = m.channel;
    this.#resumeKey = typeof m.resumeKey === 'string' ? m.resumeKey : '';
    // A server without TURN sends none; anything but an array is ignored rather than
    // breaking every connection.
    if (Array.isArray(m.iceServers)) this.#iceServers = m.iceServers;
    if (resuming) {
      // The server ended what the old connection had (or lost it with its gateway).
      for (const [publication, s] of this.#subscriptions) {
        s.pc.close();
        this.#emit('track-ended', { participant: s.participant, publication });
      }
      this.#subscriptions.clear();
      this.#remote.clear();
    }
    for (const p of m.participants) {
      for (const pub of p.publications) this.#published(p.participant, pub.publication, pub.tracks);
    }
    if (resuming) {
      for (const publication of [...this.#publications.keys()]) this.#republish(publication);
      this.#emit('reconnected', { participant: m.participant, resumed: m.participant === previous });
    }
  }

  /** Reconnects with back-off, to each URL in turn, until joined or `reconnectTimeout` passes. */
  async #reconnectLoop(reason) {
    const started = Date.now();
    for (let attempt = 1; !this.#leaving; attempt++) {
      this.#emit('reconnecting', { attempt, reason });
      const pause = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** (attempt - 1));
      await new Promise((r) => setTimeout(r, pause * (0.75 + Math.random() * 0.5)));
      if (this.#leaving) return;
      // The server that dropped us is likely gone: try the next one first.
      this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
      try {
        await this.#open(true);
        return;
      } catch (e) {
        reason = e.message;
        this.#ws?.close();
      }
      if (Date.now() - started > this.#reconnectTimeout) {
        this.#emit('disconnected', { reason: `gave up reconnecting: ${reason}` });
        return;
      }
    }
  }

  /**
   * Publishes the stream's tracks; `videoCodec` ('VP8' | 'H264' | 'VP9' | 'AV1') forces that
   * codec. Video goes out as three simulcast layers (quarter, half and full resolution) for VP8
   * and H264, and as one SVC stream for VP9 (three spatial and three temporal layers,
   * `L3T3_KEY`) and AV1 (three temporal layers, `L1T3`), so that each subscriber gets the layers
   * that fit its link and its preferences;
   * `simulcast: false` sends one stream without layers; `scalabilityMode` (VP9, AV1) replaces the
   * default SVC mode, e.g. 'L3T3_KEY' for AV1; `maxBitrate` (bit/s) sets the top layer's ceiling.
   * `dataChannels` adds data channels to the publication
   * (`stream` may then be null): each `{label, ordered?, maxRetransmits?, maxPacketLifeTime?,
   * protocol?}` as for `RTCPeerConnection.createDataChannel`; what is sent on one (`sendData`,
   * or the RTCDataChannel from `dataChannel`) reaches every subscriber of the publication, on a
   * channel of the same label (`data` events).
   * @param {MediaStream | null} stream
   * @param {{ videoCodec?: string, simulcast?: boolean, scalabilityMode?: string, maxBitrate?: number, dataChannels?: DataChannelOptions[] }} options
   * @returns {Promise<string>} the publication id
   */
  async publish(stream, options = {}) {
    stream ??= new MediaStream(); // a publication of data channels only
    const { videoCodec, simulcast = true, maxBitrate } = options;
    const pc = this.#newPeerConnection();
    for (const track of stream.getTracks()) {
      const codec = (videoCodec ?? 'VP8').toUpperCase();
      const layered = track.kind === 'video' && simulcast;
      const init = { direction: 'sendonly', streams: [stream] };
      if (layered && SIMULCAST_CODECS.includes(codec)) init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
      const svcMode = options.scalabilityMode ?? SVC_MODES[codec];
      if (layered && SVC_MODES[codec]) init.sendEncodings = [{ scalabilityMode: svcMode }];
      // `maxBitrate` (bit/s) raises or lowers the top layer's (or the one stream's) ceiling.
      if (track.kind === 'video' && maxBitrate) {
        init.sendEncodings ??= [{}];
        init.sendEncodings[init.sendEncodings.length - 1].maxBitrate = maxBitrate;
      }
      const transceiver = pc.addTransceiver(track, init);
      if (track.kind === 'video' && videoCodec) preferCodec(transceiver, `video/${videoCodec}`);
    }
    const channels = createDataChannels(pc, options.dataChannels);
    try {
      const reply = await this.#offer(pc, { type: 'publish' });
      this.#publications.set(reply.publication, { pc, stream, options });
      this.#dataChannels.set(reply.publication, channels);
      pc.addEventListener('connectionstatechange', () => {
        if (pc.connectionState !== 'failed' || this.#publications.get(reply.publication)?.pc !== pc) return;
        this.#send({ type: 'unpublish', publication: reply.publication });
        this.#republish(reply.publication);
      });
      return reply.publication;
    } catch (err) {
      pc.close();
      throw err;
    }
  }

  /**
   * Joins the channel's mix (an MCU connection): `stream`'s audio and video go to the server's
   * mixer, and the returned stream is what it makes for us: everyone's audio but ours, and one
   * composite picture of everyone's video. It is one peer connection whatever the number of
   * participants, for weak devices and large meetings. What we send is also published, so SFU
   * participants of the channel see us as usual. `videoCodec` ('VP8' | 'H264') chooses the
   * codec of both directions. Create the client with `autoSubscribe: false` to receive only
   * the mix.
   * @param {MediaStream} stream
   * @param {{ videoCodec?: string }} options
   * @returns {Promise<MediaStream>} the mix
   */
  async mix(stream, options = {}) {
    if (this.#mix) throw new Error('already mixing; unmix first');
    const pc = this.#newPeerConnection();
    const mixed = new MediaStream();
    for (const kind of ['audio', 'video']) {
      const track = stream.getTracks().find((t) => t.kind === kind);
      const transceiver = pc.addTransceiver(track ?? kind, { direction: 'sendrecv', streams: [stream] });
      if (kind === 'video' && options.videoCodec) preferCodec(transceiver, `video/${options.videoCodec}`);
    }
    pc.ontrack = (e) => mixed.addTrack(e.track);
    try {
      const reply = await this.#offer(pc, { type: 'mix' });
      this.#mix = { id: reply.mix, pc };
      return mixed;
    } catch (err) {
      pc.close();
      throw err;
    }
  }

  /** Leaves the mix (see `mix`). */
  unmix() {
    if (!this.#mix) return;
    this.#send({ type: 'unmix', mix: this.#mix.id });
    this.#mix.pc.close();
    this.#mix = undefined;
  }

  /**
   * Says what this client wants of its subscription to `publication`: `maxHeight` (pixels)
   * caps the simulcast layer (VP8, H264) or the SVC spatial layers (VP9, AV1) the server forwards;
   * `maxFrameRate` (frames per second) caps the SVC temporal layers (VP9, AV1; simulcast streams
   * are not capped yet); `paused` stops its media until resumed.
   * Each call replaces the previous preferences; they last as long as the subscription. It may
   * be called from the subscription's `track` event, before the server has confirmed it: the
   * preferences are sent once it has.
   * @param {string} publication @param {Preferences} preferences
   */
  setPreferences(publication, preferences) {
    const s = this.#subscriptions.get(publication);
    if (!s) throw new Error(`not subscribed to ${publication}`);
    if (this.#ws?.readyState !== WebSocket.OPEN) throw new Error('not connected');
    s.preferences = preferences;
    if (s.id) this.#sendPreferences(s);
  }

  #sendPreferences(s) {
    const { maxHeight, maxFrameRate, paused = false } = s.preferences;
    this.#ws?.send(JSON.stringify({ type: 'preferences', subscription: s.id, maxHeight, maxFrameRate, paused }));
  }

  /** Receives a remote publication (done for every one when `autoSubscribe`). */
  async subscribe(publication) {
    const info = this.#remote.get(publication);
    if (!info) throw new Error(`unknown publication ${publication}`);
    if (this.#subscriptions.has(publication)) return;
    const pc = this.#newPeerConnection();
    const entry = { id: undefined, participant: info.participant, pc, preferences: undefined };
    this.#subscriptions.set(publication, entry);
    for (const t of info.tracks) {
      if (t.kind === 'audio' || t.kind === 'video') pc.addTransceiver(t.kind, { direction: 'recvonly' });
    }
    pc.ontrack = (e) => {
      const stream = e.streams[0] ?? new MediaStream([e.track]);
      this.#emit('track', { participant: info.participant, publication, track: e.track, stream });
    };
    if (info.tracks.some((t) => t.kind === 'data')) {
      // The offer needs an m=application line; a pre-negotiated channel puts one there without
      // opening anything. The server opens the publisher's channels toward us (odd stream ids).
      pc.createDataChannel('switchyard', { negotiated: true, id: 0 });
      pc.ondatachannel = (e) => this.#receiveChannel(info.participant, publication, e.channel);
    }
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState !== 'failed' || this.#subscriptions.get(publication) !== entry) return;
      if (entry.id) this.#send({ type: 'unsubscribe', subscription: entry.id });
      pc.close();
      this.#subscriptions.delete(publication);
      this.subscribe(publication).catch((e) => this.#emit('error', { reason: `subscribing again to ${publication}: ${e.message}` }));
    });
    try {
      const reply = await this.#offer(pc, { type: 'subscribe', publication });
      entry.id = reply.subscription;
      if (entry.preferences) this.#sendPreferences(entry);
    } catch (err) {
      pc.close();
      this.#subscriptions.delete(publication);
      throw err;
    }
  }

  /**
   * Presses `digits` (0-9, *, #, A-D) on the channel's phone calls (SIP callers), or on the one
   * that is participant `to`: they hear them as RFC 4733 telephone-events. A phone's own key
   * presses arrive as `dtmf` events ({ from, digit }).
   * @param {string} digits @param {string} [to]
   */
  sendDtmf(digits, to) {
    if (this.participant === undefined) throw new Error('join a channel first');
    this.#send(to === undefined ? { type: 'dtmf', digits } : { type: 'dtmf', digits, to });
  }

  /**
   * Dials `number` (1 to 32 of 0-9, +, *, #) through a SIP trunk: the callee joins this
   * channel, as participant `sip:<number>`, once it answers. Only with a token that allows
   * dialling in this channel (`switchyard token --dial`). `trunk` names the trunk (else the
   * first that may carry calls out), `callerId` the number the callee sees (else the trunk's).
   * Resolves with the call's id as soon as it is placed, not answered; rejects when refused.
   * @param {string} number @param {{trunk?: string, callerId?: string}} [options]
   * @returns {Promise<string>}
   */
  async dial(number, { trunk, callerId } = {}) {
    if (this.participant === undefined) throw new Error('join a channel first');
    const reply = await this.#request({ type: 'dial', number, trunk, callerId });
    return reply.call;
  }

  /**
   * Opens a direct connection to another participant of the channel, sending `stream`'s tracks
   * (if any) and receiving theirs (`track` events on the returned Peer). The other side's SDK
   * answers by itself and tells its application with a `peer` event. Calling it again for the
   * same participant returns the same Peer while it is open.
   * @param {string} participant
   * @param {{ stream?: MediaStream }} options
   * @returns {Peer}
   */
  connectPeer(participant, { stream } = {}) {
    if (this.participant === undefined) throw new Error('join a channel first');
    if (participant === this.participant) throw new Error('cannot connect to yourself');
    const existing = this.#peers.get(participant);
    if (existing) return existing;
    const peer = this.#newPeer(participant, false);
    if (stream) peer.addStream(stream);
    peer.start();
    return peer;
  }

  /** The ICE servers every connection uses (from `joined`; empty before it). @returns {IceServer[]} */
  get iceServers() {
    return this.#iceServers;
  }

  /** Every open peer-to-peer connection. @returns {Peer[]} */
  peers() {
    return [...this.#peers.values()];
  }

  /**
   * Sends `data` (any JSON) to another participant of the channel through the server; it gets
   * a `signal` event. The SDK's own peer-to-peer signals use it too; they are told apart by a
   * `p2p` field, so the application's data must not have one.
   */
  signal(to, data) {
    if (this.#ws?.readyState !== WebSocket.OPEN) throw new Error('not connected');
    // The id names the target so that a refusal (it left, rate limited...) finds its Peer.
    this.#ws.send(JSON.stringify({ type: 'signal', id: `signal:${to}`, to, data }));
  }

  /**
   * Sends `data` (a string, ArrayBuffer, Blob or typed array) on our publication's data
   * channel `label`. Throws while the channel is not open.
   */
  sendData(publication, label, data) {
    const channel = this.dataChannel(publication, label);
    if (!channel) throw new Error(`publication ${publication} has no data channel ${label}`);
    channel.send(data);
  }

  /** Our publication's RTCDataChannel labelled `label` (to wait for `open`, watch `bufferedAmount`). */
  dataChannel(publication, label) {
    if (!this.#publications.has(publication)) return undefined;
    return this.#dataChannels.get(publication)?.get(label);
  }

  /**
   * Sends a channel message through the server: `data` (any JSON, at most 16 KiB as JSON) goes
   * to participant `to`, or to everyone else in the channel when `to` is left out. They get a
   * `message` event {from, data}.
   */
  sendMessage(data, to) {
    if (this.#ws?.readyState !== WebSocket.OPEN) throw new Error('not connected');
    this.#ws.send(JSON.stringify({ type: 'message', ...(to === undefined ? {} : { to }), data }));
  }

  /** Leaves the channel and closes every connection. */
  async leave() {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify({ type: 'leave' }));
    this.#leaving = true;
    for (const p of this.#publications.values()) p.pc.close();
    for (const s of this.#subscriptions.values()) s.pc.close();
    this.#mix?.pc.close();
    this.#mix = undefined;
    // The others hear that we left; no need to tell each peer.
    for (const p of [...this.#peers.values()]) p.close(false);
    this.#publications.clear();
    this.#dataChannels.clear();
    this.#subscriptions.clear();
    this.#peers.clear();
    this.#ws?.close();
  }

  /** Every peer connection, for diagnostics. */
  connections() {
    return [
      ...[...this.#publications].map(([id, p]) => ({ kind: 'publish', id, pc: p.pc })),
      ...[...this.#subscriptions].map(([publication, s]) => ({ kind: 'subscribe', id: s.id, publication, pc: s.pc })),
      ...[...this.#peers].map(([participant, p]) => ({ kind: 'peer', id: participant, pc: p.pc })),
      ...(this.#mix ? [{ kind: 'mix', id: this.#mix.id, pc: this.#mix.pc }] : []),
    ];
  }

  /** What arrives from each remote publication. @returns {Promise<RemoteStats[]>} */
  async getRemoteStats() {
    const out = [];
    for (const [publication, s] of this.#subscriptions) {
      const report = await s.pc.getStats();
      out.push(...inboundStats(report, { participant: s.participant, publication }));
    }
    return out;
  }

  /** What arrives on each peer-to-peer connection. @returns {Promise<PeerStats[]>} */
  async getPeerStats() {
    const out = [];
    for (const [participant, peer] of this.#peers) {
      const report = await peer.pc.getStats();
      let pair;
      report.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
      });
      const localCandidate = pair ? report.get(pair.localCandidateId)?.candidateType : undefined;
      const remoteCandidate = pair ? report.get(pair.remoteCandidateId)?.candidateType : undefined;
      out.push(...inboundStats(report, { participant, localCandidate, remoteCandidate }));
    }
    return out;
  }

  async #offer(pc, message) {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await gathered(pc);
    const reply = await this.#request({ ...message, offer: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.answer });
    return reply;
  }

  /** Sends a message that has no reply, if connected (else the server has forgotten it anyway). */
  #send(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(message));
  }

  #request(message) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (this.#ws?.readyState !== WebSocket.OPEN) return reject(new Error('not connected'));
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ ...message, id }));
    });
  }

  #onMessage(m) {
    const pending = m.id !== undefined ? this.#pending.get(m.id) : undefined;
    if (pending) this.#pending.delete(m.id);
    switch (m.type) {
      case 'answer':
      case 'dialing':
        pending?.resolve(m);
        break;
      case 'error': {
        if (pending) {
          pending.reject(new Error(m.reason));
          break;
        }
        const to = typeof m.id === 'string' && m.id.startsWith('signal:') ? m.id.slice('signal:'.length) : undefined;
        const peer = to === undefined ? undefined : this.#peers.get(to);
        if (peer) peer.dispatchEvent(new CustomEvent('error', { detail: { reason: m.reason } }));
        this.#emit('error', { reason: to === undefined ? m.reason : `signal to ${to}: ${m.reason}` });
        break;
      }
      case 'signal':
        this.#onSignal(m.from, m.data);
        break;
      case 'message':
        this.#emit('message', { from: m.from, data: m.data });
        break;
      case 'dtmf':
        this.#emit('dtmf', { from: m.from, digit: m.digit });
        break;
      case 'resubscribe': {
        // The server carrying this subscription is gone; the publication is not.
        const s = this.#subscriptions.get(m.publication);
        if (s) {
          s.pc.close();
          this.#subscriptions.delete(m.publication);
        }
        if (this.#remote.has(m.publication)) {
          this.subscribe(m.publication).catch((e) => this.#emit('error', { reason: `resubscribe ${m.publication}: ${e.message}` }));
        }
        break;
      }
      case 'kicked':
        this.#emit('kicked', { reason: m.reason });
        break;
      case 'participant-joined':
        this.#emit('participant-joined', { participant: m.participant, user: m.user });
        break;
      case 'participant-left':
        this.#peers.get(m.participant)?.close(false);
        this.#emit('participant-left', { participant: m.participant });
        break;
      case 'published':
        this.#published(m.participant, m.publication, m.tracks);
        break;
      case 'speaking':
        this.#emit('speaking', { participant: m.participant, publication: m.publication, speaking: m.speaking });
        break;
      case 'layers':
        this.#setLayers(m.publication, m.active).catch((e) => this.#emit('error', { reason: `layers ${m.publication}: ${e.message}` }));
        break;
      case 'dominant-speaker':
        this.#emit('dominant-speaker', { participant: m.participant ?? null, publication: m.publication ?? null });
        break;
      case 'unpublished': {
        if (m.participant === this.participant) {
          this.#republish(m.publication);
          break;
        }
        this.#remote.delete(m.publication);
        const s = this.#subscriptions.get(m.publication);
        if (s) {
          s.pc.close();
          this.#subscriptions.delete(m.publication);
        }
        this.#emit('track-ended', { participant: m.participant, publication: m.publication });
        break;
      }
    }
  }

  /** Publishes a lost publication's stream again, retrying with back-off for about 30 s. */
  async #republish(previous) {
    const lost = this.#publications.get(previous);
    if (!lost) return;
    this.#publications.delete(previous);
    this.#dataChannels.delete(previous);
    lost.pc.close();
    for (let attempt = 0, wait = 250; attempt < 10 && !this.#leaving; attempt++, wait = Math.min(wait * 2, 5000)) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, wait));
      try {
        const publication = await this.publish(lost.stream, lost.options);
        this.#emit('republished', { previous, publication });
        return;
      } catch (e) {
        this.#emit('error', { reason: `republishing ${previous}: ${e.message}` });
      }
    }
  }

  /** A signal from another participant: for one of our peers, a new peer, or the application. */
  #onSignal(from, data) {
    if (typeof from !== 'string') return;
    if (data === null || typeof data !== 'object' || typeof data.p2p !== 'string') {
      this.#emit('signal', { from, data });
      return;
    }
    let peer = this.#peers.get(from);
    if (!peer) {
      // Only these start a connection; anything else is left over from one that is closed.
      if (data.p2p !== 'connect' && data.p2p !== 'offer') return;
      peer = this.#newPeer(from, true);
    }
    peer[receive](data);
  }

  /** Makes a Peer and announces it (a `peer` listener may add media before it starts). */
  #newPeer(participant, incoming) {
    const peer = new Peer({
      participant,
      // Both sides compare the same two ids, so exactly one of them offers.
      offerer: this.participant < participant,
      incoming,
      config: this.#rtcConfiguration(),
      send: (data) => {
        try {
          this.signal(participant, data);
        } catch (e) {
          peer.dispatchEvent(new CustomEvent('error', { detail: { reason: e.message } }));
        }
      },
    });
    this.#peers.set(participant, peer);
    peer.addEventListener('closed', () => {
      if (this.#peers.get(participant) === peer) this.#peers.delete(participant);
    });
    this.#emit('peer', { participant, peer, incoming });
    return peer;
  }

  #rtcConfiguration() {
    return {
      iceServers: this.#iceServers,
      iceTransportPolicy: this.#iceTransportPolicy,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    };
  }

  #newPeerConnection() {
    return new RTCPeerConnection(this.#rtcConfiguration());
  }

  #published(participant, publication, tracks) {
    this.#remote.set(publication, { participant, tracks });
    if (this.#autoSubscribe) {
      this.subscribe(publication).catch((e) => this.#emit('error', { reason: `subscribe ${publication}: ${e.message}` }));
    }
  }

  /** A data channel the server opened on a subscription: its messages become `data` events. */
  #receiveChannel(participant, publication, channel) {
    channel.binaryType = 'arraybuffer';
    const label = channel.label;
    this.#emit('datachannel', { participant, publication, label, channel });
    channel.onmessage = (e) => this.#emit('data', { participant, publication, label, data: e.data });
  }

  /**
   * Turns our simulcast layers on and off as the server says someone watches them (`active`,
   * lowest first): an unwatched layer costs the uplink and the CPU for nothing.
   */
  async #setLayers(publication, active) {
    const p = this.#publications.get(publication);
    const sender = p?.pc.getSenders().find((s) => s.track?.kind === 'video');
    if (!sender) return;
    const params = sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    params.encodings.forEach((e, i) => {
      e.active = active[i] ?? true;
    });
    await sender.setParameters(params);
    this.#emit('layers', { publication, active });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The publication's data channels (`DataChannelOptions[]`) on `pc`, by label. */
function createDataChannels(pc, options = []) {
  const channels = new Map();
  for (const { label, ...init } of options) {
    const channel = pc.createDataChannel(label, init);
    channel.binaryType = 'arraybuffer';
    channels.set(label, channel);
  }
  return channels;
}

/** Puts only `mimeType` in the transceiver's codec list (the server answers with the first). */
function preferCodec(transceiver, mimeType) {
  const wanted = mimeType.toLowerCase();
  for (const caps of [RTCRtpReceiver.getCapabilities('video'), RTCRtpSender.getCapabilities('video')]) {
    const codecs = (caps?.codecs ?? []).filter((c) => c.mimeType.toLowerCase() === wanted);
    if (codecs.length === 0) continue;
    try {
      transceiver.setCodecPreferences(codecs);
      return;
    } catch {
      // Some browsers accept only the other capability list; try it.
    }
  }
  throw new Error(`this browser cannot send ${mimeType}`);
}

/** Resolves when ICE gathering completes, or after GATHER_TIMEOUT_MS. */
function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') {
        pc.removeEventListener('icegatheringstatechange', done);
        resolve();
      }
    };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}
