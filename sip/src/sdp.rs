//! The phone side's offer/answer (RFC 3264) for plain RTP audio: which codec, where its RTP
//! goes, which way it flows. Pure: SDP text in, SDP text and the negotiated [`PhoneMedia`] out.
//! The INVITE dialog around it is the SIP stack's; the WebRTC side's SDP is the data plane's.

use std::net::{IpAddr, SocketAddr};

use switchyard_codec::audio::PhoneCodec;
use switchyard_dataplane::sdp::{MediaDescription, SessionDescription};

/// The payload type we offer telephone-events (RFC 4733) under, as most phones do.
pub const DTMF_PAYLOAD_TYPE: u8 = 101;
/// The payload type we offer telephone-events at Opus's 48 kHz clock under.
const DTMF_48K_PAYLOAD_TYPE: u8 = 110;
/// The payload type we offer Opus under (dynamic; phones commonly use 96-127).
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The packet time we send with unless the peer asks for another.
const DEFAULT_PTIME_MS: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("the SDP does not parse: {0}")]
    Parse(String),
    #[error("the SDP has no audio stream")]
    NoAudio,
    #[error("none of the offered audio codecs is one of PCMU, PCMA, G722, opus")]
    NoCodec,
    #[error("the SDP's connection address {0:?} is not an IP address")]
    Address(String),
}

/// Which way media flows, from our side (RFC 3264 §6.1: the answer mirrors the offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    /// We send, they do not (they offered `recvonly`).
    SendOnly,
    /// They send, we do not: they put us on hold (offered `sendonly`), or gave no address.
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attributes(m: &MediaDescription, session: &SessionDescription) -> Direction {
        let named = |name: &str| {
            m.attributes
                .iter()
                .chain(&session.attributes)
                .any(|a| a.name == name)
        };
        // The offerer's direction, mirrored into ours.
        if named("sendonly") {
            Direction::RecvOnly
        } else if named("recvonly") {
            Direction::SendOnly
        } else if named("inactive") {
            Direction::Inactive
        } else {
            Direction::SendRecv
        }
    }

    /// Ours as an SDP attribute.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether we send RTP.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the peer sends RTP (and its silence means it is gone).
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// What one offer/answer settled for the phone's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneMedia {
    /// What we send (the first offered format we have).
    pub codec: PhoneCodec,
    pub payload_type: u8,
    /// The other offered formats we have at the same clock rate: listed in our answer too,
    /// so the peer may send any of them (RFC 3264 §6.1), and decoded by payload type.
    pub also: Vec<(u8, PhoneCodec)>,
    /// telephone-event's payload type, when both sides have it at the codec's clock rate.
    pub dtmf_payload_type: Option<u8>,
    /// Where the peer wants its RTP; `None` for `c=0.0.0.0` (RFC 2543's hold) or port 0.
    pub remote: Option<SocketAddr>,
    pub ptime_ms: u32,
    pub direction: Direction,
}

/// Our side of the session: the address in our SDP and the RTP port of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub address: IpAddr,
    pub rtp_port: u16,
    /// The `o=` line's session id; its version counts our descriptions up (RFC 3264 §8).
    pub session_id: u64,
}

/// The answer to `offer`: the first offered codec we have, telephone-event if offered at that
/// codec's clock, the peer's packet time (10-60 ms), the direction mirrored. M-lines other
/// than the first usable audio one are refused with port 0.
pub fn answer(
    offer: &str,
    local: &Local,
    version: u64,
) -> Result<(String, PhoneMedia), NegotiationError> {
    let sd =
        SessionDescription::parse(offer).map_err(|e| NegotiationError::Parse(e.to_string()))?;
    let mut chosen = None;
    for (i, m) in sd.media.iter().enumerate() {
        if chosen.is_none()
            && m.media == "audio"
            && m.port != 0
            && is_rtp_avp(&m.protocol)
            && let Some(picked) = pick(m)
        {
            chosen = Some((i, picked));
        }
    }
    let Some((index, (codec, payload_type, also, dtmf_payload_type))) = chosen else {
        return Err(if sd.media.iter().any(|m| m.media == "audio") {
            NegotiationError::NoCodec
        } else {
            NegotiationError::NoAudio
        });
    };
    let m = &sd.media[index];
    let media = PhoneMedia {
        codec,
        payload_type,
        also,
        dtmf_payload_type,
        remote: remote_of(m, &sd)?,
        ptime_ms: ptime_of(m),
        direction: Direction::from_attributes(m, &sd),
    };
    let mut w = Writer::new(local, version);
    for (i, m) in sd.media.iter().enumerate() {
        if i == index {
            w.audio(local.rtp_port, &media, m);
        } else {
            w.refused(m);
        }
    }
    Ok((w.finish(), media))
}

