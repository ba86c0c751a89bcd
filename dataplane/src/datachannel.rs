//! WebRTC data channels for one transport: an SCTP association over the transport's DTLS
//! session (RFC 8831), with the channel-opening protocol DCEP (RFC 8832) on top.
//!
//! SCTP itself is `sctp-proto`, a sans-IO state machine like ours: we feed it the plaintext
//! of DTLS application-data records with `now`, and take back SCTP packets (for DTLS to
//! encrypt), timer deadlines and stream events. This module adds what WebRTC puts on SCTP:
//!
//! - DCEP: a channel is opened by a `DATA_CHANNEL_OPEN` message on a fresh stream (label,
//!   protocol, ordered or not, partial reliability) and acknowledged with `DATA_CHANNEL_ACK`
//!   (RFC 8832 §5). The DTLS client opens even stream ids, the DTLS server odd ones (§6); we
//!   are the server for browsers, so the channels we open toward a subscriber are odd.
//! - the payload protocol identifiers of RFC 8831 §8: 51 string, 53 binary, 56/57 for empty
//!   messages (which carry one dummy byte on the wire, §6.6), 50 for DCEP.
//! - message sizes: we accept up to [`MAX_MESSAGE_SIZE`] (our SDP `a=max-message-size`,
//!   RFC 8841 §6) and send up to what the peer announced; sctp-proto reassembles fragments.
//!
//! Nothing here reads a clock or touches a socket; every input from the network is checked
//! and a bad one is counted ([`DataChannels::malformed`]), never a panic.
//!
//! sctp-proto draws its verification tags and initial TSNs from its own random source (as
//! RFC 9260 §5.3.1 wants them unpredictable); it is the one randomness an engine does not seed.
//! It takes packets as `Bytes`, so each SCTP packet is copied once on the way in; data
//! channels are not the RTP path.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig,
    Event as SctpEvent, Payload, PayloadProtocolIdentifier as Ppid, ReliabilityType, ServerConfig,
    StreamEvent, TransportConfig,
};

/// The largest message we accept, announced as `a=max-message-size` in our answers. 256 KiB
/// is what Chromium announces too.
pub const MAX_MESSAGE_SIZE: u32 = 262_144;
/// What a peer that announces no `a=max-message-size` accepts (RFC 8841 §6.1).
pub const DEFAULT_REMOTE_MAX_MESSAGE_SIZE: u32 = 65_536;
/// The SCTP port of both ends (`a=sctp-port`, RFC 8841 §5); browsers use 5000.
pub const SCTP_PORT: u16 = 5000;
/// The largest SCTP packet we produce: it goes into one DTLS record (13 bytes of header and up
/// to 29 of AEAD nonce, tag and padding) in one datagram under our DTLS MTU of 1200.
const SCTP_MTU: u32 = 1150;
/// SCTP common header (12) and DATA chunk header (16): the packet size minus these is the
/// largest user-data fragment.
const SCTP_OVERHEAD: u32 = 28;
/// Outgoing bytes we let queue on one stream before refusing more ([`Error::Full`]): a
/// subscriber that cannot keep up loses messages rather than growing the server.
pub const MAX_BUFFERED: usize = 1024 * 1024;
/// Channels per association; more are refused (a browser's limit is 65534 streams, far more
/// than any application uses through an SFU).
const MAX_CHANNELS: usize = 1024;

/// RFC 8832 §5.1 message types.
const DCEP_OPEN: u8 = 0x03;
const DCEP_ACK: u8 = 0x02;
/// RFC 8832 §5.1 channel types: the high bit says unordered, the low bits the reliability.
const CHANNEL_UNORDERED: u8 = 0x80;
const CHANNEL_REXMIT: u8 = 0x01;
const CHANNEL_TIMED: u8 = 0x02;

/// How a channel retransmits (RFC 8831 §6.1, the partial reliability of RFC 3758).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reliability {
    /// Every message is delivered (`maxRetransmits` and `maxPacketLifeTime` unset).
    #[default]
    Reliable,
    /// Each message is retransmitted at most this many times (`maxRetransmits`).
    MaxRetransmits(u32),
    /// Each message is retransmitted for at most this many milliseconds (`maxPacketLifeTime`).
    MaxLifetimeMs(u32),
}

