// A direct (peer-to-peer) connection between two participants of a channel, negotiated through
// the server's `signal` relay (docs/signalling.md). Media goes from browser to browser (or
// through a TURN server) and never reaches a media server.
//
// No glare is possible: of the two participants, the one whose id sorts first always makes the
// offer; the other asks it to (`connect`) and answers. Media is fixed when the connection
// starts (no renegotiation): to send something else, close and connect again.

/**
 * What travels in a signal's `data` between two SDKs. Signals whose data has no `p2p` field are
 * the application's own; the client hands them on as `signal` events.
 * @typedef {{ p2p: 'connect' } | { p2p: 'offer' | 'answer', sdp: string }
 *   | { p2p: 'candidate', candidate: RTCIceCandidateInit } | { p2p: 'close' }} PeerSignal
 */

/** The Client hands a peer its signals through this; not part of the public API. */
export const receive = Symbol('receive');

/**
 * One peer-to-peer connection, made by `Client.connectPeer` or, when the other participant
 * starts it, announced by the client's `peer` event.
 *
 * Events (CustomEvent, data in `detail`): `track` {participant, track, stream},
 * `state` {state} (the RTCPeerConnection's connectionState), `error` {reason}, `closed` {}.
 */
export class Peer extends EventTarget {
  /** @type {string} the other participant */ participant;
  /** @type {RTCPeerConnection} */ pc;
  /** @type {boolean} whether the other participant started it */ incoming;
  /** @type {boolean} whether this side makes the offer */ offerer;
  #send;
  /** @type {{track: MediaStreamTrack, stream: MediaStream}[]} what to send */ #local = [];
  /** Remote candidates that came before the remote description. */ #early = [];
  #started = false;
  #closed = false;
  /** Signals are handled one at a time, in order: each waits for the one before. */
  #work = Promise.resolve();

  /**
   * @param {{ participant: string, offerer: boolean, incoming: boolean, config: RTCConfiguration,
   *           send: (data: PeerSignal) => void }} options
   */
  constructor({ participant, offerer, incoming, config, send }) {
    super();
    this.participant = participant;
    this.offerer = offerer;
    this.incoming = incoming;
    this.#send = send;
    this.pc = new RTCPeerConnection(config);
    this.pc.onicecandidate = (e) => {
      // Trickle: each candidate goes as soon as it is found. The end of gathering (null) needs
      // no message: the other side simply stops receiving candidates.
      if (e.candidate && !this.#closed) this.#send({ p2p: 'candidate', candidate: e.candidate.toJSON() });
    };
    this.pc.ontrack = (e) => {
      const stream = e.streams[0] ?? new MediaStream([e.track]);
      this.#emit('track', { participant, track: e.track, stream });
    };
    this.pc.onconnectionstatechange = () => this.#emit('state', { state: this.pc.connectionState });
  }

  /** Sends the stream's tracks on this connection; only before it starts (see the class). */
  addStream(stream) {
    if (this.#started) throw new Error('media must be added before the peer connection starts');
    for (const track of stream.getTracks()) this.#local.push({ track, stream });
  }

  /** Starts the connection from this side: the offerer offers, the other asks it to. */
  start() {
    if (this.#started || this.#closed) return;
    this.#started = true;
    if (this.offerer) this.#queue(() => this.#offer());
    else this.#send({ p2p: 'connect' });
  }

  /** Closes the connection; `tell` (default) lets the other participant know. */
  close(tell = true) {
    if (this.#closed) return;
    this.#closed = true;
    this.pc.close();
    if (tell) this.#send({ p2p: 'close' });
    this.#emit('closed', {});
  }

  /** A signal from the other participant. @param {PeerSignal} data */
  [receive](data) {
    switch (data.p2p) {
      case 'connect':
        // Asked to offer: only the offerer does, once.
        if (this.offerer) this.start();
        break;
      case 'offer':
        if (typeof data.sdp !== 'string' || this.offerer) return this.#fail(`unexpected offer from ${this.participant}`);
        this.#started = true;
        this.#queue(() => this.#answer(data.sdp));
        break;
      case 'answer':
        if (typeof data.sdp !== 'string' || !this.offerer) return this.#fail(`unexpected answer from ${this.participant}`);
        this.#queue(async () => {
          await this.pc.setRemoteDescription({ type: 'answer', sdp: data.sdp });
          await this.#addEarlyCandidates();
        });
        break;
      case 'candidate':
        if (typeof data.candidate !== 'object' || data.candidate === null) return this.#fail(`bad candidate from ${this.participant}`);
        this.#queue(async () => {
          if (this.pc.remoteDescription) await this.pc.addIceCandidate(data.candidate);
          else this.#early.push(data.candidate);
        });
        break;
      case 'close':
        this.close(false);
        break;
      default:
        this.#fail(`unknown peer signal ${JSON.stringify(data.p2p)} from ${this.participant}`);
    }
  }

  async #offer() {
    for (const { track, stream } of this.#local) {
      this.pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
    }
    // An m-line of each kind even without a track of ours, so that the answerer can send its
    // audio and video whatever we send.
    for (const kind of ['audio', 'video']) {
      if (!this.pc.getTransceivers().some((t) => t.receiver.track.kind === kind)) {
        this.pc.addTransceiver(kind, { direction: 'sendrecv' });
      }
    }
    await this.pc.setLocalDescription(await this.pc.createOffer());
    this.#send({ p2p: 'offer', sdp: this.pc.localDescription.sdp });
  }

  async #answer(sdp) {
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    // Our tracks go on the offered m-lines of their kind (one each); there is no renegotiation
    // to add more.
    const free = this.pc.getTransceivers().filter((t) => !t.sender.track);
    for (const { track, stream } of this.#local) {
      const i = free.findIndex((t) => t.receiver.track.kind === track.kind);
      if (i < 0) {
        this.#fail(`the offer from ${this.participant} has no room for our ${track.kind} track`);
        continue;
      }
      const [t] = free.splice(i, 1);
      await t.sender.replaceTrack(track);
      t.sender.setStreams?.(stream);
      t.direction = 'sendrecv';
    }
    await this.#addEarlyCandidates();
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    this.#send({ p2p: 'answer', sdp: this.pc.localDescription.sdp });
  }

  async #addEarlyCandidates() {
    for (const c of this.#early.splice(0)) await this.pc.addIceCandidate(c);
  }

  #queue(step) {
    this.#work = this.#work.then(() => (this.#closed ? undefined : step())).catch((e) => this.#fail(e?.message ?? String(e)));
  }

  #fail(reason) {
    this.#emit('error', { reason });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