/// Our offer (for calls out, and for INVITEs without one): every codec we have, Opus first
/// (the channel side's own codec: no transcoding loss), then G.722, PCMU and PCMA, with
/// telephone-event at both clocks they run at (8000 Hz, and Opus's 48000).
pub fn offer(local: &Local, version: u64) -> String {
    let mut w = Writer::new(local, version);
    w.line(&format!(
        "m=audio {} RTP/AVP {OPUS_PAYLOAD_TYPE} 9 0 8 {DTMF_PAYLOAD_TYPE} {DTMF_48K_PAYLOAD_TYPE}",
        local.rtp_port
    ));
    w.line(&format!("a=rtpmap:{OPUS_PAYLOAD_TYPE} opus/48000/2"));
    w.line(&format!("a=fmtp:{OPUS_PAYLOAD_TYPE} useinbandfec=1"));
    w.line("a=rtpmap:9 G722/8000");
    w.line("a=rtpmap:0 PCMU/8000");
    w.line("a=rtpmap:8 PCMA/8000");
    w.line(&format!(
        "a=rtpmap:{DTMF_PAYLOAD_TYPE} telephone-event/8000"
    ));
    w.line(&format!("a=fmtp:{DTMF_PAYLOAD_TYPE} 0-16"));
    w.line(&format!(
        "a=rtpmap:{DTMF_48K_PAYLOAD_TYPE} telephone-event/48000"
    ));
    w.line(&format!("a=fmtp:{DTMF_48K_PAYLOAD_TYPE} 0-16"));
    w.line(&format!("a=ptime:{DEFAULT_PTIME_MS}"));
    w.line("a=sendrecv");
    w.finish()
}

/// What the peer's answer to our [`offer`] settled: its first format is the codec (RFC 3264
/// §6.1 lets the answerer order them; the first is what it will send).
pub fn answered(answer: &str) -> Result<PhoneMedia, NegotiationError> {
    let sd =
        SessionDescription::parse(answer).map_err(|e| NegotiationError::Parse(e.to_string()))?;
    let m = sd
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)
        .ok_or(NegotiationError::NoAudio)?;
    let (codec, payload_type, also, dtmf_payload_type) =
        pick(m).ok_or(NegotiationError::NoCodec)?;
    Ok(PhoneMedia {
        codec,
        payload_type,
        also,
        dtmf_payload_type,
        remote: remote_of(m, &sd)?,
        ptime_ms: ptime_of(m),
        direction: Direction::from_attributes(m, &sd),
    })
}

fn is_rtp_avp(protocol: &str) -> bool {
    // Plain RTP only: SRTP (RTP/SAVP) needs SDES keys we do not do.
    protocol.eq_ignore_ascii_case("RTP/AVP") || protocol.eq_ignore_ascii_case("RTP/AVPF")
}

/// The offered formats we can take: the first of `m`'s formats we have, the others we have
/// at its clock rate, and telephone-event at that rate if `m` has it.
type Picked = (PhoneCodec, u8, Vec<(u8, PhoneCodec)>, Option<u8>);