/// What a channel is, as DCEP carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelParams {
    pub label: String,
    pub protocol: String,
    pub ordered: bool,
    pub reliability: Reliability,
    /// RFC 8832 §5.1 priority (256 is the browsers' "low", their default).
    pub priority: u16,
}

impl ChannelParams {
    /// An ordered, reliable channel named `label`.
    pub fn reliable(label: &str) -> ChannelParams {
        ChannelParams {
            label: label.to_string(),
            protocol: String::new(),
            ordered: true,
            reliability: Reliability::Reliable,
            priority: 256,
        }
    }

    /// The DATA_CHANNEL_OPEN message (RFC 8832 §5.1); `None` if the label or protocol is
    /// longer than the 16-bit length fields allow.
    fn encode_open(&self) -> Option<Vec<u8>> {
        let label_len = u16::try_from(self.label.len()).ok()?;
        let protocol_len = u16::try_from(self.protocol.len()).ok()?;
        let (kind, value) = match self.reliability {
            Reliability::Reliable => (0, 0),
            Reliability::MaxRetransmits(n) => (CHANNEL_REXMIT, n),
            Reliability::MaxLifetimeMs(ms) => (CHANNEL_TIMED, ms),
        };
        let kind = if self.ordered {
            kind
        } else {
            kind | CHANNEL_UNORDERED
        };
        let mut m = Vec::with_capacity(12 + self.label.len() + self.protocol.len());
        m.push(DCEP_OPEN);
        m.push(kind);
        m.extend_from_slice(&self.priority.to_be_bytes());
        m.extend_from_slice(&value.to_be_bytes());
        m.extend_from_slice(&label_len.to_be_bytes());
        m.extend_from_slice(&protocol_len.to_be_bytes());
        m.extend_from_slice(self.label.as_bytes());
        m.extend_from_slice(self.protocol.as_bytes());
        Some(m)
    }

    /// Parses a DATA_CHANNEL_OPEN message (RFC 8832 §5.1).
    fn decode_open(m: &[u8]) -> Option<ChannelParams> {
        let be16 = |at: usize| Some(u16::from_be_bytes(m.get(at..at + 2)?.try_into().ok()?));
        if *m.first()? != DCEP_OPEN {
            return None;
        }
        let kind = *m.get(1)?;
        let priority = be16(2)?;
        let value = u32::from_be_bytes(m.get(4..8)?.try_into().ok()?);
        let label_len = usize::from(be16(8)?);
        let protocol_len = usize::from(be16(10)?);
        let label_end = 12usize.checked_add(label_len)?;
        let label = std::str::from_utf8(m.get(12..label_end)?).ok()?;
        let protocol =
            std::str::from_utf8(m.get(label_end..label_end.checked_add(protocol_len)?)?).ok()?;
        let reliability = match kind & !CHANNEL_UNORDERED {
            0 => Reliability::Reliable,
            CHANNEL_REXMIT => Reliability::MaxRetransmits(value),
            CHANNEL_TIMED => Reliability::MaxLifetimeMs(value),
            _ => return None,
        };
        Some(ChannelParams {
            label: label.to_string(),
            protocol: protocol.to_string(),
            ordered: kind & CHANNEL_UNORDERED == 0,
            reliability,
            priority,
        })
    }

    /// sctp-proto's stream settings for this channel.
    fn sctp(&self) -> (bool, ReliabilityType, u32) {
        let (kind, value) = match self.reliability {
            Reliability::Reliable => (ReliabilityType::Reliable, 0),
            Reliability::MaxRetransmits(n) => (ReliabilityType::Rexmit, n),
            Reliability::MaxLifetimeMs(ms) => (ReliabilityType::Timed, ms),
        };
        (!self.ordered, kind, value)
    }
}

