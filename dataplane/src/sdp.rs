//! SDP (RFC 8866) offer/answer (RFC 3264, RFC 8829) for an ICE-lite, DTLS-server SFU.
//!
//! The server is always the answerer: a client offers what it publishes (sendonly m-lines, we
//! answer recvonly) or what it wants to receive (recvonly m-lines, we answer sendonly with the
//! producer's codec). Everything is BUNDLEd and rtcp-muxed.
//!
//! The parser may be reached by anyone on the internet: it returns an error naming the line
//! and never panics. Hand-written because the grammar we need is small and line-based, and we
//! want errors that tell a client exactly what to fix.

use std::borrow::Borrow;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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

impl Direction {
    /// The attribute name (RFC 8866 §6.7).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
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

/// Offers larger than this are refused (browser offers are a few kilobytes).
const MAX_SDP_BYTES: usize = 64 * 1024;
const MAX_MEDIA: usize = 64;
/// The protocol and format of a data channel m-line (RFC 8841 §4).
pub const DATA_PROTOCOL: &str = "UDP/DTLS/SCTP";
pub const DATA_FORMAT: &str = "webrtc-datachannel";
/// The RTP header extension carrying the mid, by which BUNDLE (RFC 8843) demultiplexes.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The RTP header extension naming a simulcast stream by its rid (RFC 8852 §3.1).
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// The transport-wide sequence number header extension of transport-cc feedback
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2).
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Simulcast layers we take on one m-line; more are declined with the rest of simulcast.
pub const MAX_LAYERS: usize = 4;
/// The client-to-mixer audio level header extension (RFC 6464), read for the active speaker.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

fn err(line: usize, reason: impl Into<String>) -> Error {
    Error {
        line: Some(line),
        reason: reason.into(),
    }
}

fn fail(reason: impl Into<String>) -> Error {
    Error {
        line: None,
        reason: reason.into(),
    }
}

impl SessionDescription {
    pub fn parse(text: &str) -> Result<SessionDescription, Error> {
        if text.len() > MAX_SDP_BYTES {
            return Err(fail(format!(
                "SDP is {} bytes; the limit is {MAX_SDP_BYTES}",
                text.len()
            )));
        }
        let mut sd = SessionDescription {
            origin: String::new(),
            session_name: String::new(),
            connection: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };
        let mut seen_version = false;
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let (kind, value) = match line.as_bytes() {
                [k, b'=', ..] if k.is_ascii_lowercase() => (*k, &line[2..]),
                _ => {
                    return Err(err(
                        n,
                        format!("expected '<letter>=<value>', found {:?}", truncate(line)),
                    ));
                }
            };
            if !seen_version {
                if kind != b'v' || value != "0" {
                    return Err(err(n, "an SDP must start with v=0"));
                }
                seen_version = true;
                continue;
            }
            match (kind, sd.media.last_mut()) {
                (b'm', _) => {
                    if sd.media.len() == MAX_MEDIA {
                        return Err(err(n, format!("more than {MAX_MEDIA} m-lines")));
                    }
                    sd.media.push(parse_media_line(n, value)?);
                }
                (b'a', Some(m)) => m.attributes.push(parse_attribute(value)),
                (b'a', None) => sd.attributes.push(parse_attribute(value)),
                (b'c', Some(m)) => m.connection = Some(value.to_string()),
                (b'c', None) => sd.connection = Some(value.to_string()),
                (b'o', None) => sd.origin = value.to_string(),
                (b's', None) => sd.session_name = value.to_string(),
                (b'v', _) => return Err(err(n, "a second v= line")),
                // b=, t=, i= and the rest carry nothing we use.
                _ => {}
            }
        }
        if !seen_version {
            return Err(fail("empty SDP"));
        }
        Ok(sd)
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        find_attr(&self.attributes, name)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, v)) => Attribute {
            name: name.to_string(),
            value: Some(v.to_string()),
        },
        None => Attribute {
            name: value.to_string(),
            value: None,
        },
    }
}

fn parse_media_line(n: usize, value: &str) -> Result<MediaDescription, Error> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(protocol)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(err(n, "expected 'm=<media> <port> <proto> <formats>'"));
    };
    let port = port
        .split('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| err(n, format!("bad port {port:?} in m-line")))?;
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        protocol: protocol.to_string(),
        formats: parts.map(str::to_string).collect(),
        connection: None,
        attributes: Vec::new(),
    })
}

fn find_attr<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

impl fmt::Display for SessionDescription {
    /// Writes the description with CRLF line ends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut w = Writer::header(&self.origin, &self.session_name, self.connection.as_deref());
        for a in &self.attributes {
            w.attribute_line(a);
        }
        for m in &self.media {
            w.media_line(&m.media, m.port, &m.protocol, &m.formats);
            if let Some(c) = &m.connection {
                w.line('c', c);
            }
            for a in &m.attributes {
                w.attribute_line(a);
            }
        }
        f.write_str(&w.finish())
    }
}

/// Writes SDP text (RFC 8866 §5): one line per call, in the order called, each ended with
/// CRLF.
///
/// Every line we emit has its format here, once: the session header, media sections accepted
/// and rejected, and the attributes in them. The server's answer, the client's offer and the
/// client's answer to a full ICE agent are all written with it. Callers choose the lines and
/// their order, which is part of the output: browsers and aiortc read our answers, Janus our
/// offers, so a caller's order does not change lightly.
#[derive(Debug)]
pub struct Writer {
    out: String,
}

/// The lines that open each accepted, BUNDLEd media section of ours: the m-line with its
/// payload types (the codec's, and RED's or RTX's where negotiated), `c=`, the mid, the transport (ICE credentials, DTLS fingerprint and role),
/// which we repeat in every bundled section as browsers do, the direction and `a=rtcp-mux`.
#[derive(Debug, Clone, Copy)]
pub struct MediaSection<'a> {
    /// "audio" or "video".
    pub media: &'a str,
    pub port: u16,
    pub protocol: &'a str,
    /// The m-line's formats, the preferred first.
    pub payload_types: &'a [u8],
    /// The `c=` address: the candidate's, or 0.0.0.0 when candidates come another way.
    pub address: IpAddr,
    pub mid: &'a str,
    pub ice: &'a Credentials,
    pub fingerprint: &'a Fingerprint,
    /// `a=setup` (RFC 5763 §5): "actpass", "active" or "passive".
    pub setup: &'a str,
    pub direction: Direction,
}

impl Writer {
    /// The session header of a description we make: `v=0`, `o=- <session_id> 2 IN IP4
    /// 127.0.0.1`, `s=-`, `t=0 0`. The session id must fit a signed 64-bit integer (RFC 3264
    /// §5); the caller picks it (random in production, fixed in tests).
    pub fn new(session_id: u64) -> Writer {
        Writer::header(&format!("- {session_id} 2 IN IP4 127.0.0.1"), "-", None)
    }

    /// `v=0`, `o=`, `s=`, the session `c=` if any, `t=0 0`.
    fn header(origin: &str, session_name: &str, connection: Option<&str>) -> Writer {
        let mut w = Writer { out: String::new() };
        w.line('v', "0").line('o', origin).line('s', session_name);
        if let Some(c) = connection {
            w.line('c', c);
        }
        w.line('t', "0 0");
        w
    }

    fn line(&mut self, kind: char, value: impl fmt::Display) -> &mut Writer {
        // Writing into a String cannot fail.
        let _ = write!(self.out, "{kind}={value}\r\n");
        self
    }

    /// A property attribute: `a=<name>`.
    pub fn flag(&mut self, name: &str) -> &mut Writer {
        self.line('a', name)
    }

    /// An attribute as parsed.
    fn attribute_line(&mut self, a: &Attribute) -> &mut Writer {
        match &a.value {
            Some(v) => self.attribute(&a.name, v),
            None => self.flag(&a.name),
        }
    }

    /// A value attribute: `a=<name>:<value>`.
    pub fn attribute(&mut self, name: &str, value: impl fmt::Display) -> &mut Writer {
        let _ = write!(self.out, "a={name}:{value}\r\n");
        self
    }

    /// `a=group:BUNDLE <mids>` (RFC 8843).
    pub fn bundle<S: Borrow<str>>(&mut self, mids: &[S]) -> &mut Writer {
        self.attribute("group", format_args!("BUNDLE {}", mids.join(" ")))
    }

    /// `a=msid-semantic: WMS`, with ` *` when `any` (every stream id may appear), spelled with
    /// the space after the colon as Chrome writes it.
    pub fn msid_semantic(&mut self, any: bool) -> &mut Writer {
        self.out.push_str(if any {
            "a=msid-semantic: WMS *\r\n"
        } else {
            "a=msid-semantic: WMS\r\n"
        });
        self
    }

    /// `m=<media> <port> <protocol> <formats>`.
    fn media_line<F: fmt::Display>(
        &mut self,
        media: &str,
        port: u16,
        protocol: &str,
        formats: impl IntoIterator<Item = F>,
    ) -> &mut Writer {
        let _ = write!(self.out, "m={media} {port} {protocol}");
        for f in formats {
            let _ = write!(self.out, " {f}");
        }
        self.out.push_str("\r\n");
        self
    }

    /// `c=IN IP4 <address>` or `c=IN IP6 <address>`.
    fn connection(&mut self, address: IpAddr) -> &mut Writer {
        let kind = if address.is_ipv4() { "IP4" } else { "IP6" };
        let _ = write!(self.out, "c=IN {kind} {address}\r\n");
        self
    }

    /// The answer to an `offered` m-line we decline (RFC 3264 §6): port 0 with the offered
    /// media, protocol and first format, the mid, `a=inactive`.
    pub fn rejected(&mut self, offered: &MediaDescription, mid: &str) -> &mut Writer {
        let format = offered.formats.first().map(String::as_str).unwrap_or("0");
        self.media_line(&offered.media, 0, &offered.protocol, [format])
            .connection(Ipv4Addr::UNSPECIFIED.into())
            .attribute("mid", mid)
            .flag("inactive")
    }