fn pick(m: &MediaDescription) -> Option<Picked> {
    let rtpmaps: Vec<(u8, &str)> = m
        .attributes
        .iter()
        .filter(|a| a.name == "rtpmap")
        .filter_map(|a| {
            let (pt, map) = a.value.as_deref()?.split_once(' ')?;
            Some((pt.trim().parse().ok()?, map.trim()))
        })
        .collect();
    let rtpmap = |pt: u8| rtpmaps.iter().find(|(p, _)| *p == pt).map(|(_, m)| *m);
    let mut ours = m.formats.iter().filter_map(|f| {
        let pt: u8 = f.parse().ok()?;
        let codec = match rtpmap(pt) {
            Some(map) => codec_of(map)?,
            // RFC 3551's static types need no rtpmap.
            None => [PhoneCodec::Pcmu, PhoneCodec::Pcma, PhoneCodec::G722]
                .into_iter()
                .find(|c| c.static_payload_type() == Some(pt))?,
        };
        Some((pt, codec))
    });
    let (pt, codec) = ours.next()?;
    let also = ours
        .filter(|(_, c)| c.clock_rate() == codec.clock_rate())
        .collect();
    let dtmf = m.formats.iter().find_map(|f| {
        let pt: u8 = f.parse().ok()?;
        let (name, rate) = rtpmap(pt)?.split_once('/')?;
        let rate: u32 = rate.split('/').next()?.parse().ok()?;
        (name.eq_ignore_ascii_case("telephone-event") && rate == codec.clock_rate()).then_some(pt)
    });
    Some((codec, pt, also, dtmf))
}

/// The codec an `a=rtpmap` value names, if it is one of ours at its proper clock rate.
fn codec_of(rtpmap: &str) -> Option<PhoneCodec> {
    let mut parts = rtpmap.split('/');
    let codec = PhoneCodec::from_encoding_name(parts.next()?)?;
    let rate: u32 = parts.next()?.parse().ok()?;
    (rate == codec.clock_rate()).then_some(codec)
}

fn remote_of(
    m: &MediaDescription,
    sd: &SessionDescription,
) -> Result<Option<SocketAddr>, NegotiationError> {
    let Some(c) = m.connection.as_deref().or(sd.connection.as_deref()) else {
        return Ok(None);
    };
    // "IN IP4 192.0.2.1" (a multicast TTL suffix is not for us).
    let address = c.split_ascii_whitespace().nth(2).unwrap_or_default();
    let address = address.split('/').next().unwrap_or_default();
    let ip: IpAddr = address
        .parse()
        .map_err(|_| NegotiationError::Address(c.to_string()))?;
    Ok((!ip.is_unspecified() && m.port != 0).then(|| SocketAddr::new(ip, m.port)))
}

fn ptime_of(m: &MediaDescription) -> u32 {
    m.attributes
        .iter()
        .find(|a| a.name == "ptime")
        .and_then(|a| a.value.as_deref()?.trim().parse::<u32>().ok())
        .map(|p| (p / 10 * 10).clamp(10, 60))
        .unwrap_or(DEFAULT_PTIME_MS)
}

/// The offer's `a=fmtp` for `pt` (Opus's `useinbandfec` and the like), echoed in the answer.
fn fmtp_of(m: &MediaDescription, pt: u8) -> Option<&str> {
    let prefix = format!("{pt} ");
    m.attributes
        .iter()
        .filter(|a| a.name == "fmtp")
        .find_map(|a| a.value.as_deref()?.strip_prefix(&prefix))
}

/// Writes our descriptions: one session, plain RTP.
struct Writer {
    text: String,
}

