//! What the control plane and a worker's engine say to each other: ids, the specs of
//! transports with their producers and consumers, the events coming back, and the errors.
//!
//! Nothing here knows about threads or sockets: the engine takes these as plain values, and
//! `worker` carries them across threads.

use std::fmt;
use std::net::SocketAddr;

use crate::dtls::Fingerprint;
use crate::ice::Credentials;
use crate::media::{Codec, MediaKind};
use crate::srtp;

/// Declares an id type: a newtype over an integer, so that one kind of id cannot be passed
/// where another is wanted. Displays as the bare number (logs and labels stay as they were).
macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> $name {
                $name(v)
            }
        }
    };
}

id!(
    /// A router: a channel on one worker. Chosen by the control plane.
    RouterId(u64)
);
id!(
    /// A transport: one peer connection, or a pipe to another media server. Chosen by the
    /// control plane, unique in the process.
    TransportId(u64)
);
id!(
    /// A producer: a track published on a transport. Chosen by the control plane, unique in
    /// its router.
    ProducerId(u64)
);
id!(
    /// A consumer: one transport's subscription to a producer. Chosen by the control plane.
    ConsumerId(u64)
);
id!(
    /// An RTP synchronization source (RFC 3550 §3).
    Ssrc(u32)
);

/// A track the client publishes on this transport.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub id: ProducerId,
    pub kind: MediaKind,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// From `a=ssrc`; otherwise learned from the first packet carrying `mid_ext` = `mid`.
    pub ssrc: Option<Ssrc>,
    pub mid: String,
    pub mid_ext: Option<u8>,
    /// RID-based simulcast: the layers' rids, lowest first, told apart by the rtp-stream-id
    /// extension `rid_ext`. Empty for a single stream.
    pub rids: Vec<String>,
    pub rid_ext: Option<u8>,
    /// The publisher accepts NACK / PLI / FIR / REMB from us.
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
    /// The id of the audio level header extension (RFC 6464) on an audio track, from which
    /// the router tells who is speaking (`speaker`).
    pub audio_level_ext: Option<u8>,
    /// The transport-wide sequence number extension's id: the publisher takes transport-cc
    /// feedback from us (and no REMB).
    pub twcc_ext: Option<u8>,
    /// The dependency descriptor extension's id (AV1 RTP specification appendix A), on video:
    /// with VP9 or AV1 SVC, consumers drop layers from it alone (`crate::svc`).
    pub dd_ext: Option<u8>,
    /// Audio: the publisher's payload type for RED (RFC 2198) carrying `payload_type`, when it
    /// sends Opus with redundancy.
    pub red: Option<u8>,
    /// The channel's cap (`maxBitrateKbps`), in bits per second: the REMB we send the
    /// publisher says no more (sent to a transport-cc publisher too, whose estimator takes it
    /// as an upper bound), and its consumers forward only layers within it.
    pub max_bitrate: Option<u64>,
}

/// What a subscriber asks of one of its video consumers: the simulcast layer forwarded is the
/// highest that fits these and the subscriber's estimated bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preferences {
    /// The tallest picture wanted, in pixels; `None` for no limit.
    pub max_height: Option<u16>,
    /// The most frames per second wanted; `None` for no limit. SVC streams drop temporal
    /// layers for it (never the base layer); simulcast streams are not capped yet.
    pub max_frame_rate: Option<u16>,
    /// Forward nothing (audio and video) until resumed.
    pub paused: bool,
    /// The most bits per second this consumer has use for; `None` for no limit. A publisher
    /// whose every consumer names one is asked (REMB) for no more than the largest: the
    /// mixer sizes its inputs to their tiles this way.
    pub max_bitrate: Option<u64>,
}

/// A track the client receives on this transport: a consumer of `producer`.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub id: ConsumerId,
    pub producer: ProducerId,
    pub ssrc: Ssrc,
    /// The subscriber's payload type for the producer's codec.
    pub payload_type: u8,
    pub mid: String,
    pub mid_ext: Option<u8>,
    /// The subscriber sends NACK / PLI / FIR.
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    /// The transport-wide sequence number extension's id: the subscriber sends transport-cc
    /// feedback, from which we estimate its bandwidth.
    pub twcc_ext: Option<u8>,
    /// The dependency descriptor extension's id: forwarded SVC packets carry the producer's
    /// descriptor under it.
    pub dd_ext: Option<u8>,
    /// The audio level extension's id (RFC 6464): forwarded audio packets carry the
    /// producer's level under it (when the producer sent one). Set for the MCU's inputs,
    /// whose mixer picks talkers from the levels without decoding.
    pub audio_level_ext: Option<u8>,
    /// The subscriber takes retransmissions as a separate RTX stream (RFC 4588); otherwise
    /// a NACKed packet is resent as it was first sent.
    pub rtx: Option<RtxSpec>,
    /// Audio: the subscriber's RED payload type, when it takes the producer's RED as is
    /// (renumbered to its payload types); otherwise it gets the primary Opus block alone.
    pub red: Option<u8>,
}

/// A consumer's retransmission stream (RFC 4588 §4): its own SSRC, signalled to the subscriber
/// in `a=ssrc-group:FID <ssrc> <rtx ssrc>`, and the subscriber's `rtx` payload type whose
/// `apt` is the consumer's payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxSpec {
    pub ssrc: Ssrc,
    pub payload_type: u8,
}

/// Everything a worker needs to run one transport; built from the negotiated SDP.
#[derive(Debug, Clone)]
pub struct TransportSpec {
    pub id: TransportId,
    pub router: RouterId,
    pub kind: TransportKind,
    pub producers: Vec<ProducerSpec>,
    pub consumers: Vec<ConsumerSpec>,
    /// Data channels (SCTP over DTLS), when the SDP negotiated an `m=application` line.
    pub data: Option<DataSpec>,
}

