//! SDP (RFC 8866) offer/answer (RFC 3264, RFC 8829) for an ICE-lite, DTLS-server SFU.
//!
//! The server is always the answerer: a client offers what it publishes (sendonly m-lines, we
//! answer recvonly) or what it wants to receive (recvonly m-lines, we answer sendonly with the
//! producer's codec). Everything is BUNDLEd and rtcp-muxed.
//!
//! CONTRACT (skeleton): signatures used by the control plane; implement them. The parser may be
//! reached by anyone on the internet: it returns an error naming the line and never panics.

use std::fmt;
use std::net::SocketAddr;

use crate::dtls::Fingerprint;
use crate::ice::Credentials;
use crate::media::{Codec, MediaKind};

/// A parse or negotiation failure, shown to the client (HTTP 400 / signalling error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct Error {
    /// 1-based line number, when the error is about a line.
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// An `a=` attribute: name and optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// One m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// "audio", "video", "application", ...
    pub media: String,
    pub port: u16,
    pub protocol: String,
    pub formats: Vec<String>,
    pub connection: Option<String>,
    pub attributes: Vec<Attribute>,
}

/// A parsed session description, kept close to the text so it can be written back out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: String,
    pub session_name: String,
    pub connection: Option<String>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    pub fn parse(text: &str) -> Result<SessionDescription, Error> {
        let _ = text;
        todo!()
    }
}

impl fmt::Display for SessionDescription {
    /// Writes the description with CRLF line ends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

/// One offered m-line, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub mid: String,
    /// `None` for m-lines we never accept (data channels, unknown media).
    pub kind: Option<MediaKind>,
    pub direction: Direction,
}

/// A checked offer: BUNDLE over every accepted m-line, rtcp-mux, ICE credentials, a DTLS
/// fingerprint and `a=setup:actpass` or `active`.
#[derive(Debug, Clone)]
pub struct Offer {
    pub description: SessionDescription,
    pub ice: Credentials,
    pub fingerprint: Fingerprint,
    pub media: Vec<OfferedMedia>,
}

impl Offer {
    pub fn parse(text: &str) -> Result<Offer, Error> {
        let _ = text;
        todo!()
    }
}

/// A track we send on a recvonly m-line: the producer's codec and our consumer's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTrack {
    pub codec: Codec,
    /// The producer's fmtp (used to match H264 profile and packetization mode).
    pub fmtp: Option<String>,
    pub ssrc: u32,
    pub cname: String,
    pub stream_id: String,
    pub track_id: String,
}

/// What the server does with one offered m-line, in offer order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRole {
    /// The client publishes here; we answer recvonly.
    Receive,
    /// We send this track here; we answer sendonly.
    Send(SendTrack),
    /// Declined (port 0).
    Reject,
}

/// Our side of the answer.
#[derive(Debug, Clone)]
pub struct LocalParams<'a> {
    pub ice: &'a Credentials,
    pub fingerprint: &'a Fingerprint,
    /// Host candidates to announce (the worker's port on each announced address).
    pub candidates: &'a [SocketAddr],
    /// Codecs the channel allows; offered codecs outside this list are declined.
    pub allowed_codecs: &'a [Codec],
}

/// The codec chosen for an m-line, with the payload type the *client* uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub channels: u8,
    pub fmtp: Option<String>,
    /// RTCP feedback accepted in the answer.
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
}

/// Header extension ids accepted in the answer (RFC 8285).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions {
    /// urn:ietf:params:rtp-hdrext:sdes:mid
    pub mid: Option<u8>,
}

/// The outcome for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// The client publishes `codec`; `ssrc` from `a=ssrc` (the primary one), if signalled.
    Receive {
        mid: String,
        kind: MediaKind,
        codec: NegotiatedCodec,
        extensions: Extensions,
        ssrc: Option<u32>,
    },
    /// We send `SendTrack` as `codec` (the client's payload type for the producer's codec).
    Send {
        mid: String,
        kind: MediaKind,
        codec: NegotiatedCodec,
        extensions: Extensions,
        ssrc: u32,
    },
    /// Declined, with the reason (e.g. "no codec in common").
    Rejected { mid: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub sdp: String,
    pub media: Vec<Negotiated>,
}

/// Builds the answer to `offer` with one role per offered m-line.
pub fn answer(
    offer: &Offer,
    local: &LocalParams<'_>,
    roles: &[MediaRole],
) -> Result<Answer, Error> {
    let _ = (offer, local, roles);
    todo!()
}