/// What the association reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The SCTP association is up: channels may be opened.
    Connected,
    /// The peer opened a channel on `stream` (we acknowledged it), or acknowledged ours.
    Opened { stream: u16, params: ChannelParams },
    /// A whole message on an open channel. `binary` from the PPID (53/57; 51/56 are strings).
    Message {
        stream: u16,
        binary: bool,
        data: Vec<u8>,
    },
    /// The channel on `stream` was closed (its stream reset, RFC 8831 §6.7).
    Closed { stream: u16 },
    /// The association failed or was closed; no more events follow.
    Lost { reason: String },
}

/// Why a channel operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the SCTP association is not established")]
    NotConnected,
    #[error("no open data channel on stream {0}")]
    UnknownChannel(u16),
    #[error("message of {size} bytes exceeds the peer's limit of {limit}")]
    TooLarge { size: usize, limit: u32 },
    #[error("too much is already queued on stream {0}")]
    Full(u16),
    #[error("too many data channels")]
    TooManyChannels,
    #[error("label or protocol too long")]
    BadParams,
    #[error("SCTP: {0}")]
    Sctp(String),
}

struct Channel {
    params: ChannelParams,
    /// We opened it and the peer has not acknowledged yet: messages go ordered and reliable
    /// until then, so none can overtake the OPEN (RFC 8832 §6).
    awaiting_ack: bool,
}

/// The data channels of one transport.
pub struct DataChannels {
    endpoint: Endpoint,
    association: Option<(AssociationHandle, Association)>,
    connected: bool,
    lost: bool,
    channels: HashMap<u16, Channel>,
    next_stream: u16,
    /// The most we may send in one message (the peer's `a=max-message-size`).
    remote_max: u32,
    /// SCTP packets for DTLS, in order.
    transmit: VecDeque<Bytes>,
    events: VecDeque<Event>,
    /// Inputs refused: SCTP packets sctp-proto could not place, DCEP messages that do not
    /// parse, data on streams no channel was opened on, unknown PPIDs.
    malformed: u64,
}

/// The address sctp-proto wants for its peer; SCTP runs inside DTLS here, so it means nothing.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), SCTP_PORT);

fn transport_config(remote_max: u32) -> Arc<TransportConfig> {
    Arc::new(
        TransportConfig::default()
            .with_max_receive_message_size(MAX_MESSAGE_SIZE)
            .with_max_send_message_size(remote_max)
            // Browsers retry INIT for as long as the page lives; so do we (the transport's
            // consent and handshake limits end it otherwise).
            .with_max_init_retransmits(None),
    )
}

fn endpoint_config() -> Arc<EndpointConfig> {
    let mut config = EndpointConfig::new();
    config.max_payload_size(SCTP_MTU - SCTP_OVERHEAD);
    Arc::new(config)
}

impl DataChannels {
    /// The SCTP server of a transport whose peer announced `remote_max` as its
    /// `a=max-message-size` (`None`: the RFC 8841 default). The peer's INIT starts it.
    pub fn server(remote_max: Option<u32>) -> DataChannels {
        let remote_max = remote_max.unwrap_or(DEFAULT_REMOTE_MAX_MESSAGE_SIZE);
        let mut server = ServerConfig::new();
        server.transport = transport_config(remote_max);
        let endpoint = Endpoint::new(endpoint_config(), Some(Arc::new(server)));
        // The DTLS server opens odd stream ids (RFC 8832 §6).
        DataChannels::new(endpoint, None, 1, remote_max)
    }

    /// The SCTP client (tests, the load generator): sends INIT at once.
    pub fn client(remote_max: Option<u32>) -> Result<DataChannels, Error> {
        let remote_max = remote_max.unwrap_or(DEFAULT_REMOTE_MAX_MESSAGE_SIZE);
        let mut endpoint = Endpoint::new(endpoint_config(), None);
        let mut config = ClientConfig::new();
        config.transport = transport_config(remote_max);
        let association = endpoint
            .connect(config, PEER)
            .map_err(|e| Error::Sctp(e.to_string()))?;
        // The DTLS client opens even stream ids (RFC 8832 §6).
        Ok(DataChannels::new(
            endpoint,
            Some(association),
            0,
            remote_max,
        ))
    }