/// A peer connection's data channels: what it publishes and what it receives.
///
/// A publication's data channels are one data producer, whatever their labels; each message
/// on its channel labelled L reaches every subscriber of the publication on the channel
/// labelled L that the SFU opens toward that subscriber (DCEP, with the publisher's label,
/// ordering and reliability).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSpec {
    /// Set on a publication's transport: the id its channels are published as (unique in
    /// its router, like a producer's).
    pub producer: Option<ProducerId>,
    /// Set on a subscription's transport: the data producers it receives.
    pub consumes: Vec<ProducerId>,
    /// The peer's `a=max-message-size` (RFC 8841 §6); `None` when it announced none.
    pub remote_max_message_size: Option<u32>,
}

/// How a transport reaches its peer.
#[derive(Debug, Clone)]
pub enum TransportKind {
    /// A peer connection: ICE-lite and DTLS (we are the DTLS server), then SRTP with the
    /// exported keys.
    WebRtc {
        local_ice: Credentials,
        remote_ice: Credentials,
        remote_fingerprint: Fingerprint,
    },
    /// A pipe to another media server of the cluster.
    Pipe(Box<PipeSpec>),
    /// One stream between the router and the channel's mixer on MCU core `mcu` (see
    /// [`crate::mcu`]): an input has one consumer (a track the mixer takes in), an output one
    /// producer (a stream the mixer makes). No ICE, DTLS or SRTP: its packets cross to the MCU
    /// thread in the clear, through the MCU's lanes, and it is connected at creation.
    Mixer { mcu: usize },
    /// One end of a link between two routers of one channel on different workers (its
    /// shards: see `crate::router::mirror`). No ICE, DTLS or SRTP: packets cross to the other
    /// worker in the clear, through its lane, and it is connected at creation.
    Shard(Box<ShardSpec>),
}

/// A shard link's end. The home end (the publications' router) has no producers or
/// consumers of its own: it sends every packet of each stream's producer, all its layers,
/// as they arrive, to the far end. The far end's producers are copies of those producers
/// under the same ids, whose layers are bound to the SSRCs in `streams`; its subscribers
/// consume them as they would the originals, and its feedback (NACK, PLI, FIR) goes back
/// to the home end, which answers NACKs from the producer's history and passes keyframe
/// requests to the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpec {
    /// The worker of the other end, and that end's transport.
    pub worker: usize,
    pub peer: TransportId,
    pub streams: Vec<ShardStream>,
}

/// A producer a shard link carries, and the SSRC each of its layers (lowest first) has on
/// the link: the home end writes them, the far end's copy is bound to them, and feedback
/// names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStream {
    pub producer: ProducerId,
    pub ssrcs: Vec<Ssrc>,
}

/// A pipe: a transport to another media server of the cluster that relays a channel's tracks
/// (cascading). There is no ICE or DTLS: the remote address is known and both ends get their
/// SRTP keys (AEAD_AES_128_GCM) from the control plane, so it carries media at once. The ends
/// send to each other's worker sockets, so the remote is also where its packets come from; pipes
/// sharing that pair of sockets are told apart by SSRC.
#[derive(Clone)]
pub struct PipeSpec {
    pub remote: SocketAddr,
    /// Master key (16 bytes) then salt (12 bytes) for what we send, and for what we receive.
    pub send_key: Vec<u8>,
    pub receive_key: Vec<u8>,
    /// The sender SSRC of our RTCP on this pipe, and of the other end's.
    pub local_rtcp_ssrc: Ssrc,
    pub remote_rtcp_ssrc: Ssrc,
}

impl fmt::Debug for PipeSpec {
    /// The keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeSpec")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// The SRTP profile of pipes and the length of its keying material (master key and salt).
pub const PIPE_PROFILE: srtp::Profile = srtp::Profile::AeadAes128Gcm;
pub const PIPE_KEY_LEN: usize = 16 + 12;

/// Why a transport ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The control plane closed it (leave, WHIP/WHEP DELETE, kick).
    Closed,
    /// No valid ICE check for 30 s (RFC 7675).
    ConsentExpired,
    /// ICE or DTLS did not complete in time.
    HandshakeTimeout,
    /// DTLS failed (for example the certificate did not match the fingerprint).
    DtlsFailed(String),
}

/// What an engine tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS completed; media flows.
    Connected { transport: TransportId },
    /// The transport is gone; its producers and consumers with it.
    Closed {
        transport: TransportId,
        reason: CloseReason,
    },
    /// An audio producer started or stopped speaking (see `speaker` for the hysteresis and the
    /// rate limit).
    Speaking {
        router: RouterId,
        producer: ProducerId,
        speaking: bool,
    },
    /// The router's dominant speaker changed: kept through pauses, taken over only by a
    /// speaker clearly louder for a while; `None` when its producer went away.
    DominantSpeaker {
        router: RouterId,
        producer: Option<ProducerId>,
    },
    /// The simulcast layers of a producer that some consumer's preferences take, one flag per
    /// layer from the lowest: the publisher may stop sending the others (and resume them when
    /// they are wanted again).
    Layers {
        router: RouterId,
        producer: ProducerId,
        active: Vec<bool>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not start the media workers: {0}")]
    Start(String),
    #[error("worker {0} is busy (command queue full)")]
    Busy(usize),
    #[error("no worker {0}")]
    NoWorker(usize),
    #[error("worker stopped")]
    Stopped,
    #[error("transport rejected: {0}")]
    Rejected(String),
}