    /// The opening lines of an accepted media section (see [`MediaSection`]).
    pub fn media(&mut self, s: &MediaSection<'_>) -> &mut Writer {
        self.media_line(s.media, s.port, s.protocol, s.payload_types)
            .connection(s.address)
            .attribute("mid", s.mid)
            .attribute("ice-ufrag", &s.ice.ufrag)
            .attribute("ice-pwd", &s.ice.pwd)
            .attribute("fingerprint", s.fingerprint)
            .attribute("setup", s.setup)
            .flag(s.direction.as_str())
            .flag("rtcp-mux")
    }

    /// The opening lines of an accepted data channel section (RFC 8841): `m=application <port>
    /// UDP/DTLS/SCTP webrtc-datachannel`, `c=`, the mid and transport as in [`media`](Self::media),
    /// `a=sctp-port` and `a=max-message-size` (what we accept in one message).
    pub fn data_section(
        &mut self,
        s: &MediaSection<'_>,
        sctp_port: u16,
        max_message_size: u32,
    ) -> &mut Writer {
        self.media_line("application", s.port, DATA_PROTOCOL, [DATA_FORMAT])
            .connection(s.address)
            .attribute("mid", s.mid)
            .attribute("ice-ufrag", &s.ice.ufrag)
            .attribute("ice-pwd", &s.ice.pwd)
            .attribute("fingerprint", s.fingerprint)
            .attribute("setup", s.setup)
            .attribute("sctp-port", sctp_port)
            .attribute("max-message-size", max_message_size)
    }

    /// `a=rtpmap:<pt> <name>/<clock rate>[/<channels>]` (RFC 8866 §6.6); channels are given
    /// for audio only.
    pub fn rtpmap(
        &mut self,
        pt: u8,
        name: &str,
        clock_rate: u32,
        channels: Option<u8>,
    ) -> &mut Writer {
        let _ = write!(self.out, "a=rtpmap:{pt} {name}/{clock_rate}");
        if let Some(c) = channels {
            let _ = write!(self.out, "/{c}");
        }
        self.out.push_str("\r\n");
        self
    }

    /// `a=fmtp:<pt> <parameters>`.
    pub fn fmtp(&mut self, pt: u8, parameters: &str) -> &mut Writer {
        let _ = write!(self.out, "a=fmtp:{pt} {parameters}\r\n");
        self
    }

    /// `a=rtcp-fb:<pt> <feedback>` (RFC 4585 §4.2).
    pub fn rtcp_fb(&mut self, pt: u8, feedback: &str) -> &mut Writer {
        let _ = write!(self.out, "a=rtcp-fb:{pt} {feedback}\r\n");
        self
    }

    /// `a=extmap:<id> <uri>` (RFC 8285 §8).
    pub fn extmap(&mut self, id: u8, uri: &str) -> &mut Writer {
        let _ = write!(self.out, "a=extmap:{id} {uri}\r\n");
        self
    }

    /// The track sent on this section: `a=msid:<stream> <track>` (RFC 8830) and the SSRC's
    /// `cname` and `msid` (RFC 5576), which older receivers still read.
    pub fn track(
        &mut self,
        stream_id: &str,
        track_id: &str,
        ssrc: u32,
        cname: &str,
    ) -> &mut Writer {
        let _ = write!(self.out, "a=msid:{stream_id} {track_id}\r\n");
        self.ssrc_lines(ssrc, cname, stream_id, track_id)
    }

    /// A track sent with a retransmission stream (RFC 4588 §8.3): the `a=msid`, then
    /// `a=ssrc-group:FID <ssrc> <rtx_ssrc>` (RFC 5576 §4.2) and each SSRC's `cname` and `msid`.
    pub fn repaired_track(
        &mut self,
        stream_id: &str,
        track_id: &str,
        ssrc: u32,
        rtx_ssrc: u32,
        cname: &str,
    ) -> &mut Writer {
        let _ = write!(
            self.out,
            "a=msid:{stream_id} {track_id}\r\na=ssrc-group:FID {ssrc} {rtx_ssrc}\r\n"
        );
        self.ssrc_lines(ssrc, cname, stream_id, track_id)
            .ssrc_lines(rtx_ssrc, cname, stream_id, track_id)
    }

    /// `a=ssrc:<ssrc> cname:<cname>` and `a=ssrc:<ssrc> msid:<stream> <track>` (RFC 5576 §4.1).
    fn ssrc_lines(
        &mut self,
        ssrc: u32,
        cname: &str,
        stream_id: &str,
        track_id: &str,
    ) -> &mut Writer {
        let _ = write!(
            self.out,
            "a=ssrc:{ssrc} cname:{cname}\r\na=ssrc:{ssrc} msid:{stream_id} {track_id}\r\n"
        );
        self
    }

    /// RID-based simulcast we receive (RFC 8853 §5.3): `a=rid:<rid> recv` for each layer,
    /// then `a=simulcast:recv <rid>;<rid>;...`.
    pub fn simulcast_receive(&mut self, rids: &[String]) -> &mut Writer {
        for rid in rids {
            self.attribute("rid", format_args!("{rid} recv"));
        }
        self.attribute("simulcast", format_args!("recv {}", rids.join(";")))
    }

    /// One UDP host candidate per address, with `tcp` a passive TCP one (RFC 6544) at the same
    /// address and port, then `a=end-of-candidates`: we never trickle.
    pub fn host_candidates(&mut self, candidates: &[SocketAddr], tcp: bool) -> &mut Writer {
        let n = candidates.len();
        for (i, c) in candidates.iter().enumerate() {
            // Host candidate priority (RFC 8445 §5.1.2.1): type preference 126, local preference
            // falling with each address, component 1.
            let priority = (126u32 << 24) | ((65535 - i as u32) << 8) | 255;
            let _ = write!(
                self.out,
                "a=candidate:{} 1 udp {priority} {} {} typ host\r\n",
                i + 1,
                c.ip(),
                c.port()
            );
        }
        for (i, c) in candidates.iter().enumerate().filter(|_| tcp) {
            // TCP below every UDP candidate (RFC 6544 section 4.2): type preference 90, local
            // preference with the passive direction's preference (4) in its top bits.
            let local = (4u32 << 13) | (8191 - i as u32);
            let priority = (90u32 << 24) | (local << 8) | 255;
            let _ = write!(
                self.out,
                "a=candidate:{} 1 tcp {priority} {} {} typ host tcptype passive\r\n",
                n + i + 1,
                c.ip(),
                c.port()
            );
        }
        self.flag("end-of-candidates")
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }
}

impl MediaDescription {
    fn attribute(&self, name: &str) -> Option<&str> {
        find_attr(&self.attributes, name)
    }

    /// Whether this is a data channel m-line (RFC 8841 §4: `m=application ...
    /// UDP/DTLS/SCTP webrtc-datachannel`, or TCP/DTLS/SCTP).
    pub fn is_data_channel(&self) -> bool {
        self.media == "application"
            && self.protocol.ends_with("DTLS/SCTP")
            && self.formats.iter().any(|f| f == DATA_FORMAT)
    }

    /// `a=max-message-size` (RFC 8841 §6): the largest message the peer accepts; 0 means no
    /// limit, which we read as our own largest.
    pub fn max_message_size(&self) -> Option<u32> {
        let v: u64 = self.attribute("max-message-size")?.trim().parse().ok()?;
        Some(if v == 0 {
            u32::MAX
        } else {
            u32::try_from(v).unwrap_or(u32::MAX)
        })
    }

    /// The values of every `a=<name>:<value>`, in order.
    pub(crate) fn attributes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.name == name)
            .filter_map(|a| a.value.as_deref())
    }

    fn direction(&self) -> Direction {
        for a in &self.attributes {
            match a.name.as_str() {
                "sendrecv" => return Direction::SendRecv,
                "sendonly" => return Direction::SendOnly,
                "recvonly" => return Direction::RecvOnly,
                "inactive" => return Direction::Inactive,
                _ => {}
            }
        }
        Direction::SendRecv
    }

    pub(crate) fn mid(&self) -> Option<&str> {
        self.attribute("mid")
    }

    /// The offered codecs in format order, with their fmtp and feedback.
    fn codecs(&self) -> Vec<OfferedCodec<'_>> {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| {
                let prefix = format!("{pt} ");
                let rtpmap = self
                    .attributes("rtpmap")
                    .find_map(|v| v.strip_prefix(&prefix))?;
                let mut parts = rtpmap.trim().split('/');
                let name = parts.next()?;
                let clock_rate = parts.next()?.parse().ok()?;
                let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                let fmtp = self
                    .attributes("fmtp")
                    .find_map(|v| v.strip_prefix(&prefix))
                    .map(str::trim);
                let feedback = self
                    .attributes("rtcp-fb")
                    .filter_map(|v| v.strip_prefix(&prefix).or_else(|| v.strip_prefix("* ")))
                    .map(str::trim)
                    .collect();
                Some(OfferedCodec {
                    pt,
                    name,
                    clock_rate,
                    channels,
                    fmtp,
                    feedback,
                })
            })
            .collect()
    }

    /// The id of the MID header extension, if offered with a one-byte id.
    pub(crate) fn mid_extension(&self) -> Option<u8> {
        self.extension(MID_URI)
    }

    /// The id of header extension `uri`, if offered with a one-byte id (1..=14, RFC 8285
    /// §4.2), the form we write.
    pub(crate) fn extension(&self, uri: &str) -> Option<u8> {
        self.attributes("extmap").find_map(|v| {
            let (id, offered) = v.split_once(' ')?;
            (offered.split_ascii_whitespace().next()? == uri).then_some(())?;
            id.split('/')
                .next()?
                .parse::<u8>()
                .ok()
                .filter(|id| (1..=14).contains(id))
        })
    }

    /// The rids of RID-based simulcast offered for sending (RFC 8853 `a=simulcast:send`, each
    /// declared by `a=rid:<rid> send`, RFC 8851), in the offer's order, which we take as lowest
    /// layer first (as Switchyard's SDK and mediasoup-client list them). Alternatives
    /// (`a,b`) keep their first rid; a paused rid (`~a`) is kept, since it may be resumed.
    /// Empty when simulcast is not offered, is malformed, or names more than [`MAX_LAYERS`].
    fn simulcast_rids(&self) -> Vec<String> {
        let declared: Vec<&str> = self
            .attributes("rid")
            .filter_map(|v| {
                let mut parts = v.split_ascii_whitespace();
                let (rid, dir) = (parts.next()?, parts.next()?);
                (dir == "send").then_some(rid)
            })
            .collect();
        let Some(list) = self
            .attributes("simulcast")
            .find_map(|v| v.trim().strip_prefix("send "))
        else {
            return Vec::new();
        };
        let rids: Vec<String> = list
            .trim()
            .split(';')
            .filter_map(|alternatives| alternatives.split(',').next())
            .map(|rid| rid.trim().trim_start_matches('~'))
            .filter(|rid| declared.contains(rid))
            .map(str::to_string)
            .collect();
        let valid = rids.iter().all(|r| {
            (1..=16).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if rids.len() < 2 || rids.len() > MAX_LAYERS || !valid {
            return Vec::new();
        }
        rids
    }

    /// The first `a=ssrc` that is not a retransmission (second member of an FID group).
    fn primary_ssrc(&self) -> Option<u32> {
        let repairs: Vec<u32> = self
            .attributes("ssrc-group")
            .filter_map(|v| v.strip_prefix("FID "))
            .filter_map(|v| v.split_ascii_whitespace().nth(1)?.parse().ok())
            .collect();
        self.attributes("ssrc")
            .filter_map(|v| v.split_ascii_whitespace().next()?.parse::<u32>().ok())
            .find(|s| !repairs.contains(s))
    }
}

/// A codec line of an offered m-line.
#[derive(Debug, Clone)]
struct OfferedCodec<'a> {
    pt: u8,
    name: &'a str,
    clock_rate: u32,
    channels: u8,
    fmtp: Option<&'a str>,
    feedback: Vec<&'a str>,
}