    fn new(
        endpoint: Endpoint,
        association: Option<(AssociationHandle, Association)>,
        first_stream: u16,
        remote_max: u32,
    ) -> DataChannels {
        DataChannels {
            endpoint,
            association,
            connected: false,
            lost: false,
            channels: HashMap::new(),
            next_stream: first_stream,
            remote_max,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            malformed: 0,
        }
    }

    /// Whether the association is up (channels can be opened and written).
    pub fn is_connected(&self) -> bool {
        self.connected && !self.lost
    }

    /// Inputs refused so far (see the field's doc); the engine counts them as drops.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The open channel on `stream`.
    pub fn channel(&self, stream: u16) -> Option<&ChannelParams> {
        self.channels.get(&stream).map(|c| &c.params)
    }

    /// The stream of the open channel labelled `label`, if any.
    pub fn stream_of(&self, label: &str) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, c)| c.params.label == label)
            .map(|(&s, _)| s)
    }

    /// One SCTP packet: the plaintext of a DTLS application-data record.
    pub fn handle_input(&mut self, now: Instant, packet: &[u8]) {
        if self.lost {
            self.malformed += 1;
            return;
        }
        let data = Bytes::copy_from_slice(packet);
        match self.endpoint.handle(now, PEER, None, None, data) {
            None => self.malformed += 1,
            Some((handle, DatagramEvent::NewAssociation(association))) => {
                if self.association.is_some() {
                    // A second association from the same peer (a restart): ignore it.
                    self.malformed += 1;
                } else {
                    self.association = Some((handle, association));
                }
            }
            Some((handle, DatagramEvent::AssociationEvent(event))) => match &mut self.association {
                Some((h, a)) if *h == handle => a.handle_event(event),
                _ => self.malformed += 1,
            },
        }
        self.drive(now);
    }

    /// Runs SCTP's timers (retransmission, delayed SACK) if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, a)) = &mut self.association
            && a.poll_timeout().is_some_and(|t| t <= now)
        {
            a.handle_timeout(now);
        }
        self.drive(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.lost {
            return None;
        }
        self.association
            .as_ref()
            .and_then(|(_, a)| a.poll_timeout())
    }

    /// The next SCTP packet to hand to DTLS.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Opens a channel toward the peer with DCEP; returns its stream. Messages may be sent on
    /// it at once (they go ordered until the peer acknowledges).
    pub fn open(&mut self, now: Instant, params: ChannelParams) -> Result<u16, Error> {
        if !self.is_connected() {
            return Err(Error::NotConnected);
        }
        if self.channels.len() >= MAX_CHANNELS {
            return Err(Error::TooManyChannels);
        }
        let open = params.encode_open().ok_or(Error::BadParams)?;
        let Some((_, a)) = &mut self.association else {
            return Err(Error::NotConnected);
        };
        // The next free id of our parity (a peer may have used ids of the other one).
        let mut stream = self.next_stream;
        while self.channels.contains_key(&stream) {
            stream = stream.checked_add(2).ok_or(Error::TooManyChannels)?;
        }
        self.next_stream = stream.saturating_add(2);
        {
            let mut s = a
                .open_stream(stream, Ppid::Dcep)
                .map_err(|e| Error::Sctp(e.to_string()))?;
            s.set_reliability_params(false, ReliabilityType::Reliable, 0)
                .map_err(|e| Error::Sctp(e.to_string()))?;
            s.write_with_ppi(&open, Ppid::Dcep)
                .map_err(|e| Error::Sctp(e.to_string()))?;
        }
        self.channels.insert(
            stream,
            Channel {
                params,
                awaiting_ack: true,
            },
        );
        self.drive(now);
        Ok(stream)
    }

    /// Sends one message on the channel at `stream`. Refused when the peer's size limit is
    /// exceeded or the stream already holds [`MAX_BUFFERED`] bytes unsent or unacknowledged.
    pub fn send(
        &mut self,
        now: Instant,
        stream: u16,
        binary: bool,
        data: &[u8],
    ) -> Result<(), Error> {
        if !self.is_connected() {
            return Err(Error::NotConnected);
        }
        if data.len() > self.remote_max as usize {
            return Err(Error::TooLarge {
                size: data.len(),
                limit: self.remote_max,
            });
        }
        if !self.channels.contains_key(&stream) {
            return Err(Error::UnknownChannel(stream));
        }
        let Some((_, a)) = &mut self.association else {
            return Err(Error::NotConnected);
        };
        let mut s = a
            .stream(stream)
            .map_err(|_| Error::UnknownChannel(stream))?;
        if s.buffered_amount().unwrap_or(0) >= MAX_BUFFERED {
            return Err(Error::Full(stream));
        }
        // RFC 8831 §6.6: an empty message is one byte with the "empty" PPID.
        let (ppid, payload): (Ppid, &[u8]) = match (binary, data.is_empty()) {
            (true, false) => (Ppid::Binary, data),
            (false, false) => (Ppid::String, data),
            (true, true) => (Ppid::BinaryEmpty, &[0]),
            (false, true) => (Ppid::StringEmpty, &[0]),
        };
        s.write_with_ppi(payload, ppid)
            .map_err(|e| Error::Sctp(e.to_string()))?;
        self.drive(now);
        Ok(())
    }

    /// Closes the channel at `stream` (resets its stream, RFC 8831 §6.7).
    pub fn close(&mut self, now: Instant, stream: u16) {
        if self.channels.remove(&stream).is_none() {
            return;
        }
        if let Some((_, a)) = &mut self.association
            && let Ok(mut s) = a.stream(stream)
        {
            let _ = s.close();
        }
        self.drive(now);
    }

    /// Moves everything sctp-proto has for us into our queues: packets, endpoint bookkeeping,
    /// stream events and the messages they make readable.
    fn drive(&mut self, now: Instant) {
        let Some((handle, a)) = &mut self.association else {
            while let Some(t) = self.endpoint.poll_transmit() {
                push_payload(&mut self.transmit, t.payload);
            }
            return;
        };
        let handle = *handle;
        loop {
            let mut progressed = false;
            while let Some(event) = a.poll_endpoint_event() {
                progressed = true;
                let _ = self.endpoint.handle_event(handle, event);
            }
            while let Some(event) = a.poll() {
                progressed = true;
                match event {
                    SctpEvent::Connected => {
                        self.connected = true;
                        self.events.push_back(Event::Connected);
                    }
                    SctpEvent::HandshakeFailed { reason }
                    | SctpEvent::AssociationLost { reason } => {
                        let first = !self.lost;
                        self.lost = true;
                        if first {
                            self.events.push_back(Event::Lost {
                                reason: reason.to_string(),
                            });
                        }
                    }
                    SctpEvent::Stream(StreamEvent::Opened { .. }) => {
                        // Drains sctp-proto's queue of accepted streams; the channel itself
                        // exists once its DATA_CHANNEL_OPEN arrives.
                        while a.accept_stream().is_some() {}
                    }
                    SctpEvent::Stream(StreamEvent::Readable { id }) => {
                        read_stream(
                            a,
                            id,
                            &mut self.channels,
                            &mut self.events,
                            &mut self.malformed,
                        );
                    }
                    SctpEvent::Stream(StreamEvent::Finished { id }) => {
                        let had = self.channels.remove(&id);
                        if had.is_some() {
                            self.events.push_back(Event::Closed { stream: id });
                        }
                    }
                    _ => {}
                }
            }
            while let Some(t) = a.poll_transmit(now) {
                progressed = true;
                push_payload(&mut self.transmit, t.payload);
            }
            if !progressed {
                break;
            }
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            push_payload(&mut self.transmit, t.payload);
        }
    }
}