impl Writer {
    fn new(local: &Local, version: u64) -> Writer {
        let family = if local.address.is_ipv4() {
            "IP4"
        } else {
            "IP6"
        };
        let mut w = Writer {
            text: String::with_capacity(512),
        };
        w.line("v=0");
        w.line(&format!(
            "o=switchyard {} {version} IN {family} {}",
            local.session_id, local.address
        ));
        w.line("s=switchyard");
        w.line(&format!("c=IN {family} {}", local.address));
        w.line("t=0 0");
        w
    }

    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push_str("\r\n");
    }

    fn audio(&mut self, port: u16, media: &PhoneMedia, offered: &MediaDescription) {
        let all: Vec<(u8, PhoneCodec)> = std::iter::once((media.payload_type, media.codec))
            .chain(media.also.iter().copied())
            .collect();
        let mut formats: Vec<String> = all.iter().map(|(pt, _)| pt.to_string()).collect();
        formats.extend(media.dtmf_payload_type.map(|pt| pt.to_string()));
        self.line(&format!("m=audio {port} RTP/AVP {}", formats.join(" ")));
        for (pt, codec) in all {
            let channels = if codec.channels() > 1 {
                format!("/{}", codec.channels())
            } else {
                String::new()
            };
            self.line(&format!(
                "a=rtpmap:{pt} {}/{}{channels}",
                codec.encoding_name(),
                codec.clock_rate()
            ));
            if let Some(fmtp) = fmtp_of(offered, pt) {
                self.line(&format!("a=fmtp:{pt} {fmtp}"));
            }
        }
        let codec = media.codec;
        if let Some(dtmf) = media.dtmf_payload_type {
            self.line(&format!(
                "a=rtpmap:{dtmf} telephone-event/{}",
                codec.clock_rate()
            ));
            self.line(&format!("a=fmtp:{dtmf} 0-16"));
        }
        self.line(&format!("a=ptime:{}", media.ptime_ms));
        self.line(&format!("a={}", media.direction.attribute()));
    }

    /// An m-line we do not take: port 0 and its first format (RFC 3264 §6).
    fn refused(&mut self, m: &MediaDescription) {
        let format = m.formats.first().map_or("0", String::as_str);
        self.line(&format!("m={} 0 {} {format}", m.media, m.protocol));
    }

    fn finish(self) -> String {
        self.text
    }
}