impl OfferedCodec<'_> {
    fn codec(&self) -> Option<Codec> {
        let codec = Codec::from_name(self.name)?;
        let ok = match codec {
            Codec::Opus => self.clock_rate == 48_000 && self.channels == 2,
            _ => self.clock_rate == 90_000,
        };
        ok.then_some(codec)
    }

    fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp?.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }

    fn has_feedback(&self, fb: &str) -> bool {
        self.feedback.iter().any(|f| f.eq_ignore_ascii_case(fb))
    }

    /// The codec as answered. `transport_cc` says whether the m-line offered the
    /// transport-wide sequence number extension: transport-cc feedback needs both, and a peer
    /// that takes it gets no REMB from us (its own estimator works from our feedback).
    fn negotiated(&self, codec: Codec, remb: bool, transport_cc: bool) -> NegotiatedCodec {
        let transport_cc = transport_cc && self.has_feedback("transport-cc");
        NegotiatedCodec {
            codec,
            payload_type: self.pt,
            clock_rate: self.clock_rate,
            channels: self.channels,
            fmtp: self.fmtp.map(str::to_string),
            nack: self.has_feedback("nack"),
            pli: self.has_feedback("nack pli"),
            fir: self.has_feedback("ccm fir"),
            remb: remb && !transport_cc && self.has_feedback("goog-remb"),
            transport_cc,
            red: None,
        }
    }
}

/// H264 packetization-mode (default 0) and profile_idc (first byte of profile-level-id,
/// default 0x42 baseline) from an fmtp line.
fn h264_params(fmtp: Option<&str>) -> (u8, u8) {
    let param = |key: &str| {
        fmtp?.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    };
    let mode = param("packetization-mode")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let profile = param("profile-level-id")
        .and_then(|p| p.get(..2))
        .and_then(|p| u8::from_str_radix(p, 16).ok())
        .unwrap_or(0x42);
    (mode, profile)
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
        let description = SessionDescription::parse(text)?;
        if description.media.is_empty() {
            return Err(fail("the offer has no m-lines"));
        }
        let bundle: Vec<&str> = description
            .attributes
            .iter()
            .filter(|a| a.name == "group")
            .filter_map(|a| a.value.as_deref()?.strip_prefix("BUNDLE"))
            .flat_map(str::split_ascii_whitespace)
            .collect();
        let mut media = Vec::with_capacity(description.media.len());
        let mut transport: Option<(Credentials, Fingerprint)> = None;
        let accepted = description.media.iter().filter(|m| m.port != 0).count();
        for (i, m) in description.media.iter().enumerate() {
            let mid = m
                .mid()
                .ok_or_else(|| fail(format!("m-line {} ({}) has no a=mid", i + 1, m.media)))?;
            let kind = match m.media.as_str() {
                "audio" => Some(MediaKind::Audio),
                "video" => Some(MediaKind::Video),
                _ => None,
            };
            media.push(OfferedMedia {
                mid: mid.to_string(),
                kind,
                direction: m.direction(),
            });
            if m.port == 0 {
                continue;
            }
            if accepted > 1 && !bundle.contains(&mid) {
                return Err(fail(format!(
                    "m-line {mid} is not in a=group:BUNDLE; Switchyard needs every m-line bundled on one transport"
                )));
            }
            if kind.is_some() {
                if !m.protocol.contains("RTP/SAVP") {
                    return Err(fail(format!(
                        "m-line {mid} uses {}; expected UDP/TLS/RTP/SAVPF",
                        m.protocol
                    )));
                }
                if m.attribute("rtcp-mux").is_none() {
                    return Err(fail(format!(
                        "m-line {mid} lacks a=rtcp-mux, which Switchyard requires"
                    )));
                }
            }
            let attr = |name: &str| m.attribute(name).or_else(|| description.attribute(name));
            let (Some(ufrag), Some(pwd)) = (attr("ice-ufrag"), attr("ice-pwd")) else {
                return Err(fail(format!("m-line {mid} has no a=ice-ufrag/a=ice-pwd")));
            };
            let fingerprint: Fingerprint = attr("fingerprint")
                .ok_or_else(|| fail(format!("m-line {mid} has no a=fingerprint")))?
                .parse()
                .map_err(|e: crate::dtls::Error| fail(format!("m-line {mid}: {e}")))?;
            match attr("setup").unwrap_or("actpass") {
                "actpass" | "active" => {}
                "passive" => {
                    return Err(fail(format!(
                        "m-line {mid} has a=setup:passive; Switchyard is the DTLS server, so offer actpass or active"
                    )));
                }
                other => return Err(fail(format!("m-line {mid} has an unknown a=setup:{other}"))),
            }
            let ice = Credentials {
                ufrag: ufrag.to_string(),
                pwd: pwd.to_string(),
            };
            match &transport {
                None => transport = Some((ice, fingerprint)),
                Some((first_ice, first_fp)) => {
                    if *first_ice != ice || *first_fp != fingerprint {
                        return Err(fail(format!(
                            "m-line {mid} has its own ICE credentials or fingerprint; bundled m-lines must share one transport"
                        )));
                    }
                }
            }
        }
        let (ice, fingerprint) =
            transport.ok_or_else(|| fail("every m-line in the offer is rejected (port 0)"))?;
        Ok(Offer {
            description,
            ice,
            fingerprint,
            media,
        })
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
    /// The SSRC of our retransmission stream, used if the subscriber offers `rtx` for the
    /// chosen codec with NACK (RFC 4588); `None` to resend NACKed packets as they were.
    pub rtx_ssrc: Option<u32>,
    /// The producer sends RED (Opus with redundancy), which goes through as is to a
    /// subscriber that offers RED around the same codec.
    pub red: bool,
}

/// What the server does with one offered m-line, in offer order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRole {
    /// The client publishes here; we answer recvonly.
    Receive,
    /// We send this track here; we answer sendonly.
    Send(SendTrack),
    /// Both at once on a sendrecv m-line (an MCU participant): the client publishes here and
    /// receives this track (the mix) in the codec chosen for what it sends; we answer sendrecv.
    Mix(SendTrack),
    /// Declined (port 0).
    Reject,
    /// Data channels (an `m=application ... webrtc-datachannel` line): SCTP over our DTLS.
    Data,
}

/// Our side of the answer.
#[derive(Debug, Clone)]
pub struct LocalParams<'a> {
    pub ice: &'a Credentials,
    pub fingerprint: &'a Fingerprint,
    /// Host candidates to announce (the worker's port on each announced address).
    pub candidates: &'a [SocketAddr],
    /// Whether each candidate's address and port also take ICE-TCP connections.
    pub tcp: bool,
    /// Codecs the channel allows; offered codecs outside this list are declined.
    pub allowed_codecs: &'a [Codec],
    /// The `o=` session id (see [`Writer::new`]): random in production, fixed in tests.
    pub session_id: u64,
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
    /// Transport-wide congestion control feedback (with `Extensions::transport_cc`).
    pub transport_cc: bool,
    /// Opus only: the client's RED payload type (RFC 2198, `red/48000/2` with
    /// `a=fmtp:<red> <pt>/<pt>`), when RED is negotiated: always where it publishes and offers
    /// RED, and where it subscribes to a producer that sends RED and offers RED too.
    pub red: Option<u8>,
}

/// Header extension ids accepted in the answer (RFC 8285).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions {
    /// urn:ietf:params:rtp-hdrext:sdes:mid
    pub mid: Option<u8>,
    /// urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id, taken only with simulcast.
    pub rid: Option<u8>,
    /// urn:ietf:params:rtp-hdrext:ssrc-audio-level, accepted on audio m-lines a client
    /// publishes (we read it; what we send carries no level).
    pub audio_level: Option<u8>,
    /// The transport-wide sequence number, with transport-cc feedback.
    pub transport_cc: Option<u8>,
    /// The dependency descriptor (AV1 RTP specification appendix A), taken on video m-lines
    /// whose codec is VP9 or AV1, those that can be sent with SVC: the router drops their
    /// layers per subscriber from it (`crate::svc`).
    pub dependency_descriptor: Option<u8>,
}