fn push_payload(queue: &mut VecDeque<Bytes>, payload: Payload) {
    if let Payload::RawEncode(packets) = payload {
        queue.extend(packets);
    }
}

/// Reads every whole message waiting on `id`: DCEP messages open or acknowledge channels,
/// the rest are the channel's messages.
fn read_stream(
    a: &mut Association,
    id: u16,
    channels: &mut HashMap<u16, Channel>,
    events: &mut VecDeque<Event>,
    malformed: &mut u64,
) {
    loop {
        let Ok(mut s) = a.stream(id) else { return };
        let chunks = match s.read_sctp() {
            Ok(Some(chunks)) => chunks,
            Ok(None) | Err(_) => return,
        };
        let mut data = vec![0; chunks.len()];
        if chunks.read(&mut data).is_err() {
            *malformed += 1;
            continue;
        }
        match chunks.ppi {
            Ppid::Dcep => match data.first() {
                Some(&DCEP_OPEN) => {
                    let Some(params) = ChannelParams::decode_open(&data) else {
                        *malformed += 1;
                        continue;
                    };
                    if channels.len() >= MAX_CHANNELS || channels.contains_key(&id) {
                        *malformed += 1;
                        let _ = s.close();
                        continue;
                    }
                    let (unordered, kind, value) = params.sctp();
                    let acked = s
                        .set_reliability_params(unordered, kind, value)
                        .and_then(|()| s.write_with_ppi(&[DCEP_ACK], Ppid::Dcep));
                    if acked.is_err() {
                        *malformed += 1;
                        continue;
                    }
                    channels.insert(
                        id,
                        Channel {
                            params: params.clone(),
                            awaiting_ack: false,
                        },
                    );
                    events.push_back(Event::Opened { stream: id, params });
                }
                Some(&DCEP_ACK) => match channels.get_mut(&id) {
                    Some(c) if c.awaiting_ack => {
                        c.awaiting_ack = false;
                        let (unordered, kind, value) = c.params.sctp();
                        let _ = s.set_reliability_params(unordered, kind, value);
                        events.push_back(Event::Opened {
                            stream: id,
                            params: c.params.clone(),
                        });
                    }
                    _ => *malformed += 1,
                },
                _ => *malformed += 1,
            },
            Ppid::String | Ppid::Binary | Ppid::StringEmpty | Ppid::BinaryEmpty => {
                if !channels.contains_key(&id) {
                    *malformed += 1;
                    continue;
                }
                let binary = matches!(chunks.ppi, Ppid::Binary | Ppid::BinaryEmpty);
                if matches!(chunks.ppi, Ppid::StringEmpty | Ppid::BinaryEmpty) {
                    data.clear();
                }
                events.push_back(Event::Message {
                    stream: id,
                    binary,
                    data,
                });
            }
            _ => *malformed += 1,
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Two ends joined in memory; `loss` drops every n-th packet in both directions.
    struct Pair {
        client: DataChannels,
        server: DataChannels,
        now: Instant,
        loss: Option<usize>,
        sent: usize,
        client_events: Vec<Event>,
        server_events: Vec<Event>,
    }

    impl Pair {
        fn new() -> Pair {
            let mut p = Pair {
                client: DataChannels::client(Some(MAX_MESSAGE_SIZE)).unwrap(),
                server: DataChannels::server(Some(MAX_MESSAGE_SIZE)),
                now: Instant::now(),
                loss: None,
                sent: 0,
                client_events: Vec::new(),
                server_events: Vec::new(),
            };
            p.client.handle_timeout(p.now);
            p.run(Duration::from_millis(100));
            assert!(p.client.is_connected() && p.server.is_connected());
            assert!(p.server_events.contains(&Event::Connected));
            p
        }

        /// Exchanges packets until both are quiet, then lets time pass up to `for_`.
        fn run(&mut self, for_: Duration) {
            let end = self.now + for_;
            for _ in 0..100_000 {
                let mut moved = false;
                while let Some(p) = self.client.poll_transmit() {
                    moved = true;
                    self.sent += 1;
                    if self.loss.is_some_and(|n| self.sent.is_multiple_of(n)) {
                        continue;
                    }
                    self.server.handle_input(self.now, &p);
                }
                while let Some(p) = self.server.poll_transmit() {
                    moved = true;
                    self.sent += 1;
                    if self.loss.is_some_and(|n| self.sent.is_multiple_of(n)) {
                        continue;
                    }
                    self.client.handle_input(self.now, &p);
                }
                while let Some(e) = self.client.poll_event() {
                    self.client_events.push(e);
                }
                while let Some(e) = self.server.poll_event() {
                    self.server_events.push(e);
                }
                if moved {
                    continue;
                }
                let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= end => {
                        self.now = t.max(self.now);
                        self.client.handle_timeout(self.now);
                        self.server.handle_timeout(self.now);
                    }
                    _ => {
                        self.now = end;
                        return;
                    }
                }
            }
            panic!("did not settle");
        }

        fn server_messages(&self, stream: u16) -> Vec<Vec<u8>> {
            self.server_events
                .iter()
                .filter_map(|e| match e {
                    Event::Message {
                        stream: s, data, ..
                    } if *s == stream => Some(data.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn dcep_open_round_trips() {
        for params in [
            ChannelParams::reliable("chat"),
            ChannelParams {
                label: "état".into(),
                protocol: "json".into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits(0),
                priority: 512,
            },
            ChannelParams {
                label: String::new(),
                protocol: String::new(),
                ordered: true,
                reliability: Reliability::MaxLifetimeMs(150),
                priority: 128,
            },
        ] {
            let m = params.encode_open().unwrap();
            assert_eq!(ChannelParams::decode_open(&m), Some(params.clone()));
            for cut in 0..m.len() {
                if cut < 12 + params.label.len() + params.protocol.len() {
                    assert_eq!(ChannelParams::decode_open(&m[..cut]), None, "{cut}");
                }
            }
        }
        // An unknown channel type is refused.
        let mut m = ChannelParams::reliable("x").encode_open().unwrap();
        m[1] = 0x05;
        assert_eq!(ChannelParams::decode_open(&m), None);
    }

    proptest::proptest! {
        /// Any bytes as a DCEP message: parsed or refused, never a panic; what parses writes
        /// back to the same message.
        #[test]
        fn dcep_parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Some(params) = ChannelParams::decode_open(&bytes) {
                let again = params.encode_open().unwrap();
                proptest::prop_assert_eq!(ChannelParams::decode_open(&again), Some(params));
            }
        }
    }

    #[test]
    fn client_opens_and_ordered_messages_arrive_in_order() {
        let mut p = Pair::new();
        let now = p.now;
        let stream = p.client.open(now, ChannelParams::reliable("chat")).unwrap();
        assert_eq!(stream % 2, 0, "the DTLS client opens even streams");
        for i in 0..50u32 {
            p.client
                .send(now, stream, false, format!("m{i}").as_bytes())
                .unwrap();
        }
        p.run(Duration::from_millis(500));
        assert!(p.server_events.iter().any(|e| matches!(
            e,
            Event::Opened { stream: s, params } if *s == stream && params.label == "chat" && params.ordered
        )));
        assert!(p.client_events.iter().any(|e| matches!(
            e,
            Event::Opened { stream: s, .. } if *s == stream
        )));
        let got = p.server_messages(stream);
        let want: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
        assert_eq!(got, want);
        assert_eq!(p.server.stream_of("chat"), Some(stream));
        assert_eq!(p.server.malformed(), 0);
    }

    #[test]
    fn server_opens_odd_streams_and_sends_binary_and_empty_messages() {
        let mut p = Pair::new();
        let now = p.now;
        let stream = p
            .server
            .open(
                now,
                ChannelParams {
                    ordered: false,
                    reliability: Reliability::MaxRetransmits(0),
                    ..ChannelParams::reliable("fwd")
                },
            )
            .unwrap();
        assert_eq!(stream % 2, 1);
        p.server.send(now, stream, true, &[1, 2, 3]).unwrap();
        p.server.send(now, stream, true, &[]).unwrap();
        p.server.send(now, stream, false, b"").unwrap();
        p.run(Duration::from_millis(500));
        let messages: Vec<(bool, Vec<u8>)> = p
            .client_events
            .iter()
            .filter_map(|e| match e {
                Event::Message { binary, data, .. } => Some((*binary, data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            messages,
            vec![(true, vec![1, 2, 3]), (true, vec![]), (false, vec![])]
        );
        assert_eq!(
            p.client.channel(stream).map(|c| c.reliability),
            Some(Reliability::MaxRetransmits(0))
        );
    }

    #[test]
    fn a_256_kib_message_arrives_whole() {
        let mut p = Pair::new();
        let now = p.now;
        let stream = p.client.open(now, ChannelParams::reliable("big")).unwrap();
        let big: Vec<u8> = (0..MAX_MESSAGE_SIZE as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        p.client.send(now, stream, true, &big).unwrap();
        p.run(Duration::from_secs(2));
        assert_eq!(p.server_messages(stream), vec![big.clone()]);
        // One byte more is refused before it reaches SCTP.
        let mut bigger = big;
        bigger.push(0);
        assert!(matches!(
            p.client.send(p.now, stream, true, &bigger),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn unordered_unreliable_channel_delivers_most_under_loss() {
        let mut p = Pair::new();
        let now = p.now;
        let stream = p
            .client
            .open(
                now,
                ChannelParams {
                    ordered: false,
                    reliability: Reliability::MaxRetransmits(0),
                    ..ChannelParams::reliable("lossy")
                },
            )
            .unwrap();
        p.run(Duration::from_millis(200));
        p.loss = Some(10);
        for i in 0..200u32 {
            p.client
                .send(p.now, stream, true, &i.to_be_bytes())
                .unwrap();
            p.run(Duration::from_millis(10));
        }
        p.run(Duration::from_secs(3));
        let got = p.server_messages(stream);
        assert!(got.len() >= 150, "{} of 200 arrived", got.len());
        assert!(got.len() <= 200);
    }

    #[test]
    fn a_reliable_channel_recovers_everything_under_loss() {
        let mut p = Pair::new();
        let stream = p.client.open(p.now, ChannelParams::reliable("r")).unwrap();
        p.loss = Some(7);
        for i in 0..100u32 {
            p.client
                .send(p.now, stream, true, &i.to_be_bytes())
                .unwrap();
        }
        p.run(Duration::from_secs(30));
        let want: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(p.server_messages(stream), want);
    }

    #[test]
    fn closing_a_channel_reaches_the_peer() {
        let mut p = Pair::new();
        let stream = p.client.open(p.now, ChannelParams::reliable("c")).unwrap();
        p.run(Duration::from_millis(200));
        p.client.close(p.now, stream);
        p.run(Duration::from_millis(500));
        assert!(p.server_events.contains(&Event::Closed { stream }));
        assert!(p.server.channel(stream).is_none());
        assert_eq!(
            p.client.send(p.now, stream, true, b"x"),
            Err(Error::UnknownChannel(stream))
        );
    }

    #[test]
    fn garbage_is_counted_and_never_panics() {
        let mut server = DataChannels::server(None);
        let now = Instant::now();
        for len in [0usize, 1, 11, 12, 13, 16, 28, 100, 1200] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            server.handle_input(now, &junk);
        }
        assert!(server.malformed() > 0);
        assert!(!server.is_connected());
        assert_eq!(
            server.open(now, ChannelParams::reliable("x")),
            Err(Error::NotConnected)
        );

        // Inside an association: junk packets, data on a stream with no channel, bad DCEP.
        let mut p = Pair::new();
        let before = p.server.malformed();
        for len in [0usize, 5, 12, 40, 1000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            p.server.handle_input(p.now, &junk);
        }
        assert!(p.server.malformed() > before);
        let (_, a) = p.client.association.as_mut().unwrap();
        {
            let mut s = a.open_stream(8, Ppid::Binary).unwrap();
            s.write_with_ppi(b"no channel", Ppid::Binary).unwrap();
        }
        {
            let mut s = a.open_stream(10, Ppid::Dcep).unwrap();
            s.write_with_ppi(&[DCEP_OPEN, 0, 0], Ppid::Dcep).unwrap();
        }
        p.client.drive(p.now);
        let before = p.server.malformed();
        p.run(Duration::from_millis(300));
        assert_eq!(p.server.malformed(), before + 2);
        assert!(p.server.is_connected());
        assert!(p.server_messages(8).is_empty());
    }
}