// ok: the unwrap()/expect() calls below are test-only, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Local = Local {
        address: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
        rtp_port: 30000,
        session_id: 7,
    };

    fn offer_with(media: &str) -> String {
        format!("v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n{media}")
    }

    #[test]
    fn the_first_offered_codec_we_have_wins_with_its_dtmf() {
        let offer = offer_with(
            "m=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:18 G729/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:30\r\n",
        );
        let (text, media) = answer(&offer, &LOCAL, 1).expect("answer");
        assert_eq!(media.codec, PhoneCodec::Pcma);
        assert_eq!(media.payload_type, 8);
        assert_eq!(media.dtmf_payload_type, Some(101));
        assert_eq!(media.ptime_ms, 30);
        assert_eq!(media.remote, Some("127.0.0.2:4000".parse().expect("addr")));
        assert!(text.contains("m=audio 30000 RTP/AVP 8 0 101\r\n"), "{text}");
        assert_eq!(media.also, vec![(0, PhoneCodec::Pcmu)]);
        assert!(text.contains("a=rtpmap:0 PCMU/8000\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=sendrecv\r\n"));
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
    }

    #[test]
    fn opus_and_g722_take_their_names_and_rates() {
        let offer = offer_with(
            "m=audio 4000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\n\
             a=fmtp:96 useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n",
        );
        let (text, media) = answer(&offer, &LOCAL, 1).expect("answer");
        assert_eq!((media.codec, media.payload_type), (PhoneCodec::Opus, 96));
        assert_eq!(media.dtmf_payload_type, Some(101));
        assert!(text.contains("a=rtpmap:96 opus/48000/2\r\n"), "{text}");
        assert!(text.contains("a=fmtp:96 useinbandfec=1\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/48000\r\n"));

        let offer = offer_with("m=audio 4000 RTP/AVP 9\r\n");
        let (text, media) = answer(&offer, &LOCAL, 1).expect("answer");
        assert_eq!(media.codec, PhoneCodec::G722);
        assert!(text.contains("a=rtpmap:9 G722/8000\r\n"), "{text}");
        assert_eq!(media.dtmf_payload_type, None);
    }

    #[test]
    fn dtmf_at_another_clock_is_not_taken() {
        let offer =
            offer_with("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/48000\r\n");
        let (_, media) = answer(&offer, &LOCAL, 1).expect("answer");
        assert_eq!(media.dtmf_payload_type, None);
    }

    #[test]
    fn hold_is_answered_the_other_way() {
        for (offered, ours) in [
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
            ("sendrecv", Direction::SendRecv),
        ] {
            let offer = offer_with(&format!("m=audio 4000 RTP/AVP 0\r\na={offered}\r\n"));
            let (text, media) = answer(&offer, &LOCAL, 2).expect("answer");
            assert_eq!(media.direction, ours);
            assert!(
                text.contains(&format!("a={}\r\n", ours.attribute())),
                "{text}"
            );
            assert!(text.contains("o=switchyard 7 2 IN IP4"), "{text}");
        }
        // RFC 2543's hold: no address to send to.
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\n";
        let (_, media) = answer(offer, &LOCAL, 2).expect("answer");
        assert_eq!(media.remote, None);
    }

    #[test]
    fn other_streams_are_refused_and_no_codec_is_an_error() {
        let offer = offer_with(
            "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 0\r\n",
        );
        let (text, _) = answer(&offer, &LOCAL, 1).expect("answer");
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
        assert!(text.find("m=video").expect("video") < text.find("m=audio").expect("audio"));

        let g729 = offer_with("m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n");
        assert_eq!(answer(&g729, &LOCAL, 1), Err(NegotiationError::NoCodec));
        let video = offer_with("m=video 5000 RTP/AVP 96\r\n");
        assert_eq!(answer(&video, &LOCAL, 1), Err(NegotiationError::NoAudio));
        let srtp = offer_with("m=audio 4000 RTP/SAVP 0\r\n");
        assert_eq!(answer(&srtp, &LOCAL, 1), Err(NegotiationError::NoCodec));
        assert!(matches!(
            answer("garbage", &LOCAL, 1),
            Err(NegotiationError::Parse(_))
        ));
    }

    #[test]
    fn our_offer_is_answered_by_our_answer() {
        let ours = offer(&LOCAL, 1);
        let (reply, media) = answer(&ours, &LOCAL, 1).expect("answer");
        assert_eq!(media.codec, PhoneCodec::Opus);
        let back = answered(&reply).expect("answered");
        assert_eq!(back.codec, PhoneCodec::Opus);
        assert_eq!(back.dtmf_payload_type, Some(DTMF_48K_PAYLOAD_TYPE));
    }

    proptest::proptest! {
        /// Whatever a phone sends as SDP (bytes that are not text are refused before this),
        /// the answer is an error or a description, never a panic; and our own answer to an
        /// answerable offer is itself readable.
        #[test]
        fn any_offer_is_answered_or_refused(text in "\\PC{0,400}") {
            let _ = answer(&text, &LOCAL, 1);
            let _ = answered(&text);
        }

        #[test]
        fn offers_of_shuffled_lines_never_panic(
            lines in proptest::collection::vec(proptest::sample::select(vec![
                "v=0", "o=- 1 1 IN IP4 127.0.0.2", "s=-", "c=IN IP4 127.0.0.2", "c=IN IP4 0.0.0.0",
                "c=IN IP6 ::1", "c=IN IP4 nonsense", "t=0 0", "m=audio 4000 RTP/AVP 0 8 101",
                "m=audio 0 RTP/AVP 0", "m=audio 4000 RTP/AVP 96 9", "m=video 5000 RTP/AVP 96",
                "m=audio 65536 RTP/AVP x", "a=rtpmap:96 opus/48000/2", "a=rtpmap:101 telephone-event/8000",
                "a=rtpmap:9 G722/8000", "a=rtpmap:96", "a=rtpmap:300 PCMU/8000", "a=ptime:0",
                "a=ptime:999999999999", "a=fmtp:96 useinbandfec=1", "a=sendonly", "a=inactive",
            ]), 0..24)
        ) {
            let offer: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            if let Ok((text, _)) = answer(&offer, &LOCAL, 1) {
                proptest::prop_assert!(answered(&text).is_ok(), "{}", text);
            }
        }
    }
}