/// The outcome for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// The client publishes `codec`; `ssrc` from `a=ssrc` (the primary one), if signalled.
    /// With simulcast, `rids` names its layers, lowest first (and `ssrc` is `None`: each
    /// layer's SSRC is learned from the rid extension of its first packets).
    Receive {
        mid: String,
        kind: MediaKind,
        codec: NegotiatedCodec,
        extensions: Extensions,
        ssrc: Option<u32>,
        rids: Vec<String>,
    },
    /// We send `SendTrack` as `codec` (the client's payload type for the producer's codec),
    /// with retransmissions on `rtx` when both sides take RTX.
    Send {
        mid: String,
        kind: MediaKind,
        codec: NegotiatedCodec,
        extensions: Extensions,
        ssrc: u32,
        rtx: Option<Rtx>,
    },
    /// Declined, with the reason (e.g. "no codec in common").
    Rejected { mid: String, reason: String },
    /// Data channels accepted; `max_message_size` is the peer's `a=max-message-size`.
    Data {
        mid: String,
        max_message_size: Option<u32>,
    },
}

/// A retransmission stream we send (RFC 4588): the client's `rtx` payload type whose `apt` is
/// the chosen codec's, and our SSRC for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtx {
    pub payload_type: u8,
    pub ssrc: u32,
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
    if roles.len() != offer.description.media.len() {
        return Err(fail(format!(
            "{} roles for {} m-lines",
            roles.len(),
            offer.description.media.len()
        )));
    }
    let first = local
        .candidates
        .first()
        .ok_or_else(|| fail("no local candidates"))?;
    let media: Vec<Negotiated> = offer
        .description
        .media
        .iter()
        .zip(&offer.media)
        .zip(roles)
        .map(|((m, offered), role)| negotiate(m, offered, local, role))
        .collect();
    let bundle: Vec<&str> = media
        .iter()
        .filter_map(|n| match n {
            Negotiated::Receive { mid, .. }
            | Negotiated::Send { mid, .. }
            | Negotiated::Data { mid, .. } => Some(mid.as_str()),
            Negotiated::Rejected { .. } => None,
        })
        .collect();
    let mut w = Writer::new(local.session_id);
    w.flag("ice-lite");
    if !bundle.is_empty() {
        w.bundle(&bundle);
    }
    if offer.description.attribute("extmap-allow-mixed").is_some() {
        w.flag("extmap-allow-mixed");
    }
    w.msid_semantic(true);
    for ((m, outcome), role) in offer.description.media.iter().zip(&media).zip(roles) {
        let (mid, direction, codec, extensions, rtx) = match outcome {
            Negotiated::Rejected { mid, .. } => {
                w.rejected(m, mid);
                continue;
            }
            Negotiated::Data { mid, .. } => {
                w.data_section(
                    &MediaSection {
                        media: "application",
                        port: first.port(),
                        protocol: DATA_PROTOCOL,
                        payload_types: &[],
                        address: first.ip(),
                        mid,
                        ice: local.ice,
                        fingerprint: local.fingerprint,
                        setup: "passive",
                        direction: Direction::SendRecv,
                    },
                    crate::datachannel::SCTP_PORT,
                    crate::datachannel::MAX_MESSAGE_SIZE,
                );
                w.host_candidates(local.candidates, local.tcp);
                continue;
            }
            Negotiated::Receive {
                mid,
                codec,
                extensions,
                ..
            } => {
                let direction = match role {
                    MediaRole::Mix(_) => Direction::SendRecv,
                    _ => Direction::RecvOnly,
                };
                (mid, direction, codec, extensions, None)
            }
            Negotiated::Send {
                mid,
                codec,
                extensions,
                rtx,
                ..
            } => (mid, Direction::SendOnly, codec, extensions, *rtx),
        };
        let pt = codec.payload_type;
        // RED first where we receive it, so that the publisher sends it (its send codec is
        // the first of the answer's it supports); after the codec where we send it.
        let formats: Vec<u8> = match (direction, codec.red) {
            (Direction::RecvOnly | Direction::SendRecv, Some(red)) => vec![red, pt],
            (_, red) => [pt].into_iter().chain(red).collect(),
        };
        let formats: Vec<u8> = formats
            .into_iter()
            .chain(rtx.map(|r| r.payload_type))
            .collect();
        w.media(&MediaSection {
            media: &m.media,
            port: first.port(),
            protocol: &m.protocol,
            payload_types: &formats,
            address: first.ip(),
            mid,
            ice: local.ice,
            fingerprint: local.fingerprint,
            setup: "passive",
            direction,
        });
        if m.attribute("rtcp-rsize").is_some() {
            w.flag("rtcp-rsize");
        }
        let channels = (codec.codec.kind() == MediaKind::Audio).then_some(codec.channels);
        w.rtpmap(pt, codec.codec.name(), codec.clock_rate, channels);
        if let Some(fmtp) = &codec.fmtp {
            w.fmtp(pt, fmtp);
        }
        for (on, fb) in [
            (codec.nack, "nack"),
            (codec.pli, "nack pli"),
            (codec.fir, "ccm fir"),
            (codec.remb, "goog-remb"),
            (codec.transport_cc, "transport-cc"),
        ] {
            if on {
                w.rtcp_fb(pt, fb);
            }
        }
        if let Some(red) = codec.red {
            w.rtpmap(red, "red", codec.clock_rate, channels)
                .fmtp(red, &format!("{pt}/{pt}"));
        }
        if let Some(r) = rtx {
            w.rtpmap(r.payload_type, "rtx", codec.clock_rate, None)
                .fmtp(r.payload_type, &format!("apt={pt}"));
        }
        if let Some(id) = extensions.mid {
            w.extmap(id, MID_URI);
        }
        if let Some(id) = extensions.rid {
            w.extmap(id, RID_URI);
        }
        if let Some(id) = extensions.audio_level {
            w.extmap(id, AUDIO_LEVEL_URI);
        }
        if let Some(id) = extensions.transport_cc {
            w.extmap(id, TWCC_URI);
        }
        if let Some(id) = extensions.dependency_descriptor {
            w.extmap(id, crate::dd::URI);
        }
        if let Negotiated::Receive { rids, .. } = outcome
            && !rids.is_empty()
        {
            w.simulcast_receive(rids);
        }
        if let MediaRole::Send(t) | MediaRole::Mix(t) = role {
            match rtx {
                Some(r) => w.repaired_track(&t.stream_id, &t.track_id, t.ssrc, r.ssrc, &t.cname),
                None => w.track(&t.stream_id, &t.track_id, t.ssrc, &t.cname),
            };
        }
        w.host_candidates(local.candidates, local.tcp);
    }
    Ok(Answer {
        sdp: w.finish(),
        media,
    })
}

