// Switchyard browser SDK: join a channel, publish a MediaStream, receive everyone else's.
//
// Each publication is its own RTCPeerConnection (sendonly), and each subscription to a remote
// publication is another (recvonly): the server is always the answerer, so no renegotiation is
// ever needed. Signalling is JSON over a WebSocket at /sync (docs/signalling.md).

/**
 * @typedef {{ kind: 'audio' | 'video', codec: string }} TrackInfo
 * @typedef {{ publication: string, tracks: TrackInfo[] }} PublicationInfo
 * @typedef {{ participant: string, user: string, publications: PublicationInfo[] }} ParticipantInfo
 * @typedef {{ participant: string, channel: string, participants: ParticipantInfo[] }} JoinResult
 * @typedef {{ participant: string, publication: string, kind: string, codec: string | undefined,
 *             framesDecoded: number, packetsReceived: number, bytesReceived: number }} RemoteStats
 */

/** How long to wait for ICE gathering before sending an offer anyway. */
const GATHER_TIMEOUT_MS = 2000;

/**
 * A client in one channel.
 *
 * Events (CustomEvent, data in `detail`): `participant-joined` {participant, user},
 * `participant-left` {participant}, `track` {participant, publication, track, stream},
 * `track-ended` {participant, publication}, `republished` {previous, publication}, `kicked` {reason},
 * `disconnected` {reason}, `error` {reason}.
 *
 * When the server reports one of our own publications unpublished (its media server stopped or
 * ended it), the client publishes the same stream again, on whichever server the gateway picks,
 * retrying for a while; subscribers then see the new publication like any other.
 */
export class Client extends EventTarget {
  /** @type {WebSocket | undefined} */ #ws;
  #url;
  #token;
  #channel;
  #autoSubscribe;
  #region;
  #nextId = 1;
  #leaving = false;
  /** @type {Map<number, {resolve: (m: any) => void, reject: (e: Error) => void}>} */ #pending = new Map();
  /** @type {Map<string, {pc: RTCPeerConnection, stream: MediaStream, options: object}>} our publications */
  #publications = new Map();
  /** @type {Map<string, {participant: string, tracks: TrackInfo[]}>} remote publications */
  #remote = new Map();
  /** @type {Map<string, {id: string | undefined, participant: string, pc: RTCPeerConnection}>} by publication */
  #subscriptions = new Map();
  /** @type {string | undefined} */ participant;
  /** @type {string | undefined} */ channel;

  /**
   * @param {{ url?: string, token: string, channel?: string, autoSubscribe?: boolean, region?: string }} options
   *   `url` defaults to ws(s)://<this page's host>/sync; `channel` may be left out when the
   *   token grants one channel; `region` asks a cluster for a media server in that region.
   */
  constructor({ url, token, channel, autoSubscribe = true, region }) {
    super();
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.#url = url ?? `${scheme}//${location.host}/sync`;
    this.#token = token;
    this.#channel = channel;
    this.#autoSubscribe = autoSubscribe;
    this.#region = region;
  }

  /** Connects and joins the channel. @returns {Promise<JoinResult>} */
  join() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.#url);
      this.#ws = ws;
      let joined = false;
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', token: this.#token, channel: this.#channel, region: this.#region }));
      ws.onmessage = (e) => {
        let m;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        if (m.type === 'joined') {
          joined = true;
          this.participant = m.participant;
          this.channel = m.channel;
          for (const p of m.participants) {
            for (const pub of p.publications) this.#published(p.participant, pub.publication, pub.tracks);
          }
          resolve(m);
        } else if (m.type === 'error' && !joined) {
          reject(new Error(m.reason));
        } else {
          this.#onMessage(m);
        }
      };
      ws.onclose = (e) => {
        const reason = e.reason || `connection closed (${e.code})`;
        if (!joined) reject(new Error(reason));
        for (const { reject: r } of this.#pending.values()) r(new Error(reason));
        this.#pending.clear();
        this.#emit('disconnected', { reason });
      };
    });
  }

  /**
   * Publishes the stream's tracks; `videoCodec` ('VP8' | 'H264' | 'VP9' | 'AV1') forces that
   * codec. @returns {Promise<string>} the publication id
   */
  async publish(stream, options = {}) {
    const { videoCodec } = options;
    const pc = newPeerConnection();
    for (const track of stream.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (track.kind === 'video' && videoCodec) preferCodec(transceiver, `video/${videoCodec}`);
    }
    try {
      const reply = await this.#offer(pc, { type: 'publish' });
      this.#publications.set(reply.publication, { pc, stream, options });
      return reply.publication;
    } catch (err) {
      pc.close();
      throw err;
    }
  }

  /** Receives a remote publication (done for every one when `autoSubscribe`). */
  async subscribe(publication) {
    const info = this.#remote.get(publication);
    if (!info) throw new Error(`unknown publication ${publication}`);
    if (this.#subscriptions.has(publication)) return;
    const pc = newPeerConnection();
    const entry = { id: undefined, participant: info.participant, pc };
    this.#subscriptions.set(publication, entry);
    for (const t of info.tracks) pc.addTransceiver(t.kind, { direction: 'recvonly' });
    pc.ontrack = (e) => {
      const stream = e.streams[0] ?? new MediaStream([e.track]);
      this.#emit('track', { participant: info.participant, publication, track: e.track, stream });
    };
    try {
      const reply = await this.#offer(pc, { type: 'subscribe', publication });
      entry.id = reply.subscription;
    } catch (err) {
      pc.close();
      this.#subscriptions.delete(publication);
      throw err;
    }
  }

  /** Leaves the channel and closes every connection. */
  async leave() {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify({ type: 'leave' }));
    this.#leaving = true;
    for (const p of this.#publications.values()) p.pc.close();
    for (const s of this.#subscriptions.values()) s.pc.close();
    this.#publications.clear();
    this.#subscriptions.clear();
    this.#ws?.close();
  }

  /** Every peer connection, for diagnostics. */
  connections() {
    return [
      ...[...this.#publications].map(([id, p]) => ({ kind: 'publish', id, pc: p.pc })),
      ...[...this.#subscriptions].map(([publication, s]) => ({ kind: 'subscribe', id: s.id, publication, pc: s.pc })),
    ];
  }

  /** What arrives from each remote publication. @returns {Promise<RemoteStats[]>} */
  async getRemoteStats() {
    const out = [];
    for (const [publication, s] of this.#subscriptions) {
      const report = await s.pc.getStats();
      report.forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        out.push({
          participant: s.participant,
          publication,
          kind: r.kind,
          codec: r.codecId ? report.get(r.codecId)?.mimeType : undefined,
          framesDecoded: r.framesDecoded ?? 0,
          packetsReceived: r.packetsReceived ?? 0,
          bytesReceived: r.bytesReceived ?? 0,
        });
      });
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
        pending?.resolve(m);
        break;
      case 'error':
        if (pending) pending.reject(new Error(m.reason));
        else this.#emit('error', { reason: m.reason });
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
        this.#emit('participant-left', { participant: m.participant });
        break;
      case 'published':
        this.#published(m.participant, m.publication, m.tracks);
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

  #published(participant, publication, tracks) {
    this.#remote.set(publication, { participant, tracks });
    if (this.#autoSubscribe) {
      this.subscribe(publication).catch((e) => this.#emit('error', { reason: `subscribe ${publication}: ${e.message}` }));
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function newPeerConnection() {
  return new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
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