/// Decides one m-line.
fn negotiate(
    m: &MediaDescription,
    offered: &OfferedMedia,
    local: &LocalParams<'_>,
    role: &MediaRole,
) -> Negotiated {
    let mid = offered.mid.clone();
    let reject = |reason: String| Negotiated::Rejected {
        mid: offered.mid.clone(),
        reason,
    };
    if *role == MediaRole::Data {
        return if m.port == 0 {
            reject("rejected in the offer".into())
        } else if !m.is_data_channel() {
            reject(format!(
                "m-line {mid} is not a data channel ({} {})",
                m.protocol,
                m.formats.join(" ")
            ))
        } else {
            Negotiated::Data {
                mid,
                max_message_size: m.max_message_size(),
            }
        };
    }
    let Some(kind) = offered.kind else {
        return reject(format!("{} m-lines are not supported", m.media));
    };
    if m.port == 0 {
        return reject("rejected in the offer".into());
    }
    let mut extensions = Extensions {
        mid: m.mid_extension(),
        rid: None,
        audio_level: (kind == MediaKind::Audio
            && matches!(role, MediaRole::Receive | MediaRole::Mix(_)))
        .then(|| m.extension(AUDIO_LEVEL_URI))
        .flatten(),
        transport_cc: None,
        dependency_descriptor: None,
    };
    let twcc_ext = m.extension(TWCC_URI);
    // The descriptor only matters for codecs sent with SVC.
    let dd_ext = |codec: Codec| {
        matches!(codec, Codec::Vp9 | Codec::Av1)
            .then(|| m.extension(crate::dd::URI))
            .flatten()
    };
    let codecs = m.codecs();
    match role {
        MediaRole::Reject | MediaRole::Data => reject("nothing to send or receive here".into()),
        MediaRole::Receive | MediaRole::Mix(_) => {
            if !matches!(offered.direction, Direction::SendOnly | Direction::SendRecv) {
                return reject(format!(
                    "m-line {mid} offers nothing to publish (it is not sendonly or sendrecv)"
                ));
            }
            if matches!(role, MediaRole::Mix(_)) && offered.direction != Direction::SendRecv {
                return reject(format!(
                    "m-line {mid} is not sendrecv: a mixed connection sends and receives"
                ));
            }
            let usable: Vec<(&OfferedCodec<'_>, Codec)> = codecs
                .iter()
                .filter_map(|c| Some((c, c.codec()?)))
                .filter(|(_, codec)| codec.kind() == kind && local.allowed_codecs.contains(codec))
                .collect();
            let has_h264_mode1 = usable
                .iter()
                .any(|(c, codec)| *codec == Codec::H264 && h264_params(c.fmtp).0 == 1);
            let chosen = usable.iter().find(|(c, codec)| {
                *codec != Codec::H264 || !has_h264_mode1 || h264_params(c.fmtp).0 == 1
            });
            // Simulcast needs the rid extension to tell the layers apart.
            let rid_ext = m.extension(RID_URI);
            let rids = match rid_ext {
                Some(_) if kind == MediaKind::Video => m.simulcast_rids(),
                _ => Vec::new(),
            };
            if !rids.is_empty() {
                extensions.rid = rid_ext;
            }
            let chosen = chosen.map(|(c, codec)| {
                let mut n = c.negotiated(*codec, true, twcc_ext.is_some());
                if *codec == Codec::Opus {
                    n.red = red_payload_type(&codecs, c.pt);
                }
                n
            });
            match chosen {
                Some(codec) => Negotiated::Receive {
                    mid,
                    kind,
                    extensions: Extensions {
                        transport_cc: twcc_ext.filter(|_| codec.transport_cc),
                        dependency_descriptor: dd_ext(codec.codec),
                        ..extensions
                    },
                    codec,
                    ssrc: if rids.is_empty() {
                        m.primary_ssrc()
                    } else {
                        None
                    },
                    rids,
                },
                None => {
                    let names: Vec<&str> = codecs.iter().map(|c| c.name).collect();
                    reject(format!(
                        "no supported {kind} codec offered (offered: {})",
                        names.join(", ")
                    ))
                }
            }
        }
        MediaRole::Send(track) => {
            if !matches!(offered.direction, Direction::RecvOnly | Direction::SendRecv) {
                return reject(format!(
                    "m-line {mid} does not receive (it is not recvonly or sendrecv)"
                ));
            }
            if track.codec.kind() != kind {
                return reject(format!(
                    "a {} track cannot go on a {kind} m-line",
                    track.codec.kind()
                ));
            }
            let mut candidates = codecs.iter().filter(|c| c.codec() == Some(track.codec));
            let chosen = match track.codec {
                Codec::H264 => {
                    let wanted = h264_params(track.fmtp.as_deref());
                    let compatible: Vec<&OfferedCodec<'_>> = candidates
                        .filter(|c| h264_params(c.fmtp) == wanted)
                        .collect();
                    let level = fmtp_value(track.fmtp.as_deref(), "profile-level-id");
                    let exact = compatible.iter().find(|c| {
                        let offered = c.fmtp_param("profile-level-id");
                        offered.is_some()
                            && offered.map(str::to_ascii_lowercase)
                                == level.map(str::to_ascii_lowercase)
                    });
                    exact.or(compatible.first()).copied()
                }
                Codec::Vp9 => {
                    let want = fmtp_value(track.fmtp.as_deref(), "profile-id").unwrap_or("0");
                    candidates.find(|c| c.fmtp_param("profile-id").unwrap_or("0") == want)
                }
                _ => candidates.next(),
            };
            // RTX only where the subscriber NACKs: it asks for what the RTX stream carries.
            let rtx = chosen
                .zip(track.rtx_ssrc)
                .filter(|(c, _)| c.has_feedback("nack"))
                .and_then(|(c, ssrc)| {
                    let payload_type = rtx_payload_type(&codecs, c.pt)?;
                    Some(Rtx { payload_type, ssrc })
                });
            let chosen_codec = chosen.map(|c| {
                let mut n = c.negotiated(track.codec, false, twcc_ext.is_some());
                if track.red && track.codec == Codec::Opus {
                    n.red = red_payload_type(&codecs, c.pt);
                }
                n
            });
            match chosen_codec {
                Some(codec) => Negotiated::Send {
                    mid,
                    kind,
                    extensions: Extensions {
                        transport_cc: twcc_ext.filter(|_| codec.transport_cc),
                        dependency_descriptor: dd_ext(codec.codec),
                        ..extensions
                    },
                    codec,
                    ssrc: track.ssrc,
                    rtx,
                },
                None => reject(format!("subscriber cannot receive {}", track.codec)),
            }
        }
    }
}

/// The offered `rtx` payload type (RFC 4588 §8.1) whose `apt` is `pt`, at `pt`'s clock rate.
fn rtx_payload_type(codecs: &[OfferedCodec<'_>], pt: u8) -> Option<u8> {
    let clock_rate = codecs.iter().find(|c| c.pt == pt)?.clock_rate;
    codecs
        .iter()
        .find(|c| {
            c.name.eq_ignore_ascii_case("rtx")
                && c.clock_rate == clock_rate
                && c.fmtp_param("apt").and_then(|a| a.parse::<u8>().ok()) == Some(pt)
        })
        .map(|c| c.pt)
}

/// The offered RED payload type (RFC 2198 §5, `red/48000/2`) whose blocks are all `pt`
/// (`a=fmtp:<red> <pt>/<pt>`, as browsers offer it for Opus).
fn red_payload_type(codecs: &[OfferedCodec<'_>], pt: u8) -> Option<u8> {
    codecs
        .iter()
        .find(|c| {
            c.name.eq_ignore_ascii_case("red")
                && c.clock_rate == 48_000
                && c.channels == 2
                && c.fmtp.is_some_and(|f| {
                    f.split('/')
                        .all(|b| b.trim().parse::<u8>().ok() == Some(pt))
                })
        })
        .map(|c| c.pt)
}

fn fmtp_value<'a>(fmtp: Option<&'a str>, key: &str) -> Option<&'a str> {
    fmtp?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha-256 3B:36:0D:9C:7F:95:3B:48:1D:0B:46:8A:9C:A4:5F:1D:1D:39:9F:B5:45:29:93:84:63:52:8A:09:AB:43:60:B1";

    fn lines(s: &str) -> String {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\r\n"))
            .collect()
    }

    /// Chrome publishing camera and microphone (sendonly), abridged but in Chrome's shape.
    fn chrome_publish() -> String {
        lines(&format!(
            "v=0
            o=- 4611731400430051336 2 IN IP4 127.0.0.1
            s=-
            t=0 0
            a=group:BUNDLE 0 1
            a=extmap-allow-mixed
            a=msid-semantic: WMS stream
            m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
            c=IN IP4 0.0.0.0
            a=rtcp:9 IN IP4 0.0.0.0
            a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host generation 0
            a=ice-ufrag:aBcD
            a=ice-pwd:0123456789abcdefghijklmn
            a=ice-options:trickle
            a=fingerprint:{FP}
            a=setup:actpass
            a=mid:0
            a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
            a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
            a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
            a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
            a=sendonly
            a=msid:stream audio-track
            a=rtcp-mux
            a=rtcp-rsize
            a=rtpmap:111 opus/48000/2
            a=rtcp-fb:111 transport-cc
            a=fmtp:111 minptime=10;useinbandfec=1
            a=rtpmap:63 red/48000/2
            a=fmtp:63 111/111
            a=rtpmap:9 G722/8000
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=rtpmap:13 CN/8000
            a=rtpmap:110 telephone-event/48000
            a=rtpmap:126 telephone-event/8000
            a=ssrc:1001 cname:abc
            a=ssrc:1001 msid:stream audio-track
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 45 46 108 109 127
            c=IN IP4 0.0.0.0
            a=rtcp:9 IN IP4 0.0.0.0
            a=ice-ufrag:aBcD
            a=ice-pwd:0123456789abcdefghijklmn
            a=ice-options:trickle
            a=fingerprint:{FP}
            a=setup:actpass
            a=mid:1
            a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
            a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
            a=extmap:13 urn:3gpp:video-orientation
            a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
            a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
            a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
            a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
            a=sendonly
            a=msid:stream video-track
            a=rtcp-mux
            a=rtcp-rsize
            a=rtpmap:96 VP8/90000
            a=rtcp-fb:96 goog-remb
            a=rtcp-fb:96 transport-cc
            a=rtcp-fb:96 ccm fir
            a=rtcp-fb:96 nack
            a=rtcp-fb:96 nack pli
            a=rtpmap:97 rtx/90000
            a=fmtp:97 apt=96
            a=rtpmap:98 VP9/90000
            a=rtcp-fb:98 nack pli
            a=fmtp:98 profile-id=0
            a=rtpmap:99 rtx/90000
            a=fmtp:99 apt=98
            a=rtpmap:100 VP9/90000
            a=fmtp:100 profile-id=2
            a=rtpmap:101 rtx/90000
            a=fmtp:101 apt=100
            a=rtpmap:102 H264/90000
            a=rtcp-fb:102 nack pli
            a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
            a=rtpmap:103 rtx/90000
            a=fmtp:103 apt=102
            a=rtpmap:104 H264/90000
            a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
            a=rtpmap:105 rtx/90000
            a=fmtp:105 apt=104
            a=rtpmap:106 H264/90000
            a=rtcp-fb:106 nack
            a=rtcp-fb:106 nack pli
            a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
            a=rtpmap:107 rtx/90000
            a=fmtp:107 apt=106
            a=rtpmap:45 AV1/90000
            a=rtpmap:46 rtx/90000
            a=fmtp:46 apt=45
            a=rtpmap:108 red/90000
            a=rtpmap:109 rtx/90000
            a=fmtp:109 apt=108
            a=rtpmap:127 ulpfec/90000
            a=ssrc-group:FID 2002 2003
            a=ssrc:2002 cname:abc
            a=ssrc:2002 msid:stream video-track
            a=ssrc:2003 cname:abc
            a=ssrc:2003 msid:stream video-track"
        ))
    }

    fn chrome_h264_only() -> String {
        let sdp = chrome_publish();
        sdp.replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 45 46 108 109 127",
            "m=video 9 UDP/TLS/RTP/SAVPF 104 105 102 103 106 107",
        )
    }

    fn chrome_subscribe() -> String {
        chrome_publish()
            .replace("a=sendonly", "a=recvonly")
            .lines()
            .filter(|l| !l.starts_with("a=ssrc") && !l.starts_with("a=msid:"))
            .map(|l| format!("{l}\r\n"))
            .collect()
    }

    fn aiortc_offer() -> String {
        lines(&format!(
            "v=0
            o=- 3905235212 3905235212 IN IP4 0.0.0.0
            s=-
            t=0 0
            a=group:BUNDLE 0 1
            a=msid-semantic:WMS *
            m=audio 51029 UDP/TLS/RTP/SAVPF 96 0 8
            c=IN IP4 127.0.0.1
            a=sendrecv
            a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
            a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
            a=mid:0
            a=msid:6d5b 1c4f
            a=rtcp:9 IN IP4 0.0.0.0
            a=rtcp-mux
            a=ssrc:3377 cname:7f2a
            a=rtpmap:96 opus/48000/2
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=candidate:9d 1 udp 2130706431 127.0.0.1 51029 typ host
            a=end-of-candidates
            a=ice-ufrag:Xy9z
            a=ice-pwd:vmW4lGkQYSt7eHhXnIAEaZ
            a=fingerprint:{FP}
            a=setup:actpass
            m=video 51029 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102
            c=IN IP4 127.0.0.1
            a=sendrecv
            a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
            a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
            a=mid:1
            a=msid:6d5b 2c1d
            a=rtcp:9 IN IP4 0.0.0.0
            a=rtcp-mux
            a=ssrc-group:FID 4411 4412
            a=ssrc:4411 cname:7f2a
            a=ssrc:4412 cname:7f2a
            a=rtpmap:97 VP8/90000
            a=rtcp-fb:97 nack
            a=rtcp-fb:97 nack pli
            a=rtcp-fb:97 goog-remb
            a=rtpmap:98 rtx/90000
            a=fmtp:98 apt=97
            a=rtpmap:99 H264/90000
            a=rtcp-fb:99 nack
            a=rtcp-fb:99 nack pli
            a=rtcp-fb:99 goog-remb
            a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
            a=rtpmap:100 rtx/90000
            a=fmtp:100 apt=99
            a=rtpmap:101 H264/90000
            a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
            a=rtpmap:102 rtx/90000
            a=fmtp:102 apt=101
            a=candidate:9d 1 udp 2130706431 127.0.0.1 51029 typ host
            a=end-of-candidates
            a=ice-ufrag:Xy9z
            a=ice-pwd:vmW4lGkQYSt7eHhXnIAEaZ
            a=fingerprint:{FP}
            a=setup:actpass"
        ))
    }

    fn firefox_offer() -> String {
        lines(&format!(
            "v=0
            o=mozilla...THIS_IS_SDPARTA-99.0 7052848360639826063 0 IN IP4 0.0.0.0
            s=-
            t=0 0
            a=fingerprint:{FP}
            a=group:BUNDLE 0 1
            a=ice-options:trickle
            a=msid-semantic:WMS *
            m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101
            c=IN IP4 0.0.0.0
            a=sendonly
            a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
            a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
            a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
            a=ice-pwd:4c1d5e0a6ab7cd3ef12a3b4c5d6e7f80
            a=ice-ufrag:ff01ab22
            a=mid:0
            a=msid:{{s}} {{a}}
            a=rtcp-mux
            a=rtpmap:109 opus/48000/2
            a=rtpmap:9 G722/8000/1
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=rtpmap:101 telephone-event/8000
            a=setup:actpass
            a=ssrc:555 cname:{{c}}
            m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98
            c=IN IP4 0.0.0.0
            a=sendonly
            a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
            a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1
            a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1
            a=fmtp:120 max-fs=12288;max-fr=60
            a=fmtp:124 apt=120
            a=fmtp:121 max-fs=12288;max-fr=60
            a=fmtp:125 apt=121
            a=fmtp:127 apt=126
            a=fmtp:98 apt=97
            a=ice-pwd:4c1d5e0a6ab7cd3ef12a3b4c5d6e7f80
            a=ice-ufrag:ff01ab22
            a=mid:1
            a=msid:{{s}} {{v}}
            a=rtcp-fb:120 nack
            a=rtcp-fb:120 nack pli
            a=rtcp-fb:120 ccm fir
            a=rtcp-fb:120 goog-remb
            a=rtcp-fb:120 transport-cc
            a=rtcp-mux
            a=rtcp-rsize
            a=rtpmap:120 VP8/90000
            a=rtpmap:124 rtx/90000
            a=rtpmap:121 VP9/90000
            a=rtpmap:125 rtx/90000
            a=rtpmap:126 H264/90000
            a=rtpmap:127 rtx/90000
            a=rtpmap:97 H264/90000
            a=rtpmap:98 rtx/90000
            a=setup:actpass
            a=ssrc:777 cname:{{c}}
            a=ssrc:778 cname:{{c}}
            a=ssrc-group:FID 777 778"
        ))
    }

    const ALL: [Codec; 5] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

    fn local<'a>(
        ice: &'a Credentials,
        fp: &'a Fingerprint,
        candidates: &'a [SocketAddr],
    ) -> LocalParams<'a> {
        LocalParams {
            ice,
            fingerprint: fp,
            candidates,
            tcp: false,
            allowed_codecs: &ALL,
            session_id: 4_242,
        }
    }

    fn server() -> (Credentials, Fingerprint, Vec<SocketAddr>) {
        let ice = Credentials {
            ufrag: "srvU".into(),
            pwd: "serverpasswordserverpass".into(),
        };
        (
            ice,
            FP.parse().unwrap(),
            vec!["127.0.0.1:49152".parse().unwrap()],
        )
    }

    fn receive_codec(n: &Negotiated) -> (&NegotiatedCodec, Option<u32>) {
        match n {
            Negotiated::Receive { codec, ssrc, .. } => (codec, *ssrc),
            other => panic!("expected Receive, got {other:?}"),
        }
    }

    #[test]
    fn the_dependency_descriptor_is_taken_for_vp9_and_av1_only() {
        let sdp = chrome_publish().replace(
            "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
            &format!(
                "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\na=extmap:12 {}",
                crate::dd::URI
            ),
        );
        let offer = Offer::parse(&sdp).unwrap();
        let (ice, fp, cands) = server();
        for (allowed, expected) in [
            ([Codec::Opus, Codec::Vp9], Some(12)),
            ([Codec::Opus, Codec::Vp8], None),
        ] {
            let params = LocalParams {
                allowed_codecs: &allowed,
                ..local(&ice, &fp, &cands)
            };
            let a = answer(&offer, &params, &[MediaRole::Receive, MediaRole::Receive]).unwrap();
            let Negotiated::Receive {
                extensions, codec, ..
            } = &a.media[1]
            else {
                panic!()
            };
            assert_eq!(codec.codec, allowed[1]);
            assert_eq!(extensions.dependency_descriptor, expected);
            assert_eq!(
                a.sdp.contains(&format!("a=extmap:12 {}", crate::dd::URI)),
                expected.is_some()
            );
        }
    }

    #[test]
    fn chrome_publish_picks_opus_and_vp8() {
        let offer = Offer::parse(&chrome_publish()).unwrap();
        assert_eq!(offer.ice.ufrag, "aBcD");
        assert_eq!(offer.media.len(), 2);
        assert_eq!(offer.media[1].kind, Some(MediaKind::Video));
        assert_eq!(offer.media[1].direction, Direction::SendOnly);
        let (ice, fp, cands) = server();
        let a = answer(
            &offer,
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        let (audio, audio_ssrc) = receive_codec(&a.media[0]);
        assert_eq!(
            (
                audio.codec,
                audio.payload_type,
                audio.clock_rate,
                audio.channels
            ),
            (Codec::Opus, 111, 48000, 2)
        );
        assert_eq!(audio_ssrc, Some(1001));
        let (video, video_ssrc) = receive_codec(&a.media[1]);
        assert_eq!((video.codec, video.payload_type), (Codec::Vp8, 96));
        // Transport-cc feedback, so no REMB: the browser's own estimator runs on our feedback.
        assert!(video.nack && video.pli && video.fir && video.transport_cc && !video.remb);
        assert!(audio.transport_cc);
        assert_eq!(video_ssrc, Some(2002));
        let Negotiated::Receive { extensions, .. } = &a.media[1] else {
            panic!()
        };
        assert_eq!(
            (extensions.mid, extensions.transport_cc),
            (Some(4), Some(3))
        );
        assert_eq!(extensions.audio_level, None, "a video m-line has no level");
        let Negotiated::Receive { extensions, .. } = &a.media[0] else {
            panic!()
        };
        assert_eq!(extensions.audio_level, Some(1), "the offered id, RFC 6464");

        // The answer parses and says what we decided.
        let parsed = SessionDescription::parse(&a.sdp).unwrap();
        assert_eq!(parsed.attribute("group"), Some("BUNDLE 0 1"));
        assert!(parsed.attribute("ice-lite").is_some());
        let v = &parsed.media[1];
        assert_eq!((v.port, v.formats.clone()), (49152, vec!["96".to_string()]));
        assert_eq!(v.direction(), Direction::RecvOnly);
        assert_eq!(v.attribute("setup"), Some("passive"));
        assert_eq!(v.attribute("ice-ufrag"), Some("srvU"));
        assert_eq!(v.attribute("fingerprint"), Some(FP));
        assert_eq!(v.mid_extension(), Some(4));
        assert_eq!(parsed.media[0].extension(AUDIO_LEVEL_URI), Some(1));
        assert_eq!(v.extension(AUDIO_LEVEL_URI), None);
        assert!(v.attribute("rtcp-rsize").is_some());
        assert!(v.attributes("rtcp-fb").any(|f| f == "96 transport-cc"));
        assert!(v.attributes("rtcp-fb").all(|f| !f.contains("goog-remb")));
        assert_eq!(v.extension(TWCC_URI), Some(3));
        assert!(
            v.attributes("candidate")
                .any(|c| c.contains("127.0.0.1 49152 typ host"))
        );
        assert!(!a.sdp.contains("rtx"));
        assert!(a.sdp.ends_with("\r\n"));
    }

    /// Chrome publishing three-layer simulcast (`sendEncodings` with rids q, h, f): no
    /// `a=ssrc` for video, the rid extensions, `a=rid` and `a=simulcast`.
    fn chrome_simulcast() -> String {
        let video_ssrcs =
            |l: &str| l.starts_with("a=ssrc") && (l.contains("2002") || l.contains("2003"));
        chrome_publish()
            .lines()
            .filter(|l| !video_ssrcs(l))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
            + "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n"
    }

    #[test]
    fn simulcast_is_received_by_rid() {
        let offer = Offer::parse(&chrome_simulcast()).unwrap();
        let (ice, fp, cands) = server();
        let roles = [MediaRole::Receive, MediaRole::Receive];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        let Negotiated::Receive {
            extensions,
            ssrc,
            rids,
            ..
        } = &a.media[1]
        else {
            panic!("{:?}", a.media[1])
        };
        assert_eq!((extensions.rid, *ssrc), (Some(10), None));
        assert_eq!(rids, &["q", "h", "f"]);
        let Negotiated::Receive {
            rids, extensions, ..
        } = &a.media[0]
        else {
            panic!()
        };
        assert!(rids.is_empty() && extensions.rid.is_none());
        let v = &SessionDescription::parse(&a.sdp).unwrap().media[1];
        assert_eq!(v.attribute("simulcast"), Some("recv q;h;f"));
        assert_eq!(
            v.attributes("rid").collect::<Vec<_>>(),
            ["q recv", "h recv", "f recv"]
        );
        assert_eq!(v.extension(RID_URI), Some(10));

        // Paused rids and alternatives keep their first rid; undeclared rids are left out;
        // without the rid extension, or with one layer, there is no simulcast.
        let odd = chrome_simulcast().replace("send q;h;f", "send ~q;h,x;f;z");
        let a = answer(
            &Offer::parse(&odd).unwrap(),
            &local(&ice, &fp, &cands),
            &roles,
        )
        .unwrap();
        assert!(
            matches!(&a.media[1], Negotiated::Receive { rids, .. } if rids == &["q", "h", "f"])
        );
        for broken in [
            chrome_simulcast().replace(
                "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
                "",
            ),
            chrome_simulcast().replace("send q;h;f", "send q"),
            chrome_simulcast()
                .replace("a=rid:q send", "a=rid:q!! send")
                .replace("send q;h;f", "send q!!;h;f"),
        ] {
            let a = answer(
                &Offer::parse(&broken).unwrap(),
                &local(&ice, &fp, &cands),
                &roles,
            )
            .unwrap();
            assert!(
                matches!(&a.media[1], Negotiated::Receive { rids, .. } if rids.is_empty()),
                "{broken}"
            );
            assert!(!a.sdp.contains("a=simulcast"));
        }
    }

    #[test]
    fn h264_prefers_packetization_mode_1() {
        let offer = Offer::parse(&chrome_h264_only()).unwrap();
        let (ice, fp, cands) = server();
        let a = answer(
            &offer,
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        let (video, _) = receive_codec(&a.media[1]);
        assert_eq!((video.codec, video.payload_type), (Codec::H264, 102));
        assert!(
            video
                .fmtp
                .as_deref()
                .unwrap()
                .contains("packetization-mode=1")
        );
    }

    #[test]
    fn allowed_codecs_are_honoured() {
        let offer = Offer::parse(&chrome_publish()).unwrap();
        let (ice, fp, cands) = server();
        let mut params = local(&ice, &fp, &cands);
        params.allowed_codecs = &[Codec::Opus, Codec::H264];
        let a = answer(&offer, &params, &[MediaRole::Receive, MediaRole::Receive]).unwrap();
        assert_eq!(receive_codec(&a.media[1]).0.payload_type, 102);
        params.allowed_codecs = &[Codec::Opus];
        let a = answer(&offer, &params, &[MediaRole::Receive, MediaRole::Receive]).unwrap();
        match &a.media[1] {
            Negotiated::Rejected { reason, .. } => {
                assert!(reason.contains("no supported video codec"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(a.sdp.contains("m=video 0 "));
        assert!(a.sdp.contains("a=group:BUNDLE 0\r\n"));
    }

    #[test]
    fn subscribe_answers_rtx_with_an_fid_group_where_the_subscriber_offers_it() {
        let offer = Offer::parse(&chrome_subscribe()).unwrap();
        let (ice, fp, cands) = server();
        let track = |codec, ssrc, rtx_ssrc| {
            MediaRole::Send(SendTrack {
                codec,
                fmtp: None,
                ssrc,
                cname: "sfu".into(),
                stream_id: "pub1".into(),
                track_id: format!("t{ssrc}"),
                rtx_ssrc,
                red: false,
            })
        };
        let roles = [
            track(Codec::Opus, 11, Some(12)),
            track(Codec::Vp8, 22, Some(23)),
        ];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        // Chrome offers rtx 97 with apt=96 for VP8, and no rtx for Opus.
        let Negotiated::Send { codec, rtx, .. } = &a.media[1] else {
            panic!("{:?}", a.media[1])
        };
        assert_eq!(codec.payload_type, 96);
        assert_eq!(
            *rtx,
            Some(Rtx {
                payload_type: 97,
                ssrc: 23
            })
        );
        assert!(matches!(&a.media[0], Negotiated::Send { rtx: None, .. }));
        let parsed = SessionDescription::parse(&a.sdp).unwrap();
        let v = &parsed.media[1];
        assert_eq!(v.formats, ["96", "97"]);
        assert!(v.attributes("rtpmap").any(|r| r == "97 rtx/90000"));
        assert!(v.attributes("fmtp").any(|f| f == "97 apt=96"));
        assert_eq!(v.attribute("ssrc-group"), Some("FID 22 23"));
        for ssrc in [22, 23] {
            assert!(
                v.attributes("ssrc")
                    .any(|s| s == format!("{ssrc} cname:sfu"))
            );
            assert!(
                v.attributes("ssrc")
                    .any(|s| s == format!("{ssrc} msid:pub1 t22"))
            );
        }
        // Our answer reads back as an offer would: the FID group marks 23 as the repair SSRC.
        assert_eq!(v.primary_ssrc(), Some(22));
        let audio = &parsed.media[0];
        assert_eq!(audio.formats, ["111"]);
        assert!(audio.attribute("ssrc-group").is_none());

        // No rtx without NACK, or without an RTX SSRC of ours.
        let no_nack = chrome_subscribe().replace("a=rtcp-fb:96 nack\r\n", "");
        let offer2 = Offer::parse(&no_nack).unwrap();
        let a = answer(&offer2, &local(&ice, &fp, &cands), &roles).unwrap();
        assert!(matches!(&a.media[1], Negotiated::Send { rtx: None, .. }));
        assert!(!a.sdp.contains("rtx"));
        let roles = [MediaRole::Reject, track(Codec::Vp8, 22, None)];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        assert!(matches!(&a.media[1], Negotiated::Send { rtx: None, .. }));
        assert!(!a.sdp.contains("ssrc-group"));
    }

    #[test]
    fn red_is_taken_from_publishers_and_passed_to_subscribers_that_offer_it() {
        let (ice, fp, cands) = server();
        // Chrome offers red/48000/2 63 with fmtp 111/111: the publish answer lists RED first.
        let offer = Offer::parse(&chrome_publish()).unwrap();
        let a = answer(
            &offer,
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        let (audio, _) = receive_codec(&a.media[0]);
        assert_eq!((audio.payload_type, audio.red), (111, Some(63)));
        let (video, _) = receive_codec(&a.media[1]);
        assert_eq!(video.red, None);
        let parsed = SessionDescription::parse(&a.sdp).unwrap();
        let m = &parsed.media[0];
        assert_eq!(m.formats, ["63", "111"]);
        assert!(m.attributes("rtpmap").any(|r| r == "63 red/48000/2"));
        assert!(m.attributes("fmtp").any(|f| f == "63 111/111"));
        // Without RED in the offer, Opus alone.
        let no_red = chrome_publish().replace(" 111 63 ", " 111 ");
        let a = answer(
            &Offer::parse(&no_red).unwrap(),
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        assert_eq!(receive_codec(&a.media[0]).0.red, None);

        // A subscriber gets RED after Opus when the producer sends RED, else Opus alone.
        let offer = Offer::parse(&chrome_subscribe()).unwrap();
        for red in [true, false] {
            let roles = [
                MediaRole::Send(SendTrack {
                    codec: Codec::Opus,
                    fmtp: None,
                    ssrc: 5,
                    cname: "sfu".into(),
                    stream_id: "pub1".into(),
                    track_id: "a".into(),
                    rtx_ssrc: None,
                    red,
                }),
                MediaRole::Reject,
            ];
            let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
            let Negotiated::Send { codec, .. } = &a.media[0] else {
                panic!("{:?}", a.media[0])
            };
            assert_eq!(codec.red, red.then_some(63));
            let parsed = SessionDescription::parse(&a.sdp).unwrap();
            let want: &[&str] = if red { &["111", "63"] } else { &["111"] };
            assert_eq!(parsed.media[0].formats, want);
        }
    }

    #[test]
    fn subscribe_answers_sendonly_with_the_producers_codec() {
        let offer = Offer::parse(&chrome_subscribe()).unwrap();
        let (ice, fp, cands) = server();
        let track = |codec, fmtp: Option<&str>, ssrc| {
            MediaRole::Send(SendTrack {
                codec,
                fmtp: fmtp.map(str::to_string),
                ssrc,
                cname: "sfu".into(),
                stream_id: "pub1".into(),
                track_id: format!("t{ssrc}"),
                rtx_ssrc: None,
                red: false,
            })
        };
        // An aiortc publisher sent H264 42001f mode 1 (its pt 99); Chrome receives it as 102.
        let roles = [
            track(Codec::Opus, None, 11),
            track(
                Codec::H264,
                Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
                22,
            ),
        ];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        match &a.media[1] {
            Negotiated::Send { codec, ssrc, .. } => {
                assert_eq!(
                    (codec.codec, codec.payload_type, *ssrc),
                    (Codec::H264, 102, 22)
                );
                assert!(!codec.nack && codec.pli && !codec.remb);
            }
            other => panic!("{other:?}"),
        }
        let parsed = SessionDescription::parse(&a.sdp).unwrap();
        let v = &parsed.media[1];
        assert_eq!(v.direction(), Direction::SendOnly);
        assert_eq!(v.attribute("msid"), Some("pub1 t22"));
        assert!(v.attributes("ssrc").any(|s| s == "22 cname:sfu"));
        // Constrained baseline 42e01f is compatible with baseline 42001f, exact match preferred.
        let roles = [
            track(Codec::Opus, None, 1),
            track(
                Codec::H264,
                Some("packetization-mode=1;profile-level-id=42e01f"),
                2,
            ),
        ];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        let Negotiated::Send { codec, .. } = &a.media[1] else {
            panic!()
        };
        assert_eq!(codec.payload_type, 106);
        // VP9 profile 2 maps to Chrome's pt 100.
        let roles = [
            MediaRole::Reject,
            track(Codec::Vp9, Some("profile-id=2"), 3),
        ];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        let Negotiated::Send { codec, .. } = &a.media[1] else {
            panic!()
        };
        assert_eq!(codec.payload_type, 100);
        assert!(matches!(&a.media[0], Negotiated::Rejected { .. }));
        // A main-profile H264 producer: Chrome's offer has no main profile here.
        let roles = [
            MediaRole::Reject,
            track(
                Codec::H264,
                Some("packetization-mode=1;profile-level-id=4d001f"),
                4,
            ),
        ];
        let a = answer(&offer, &local(&ice, &fp, &cands), &roles).unwrap();
        match &a.media[1] {
            Negotiated::Rejected { reason, .. } => {
                assert_eq!(reason, "subscriber cannot receive H264")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aiortc_and_firefox_offers() {
        let (ice, fp, cands) = server();
        let offer = Offer::parse(&aiortc_offer()).unwrap();
        assert_eq!(offer.ice.pwd, "vmW4lGkQYSt7eHhXnIAEaZ");
        let a = answer(
            &offer,
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        assert_eq!(receive_codec(&a.media[0]).0.payload_type, 96);
        let (video, ssrc) = receive_codec(&a.media[1]);
        assert_eq!(
            (video.codec, video.payload_type, ssrc),
            (Codec::Vp8, 97, Some(4411))
        );

        let offer = Offer::parse(&firefox_offer()).unwrap();
        let a = answer(
            &offer,
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        assert_eq!(receive_codec(&a.media[0]).0.payload_type, 109);
        let (video, ssrc) = receive_codec(&a.media[1]);
        assert_eq!(
            (video.codec, video.payload_type, ssrc),
            (Codec::Vp8, 120, Some(777))
        );
    }

    #[test]
    fn wrong_directions_are_rejected_with_reasons() {
        let (ice, fp, cands) = server();
        let offer = Offer::parse(&chrome_subscribe()).unwrap();
        let a = answer(
            &offer,
            &local(&ice, &fp, &cands),
            &[MediaRole::Receive, MediaRole::Receive],
        )
        .unwrap();
        match &a.media[0] {
            Negotiated::Rejected { reason, .. } => assert!(reason.contains("nothing to publish")),
            other => panic!("{other:?}"),
        }
        assert!(answer(&offer, &local(&ice, &fp, &cands), &[MediaRole::Receive]).is_err());
    }

    #[test]
    fn offer_errors_explain_themselves() {
        let base = chrome_publish();
        let cases = [
            (base.replace("a=mid:1\r\n", ""), "has no a=mid"),
            (
                base.replace("a=group:BUNDLE 0 1\r\n", ""),
                "not in a=group:BUNDLE",
            ),
            (
                base.replace(&format!("a=fingerprint:{FP}\r\n"), ""),
                "no a=fingerprint",
            ),
            (
                base.replace("a=setup:actpass", "a=setup:passive"),
                "Switchyard is the DTLS server",
            ),
            (base.replace("a=rtcp-mux\r\n", ""), "a=rtcp-mux"),
            (base.replace("a=ice-ufrag:aBcD\r\n", ""), "a=ice-ufrag"),
            (
                base.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
                "expected UDP/TLS/RTP/SAVPF",
            ),
            (
                base.replace("sha-256 3B:36", "sha-256 XX:36"),
                "fingerprint",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".to_string(),
                "no m-lines",
            ),
            ("o=- 1 1 IN IP4 0.0.0.0\r\n".to_string(), "start with v=0"),
            ("v=0\r\nthis is not sdp\r\n".to_string(), "line 2"),
            ("v=0\r\nm=video\r\n".to_string(), "m=<media>"),
            ("v=0\r\nm=video abc RTP 96\r\n".to_string(), "bad port"),
            ("".to_string(), "empty SDP"),
            ("x".repeat(70_000), "limit"),
        ];
        for (text, expected) in cases {
            let e = Offer::parse(&text).unwrap_err();
            assert!(e.to_string().contains(expected), "{expected:?} not in {e}");
        }
    }

    /// The whole text of an answer: a change to a line, or to the order of lines (which
    /// browsers and aiortc read), shows up here.
    #[test]
    fn answer_text_is_stable() {
        let offer = Offer::parse(&chrome_subscribe()).unwrap();
        let (ice, fp, _) = server();
        let candidates: [SocketAddr; 2] = [
            "192.0.2.7:49152".parse().unwrap(),
            "[2001:db8::7]:49152".parse().unwrap(),
        ];
        let roles = [
            MediaRole::Reject,
            MediaRole::Send(SendTrack {
                codec: Codec::Vp9,
                fmtp: Some("profile-id=2".into()),
                ssrc: 3,
                cname: "sfu".into(),
                stream_id: "pub1".into(),
                track_id: "t3".into(),
                rtx_ssrc: None,
                red: false,
            }),
        ];
        let a = answer(&offer, &local(&ice, &fp, &candidates), &roles).unwrap();
        assert_eq!(
            a.sdp,
            lines(&format!(
                "v=0
                o=- 4242 2 IN IP4 127.0.0.1
                s=-
                t=0 0
                a=ice-lite
                a=group:BUNDLE 1
                a=extmap-allow-mixed
                a=msid-semantic: WMS *
                m=audio 0 UDP/TLS/RTP/SAVPF 111
                c=IN IP4 0.0.0.0
                a=mid:0
                a=inactive
                m=video 49152 UDP/TLS/RTP/SAVPF 100
                c=IN IP4 192.0.2.7
                a=mid:1
                a=ice-ufrag:srvU
                a=ice-pwd:serverpasswordserverpass
                a=fingerprint:{FP}
                a=setup:passive
                a=sendonly
                a=rtcp-mux
                a=rtcp-rsize
                a=rtpmap:100 VP9/90000
                a=fmtp:100 profile-id=2
                a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
                a=msid:pub1 t3
                a=ssrc:3 cname:sfu
                a=ssrc:3 msid:pub1 t3
                a=candidate:1 1 udp 2130706431 192.0.2.7 49152 typ host
                a=candidate:2 1 udp 2130706175 2001:db8::7 49152 typ host
                a=end-of-candidates"
            ))
        );
    }

    #[test]
    fn tcp_candidates_come_after_udp_with_lower_priority() {
        let addrs: [SocketAddr; 2] = [
            "192.0.2.7:49152".parse().unwrap(),
            "[2001:db8::7]:49152".parse().unwrap(),
        ];
        let mut w = Writer::new(1);
        w.host_candidates(&addrs, true);
        let text = w.finish();
        let candidates: Vec<(&str, u32)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .map(|c| {
                let f: Vec<&str> = c.split(' ').collect();
                (f[2], f[3].parse().unwrap())
            })
            .collect();
        assert_eq!(candidates.len(), 4);
        let lowest_udp = candidates
            .iter()
            .filter(|c| c.0 == "udp")
            .map(|c| c.1)
            .min();
        let highest_tcp = candidates
            .iter()
            .filter(|c| c.0 == "tcp")
            .map(|c| c.1)
            .max();
        assert!(highest_tcp < lowest_udp, "{text}");
        assert!(
            text.contains(
                "a=candidate:3 1 tcp 1520435199 192.0.2.7 49152 typ host tcptype passive\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("a=end-of-candidates\r\n"));
    }

    #[test]
    fn writer_line_formats() {
        let ice = Credentials {
            ufrag: "u".into(),
            pwd: "p".into(),
        };
        let fp: Fingerprint = FP.parse().unwrap();
        let offered = MediaDescription {
            media: "application".into(),
            port: 9,
            protocol: "UDP/DTLS/SCTP".into(),
            formats: vec!["webrtc-datachannel".into()],
            connection: None,
            attributes: Vec::new(),
        };
        let mut w = Writer::new(u64::from(u32::MAX) + 1);
        w.bundle(&["a", "d"]).msid_semantic(false);
        w.media(&MediaSection {
            media: "audio",
            port: 50_000,
            protocol: "UDP/TLS/RTP/SAVPF",
            payload_types: &[111],
            address: "2001:db8::1".parse().unwrap(),
            mid: "a",
            ice: &ice,
            fingerprint: &fp,
            setup: "actpass",
            direction: Direction::SendRecv,
        });
        w.rtpmap(111, "opus", 48_000, Some(2))
            .rtpmap(96, "VP8", 90_000, None)
            .fmtp(96, "x=1")
            .rtcp_fb(96, "nack pli")
            .extmap(14, MID_URI)
            .track("s", "t", 7, "c")
            .host_candidates(&[], false)
            .rejected(&offered, "d");
        assert_eq!(
            w.finish(),
            lines(&format!(
                "v=0
                o=- 4294967296 2 IN IP4 127.0.0.1
                s=-
                t=0 0
                a=group:BUNDLE a d
                a=msid-semantic: WMS
                m=audio 50000 UDP/TLS/RTP/SAVPF 111
                c=IN IP6 2001:db8::1
                a=mid:a
                a=ice-ufrag:u
                a=ice-pwd:p
                a=fingerprint:{FP}
                a=setup:actpass
                a=sendrecv
                a=rtcp-mux
                a=rtpmap:111 opus/48000/2
                a=rtpmap:96 VP8/90000
                a=fmtp:96 x=1
                a=rtcp-fb:96 nack pli
                a=extmap:14 urn:ietf:params:rtp-hdrext:sdes:mid
                a=msid:s t
                a=ssrc:7 cname:c
                a=ssrc:7 msid:s t
                a=end-of-candidates
                m=application 0 UDP/DTLS/SCTP webrtc-datachannel
                c=IN IP4 0.0.0.0
                a=mid:d
                a=inactive"
            ))
        );
    }

    #[test]
    fn display_round_trips() {
        let sd = SessionDescription::parse(&chrome_publish()).unwrap();
        let again = SessionDescription::parse(&sd.to_string()).unwrap();
        assert_eq!(sd, again);
    }

    #[test]
    fn garbage_never_panics() {
        let seeds = [chrome_publish(), aiortc_offer(), firefox_offer()];
        let mut rng = 0x2545F4914F6CDD1Du64;
        for seed in &seeds {
            let bytes = seed.as_bytes();
            for _ in 0..300 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let cut = (rng as usize) % bytes.len();
                let mut mutated = bytes[..cut].to_vec();
                mutated.push((rng >> 32) as u8);
                mutated.extend_from_slice(
                    &bytes[cut.min(bytes.len())..]
                        [..((rng >> 40) as usize % 50).min(bytes.len() - cut)],
                );
                let text = String::from_utf8_lossy(&mutated);
                if let Ok(offer) = Offer::parse(&text) {
                    let (ice, fp, cands) = server();
                    let roles = vec![MediaRole::Receive; offer.media.len()];
                    let _ = answer(&offer, &local(&ice, &fp, &cands), &roles);
                }
            }
        }
    }
}
