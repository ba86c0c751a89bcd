//! The client side of a transport, as a browser runs it against our ICE-lite server: a
//! controlling ICE agent that nominates with USE-CANDIDATE, a DTLS client, SRTP.
//!
//! It also talks to a full ICE agent such as Janus (libnice): it answers the peer's
//! connectivity checks (`handle_datagram_from`), and it can be the controlled agent
//! (`IceRole::Controlled`) when it answers the peer's offer (`answer`). It stays a DTLS client
//! in every case: offers to a full agent say `a=setup:active` (`offer_with`), answers too.
//!
//! Sans-IO like everything else here; the load generator and the tests drive it over real
//! sockets or in memory. It makes the offers a browser would (`offer`).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::datachannel::{self, DataChannels};
use crate::dtls::{self, Dtls, Fingerprint, Identity};
use crate::ice::{self, Credentials};
use crate::media::{Codec, MediaKind};
use crate::sdp::{self, Direction, MediaSection, SessionDescription};
use crate::transport::Srtp;
use crate::{demux, srtp, stun};

/// Connectivity checks repeat this often until one is answered.
const CHECK_RETRY: Duration = Duration::from_millis(200);
/// Consent checks once connected (browsers send one every ~5 s).
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DTLS: {0}")]
    Dtls(#[from] dtls::Error),
    #[error("SRTP: {0}")]
    Srtp(#[from] srtp::Error),
    #[error("not connected yet")]
    NotConnected,
}

/// What a received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A decrypted RTP packet of this length at the start of the buffer.
    Rtp(usize),
    /// A decrypted compound RTCP packet of this length.
    Rtcp(usize),
    /// Handshake traffic, or nothing for the caller.
    Other,
}

/// Which side of ICE the client plays. As `Controlling` (we made the offer, or the peer is
/// ICE-lite) our checks carry ICE-CONTROLLING and USE-CANDIDATE (aggressive nomination), and the
/// first answered check connects. As `Controlled` (we answer a full ICE agent's offer) our
/// checks carry ICE-CONTROLLED and no USE-CANDIDATE, and we are connected once one of our checks
/// is answered and the peer has nominated (sent us a valid check with USE-CANDIDATE).
pub use crate::ice::Role as IceRole;

/// One client transport.
pub struct Client {
    local: Credentials,
    remote: Credentials,
    dtls: Dtls,
    srtp: Option<Srtp>,
    role: IceRole,
    /// One of our checks was answered.
    check_answered: bool,
    /// The peer nominated with USE-CANDIDATE (only waited for as the controlled agent).
    peer_nominated: bool,
    ice_connected: bool,
    next_check: Instant,
    /// When DTLS next needs `handle_timeout` (a retransmission), as it last told us.
    dtls_deadline: Option<Instant>,
    /// Draws transaction ids and the tie-breaker: a CSPRNG, as STUN transaction ids should be
    /// unguessable (RFC 8489), seeded by the caller so a run can be repeated.
    rng: StdRng,
    transaction: [u8; 12],
    tie_breaker: u64,
    /// Where DTLS records are polled into: `dtls::POLL_BUFFER` bytes during the handshake, a
    /// datagram's worth after it (the load generator keeps thousands of clients).
    scratch: Box<[u8]>,
    /// DTLS records waiting for `poll_transmit`.
    pending: VecDeque<Vec<u8>>,
    /// Answers to the peer's connectivity checks, sent before anything else.
    stun_responses: VecDeque<Vec<u8>>,
    /// Data channels (the SCTP client), when enabled; its packets wait for DTLS to connect.
    data: Option<Box<DataChannels>>,
}

impl Client {
    /// A controlling client (see `with_role`).
    pub fn new(
        identity: &Identity,
        local: Credentials,
        remote: Credentials,
        remote_fingerprint: Fingerprint,
        now: Instant,
        seed: u64,
    ) -> Client {
        Client::with_role(
            identity,
            local,
            remote,
            remote_fingerprint,
            IceRole::Controlling,
            now,
            seed,
        )
    }

    /// A client with `local` and `remote` ICE credentials that plays `role` in ICE and is the
    /// DTLS client, expecting the peer's certificate to match `remote_fingerprint`. `seed`
    /// seeds the STUN transaction ids and the ICE tie-breaker: pass `rand::random()`, or a
    /// fixed value to repeat a run.
    pub fn with_role(
        identity: &Identity,
        local: Credentials,
        remote: Credentials,
        remote_fingerprint: Fingerprint,
        role: IceRole,
        now: Instant,
        seed: u64,
    ) -> Client {
        let mut rng = StdRng::seed_from_u64(seed);
        Client {
            local,
            remote,
            dtls: Dtls::client(identity, remote_fingerprint, now),
            srtp: None,
            role,
            check_answered: false,
            peer_nominated: false,
            ice_connected: false,
            next_check: now,
            dtls_deadline: None,
            transaction: rng.random(),
            tie_breaker: rng.random(),
            rng,
            scratch: vec![0; dtls::POLL_BUFFER].into_boxed_slice(),
            pending: VecDeque::new(),
            stun_responses: VecDeque::new(),
            data: None,
        }
    }

    /// Adds data channels: an SCTP association (we are its client, as the DTLS client) that
    /// starts once DTLS connects; the peer accepts messages up to `remote_max` bytes.
    pub fn enable_data_channels(
        &mut self,
        remote_max: Option<u32>,
    ) -> Result<(), datachannel::Error> {
        self.data = Some(Box::new(DataChannels::client(remote_max)?));
        Ok(())
    }

    /// The data channels, when enabled, to look at.
    pub fn data_channels_ref(&self) -> Option<&DataChannels> {
        self.data.as_deref()
    }

    /// The data channels, when enabled: open channels, send, take events. What they queue is
    /// sent by the next `poll_transmit`.
    pub fn data_channels(&mut self) -> Option<&mut DataChannels> {
        self.data.as_deref_mut()
    }

    pub fn local(&self) -> &Credentials {
        &self.local
    }

    pub fn role(&self) -> IceRole {
        self.role
    }

    /// ICE answered and DTLS finished: media may flow.
    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// The next datagram for the server, if any is due: an answer to the peer's connectivity
    /// check, a connectivity or consent check of ours, or a DTLS record. Everything goes to the
    /// one remote address the caller talks to. Call it until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<usize>, Error> {
        if let Some(response) = self.stun_responses.pop_front() {
            let Some(dst) = out.get_mut(..response.len()) else {
                return Ok(None);
            };
            dst.copy_from_slice(&response);
            return Ok(Some(response.len()));
        }
        if now >= self.next_check {
            self.next_check = now
                + if self.check_answered {
                    CONSENT_INTERVAL
                } else {
                    CHECK_RETRY
                };
            self.transaction = self.rng.random();
            return Ok(self.binding_request(out).ok());
        }
        if !self.ice_connected {
            return Ok(None);
        }
        self.drive_dtls(now)?;
        let Some(record) = self.pending.pop_front() else {
            return Ok(None);
        };
        let Some(dst) = out.get_mut(..record.len()) else {
            return Ok(None);
        };
        dst.copy_from_slice(&record);
        Ok(Some(record.len()))
    }

    /// Runs DTLS until it waits: records to send are queued, and SRTP starts as soon as the
    /// handshake completes (so media right behind the last handshake record decrypts).
    fn drive_dtls(&mut self, now: Instant) -> Result<(), Error> {
        loop {
            self.poll_dtls(now)?;
            // SCTP's packets, once DTLS can carry them (application data, RFC 8261).
            let Some(packet) = self
                .data
                .as_mut()
                .filter(|_| self.srtp.is_some())
                .and_then(|d| d.poll_transmit())
            else {
                return Ok(());
            };
            self.dtls.send_application_data(&packet)?;
        }
    }

    fn poll_dtls(&mut self, now: Instant) -> Result<(), Error> {
        loop {
            match self.dtls.poll_output(&mut self.scratch)? {
                dtls::Output::Transmit(record) => self.pending.push_back(record.to_vec()),
                dtls::Output::Connected(keying) => {
                    let (inbound, outbound) = srtp::session_from_keying(
                        keying.profile,
                        &keying.material,
                        keying.is_server,
                    )?;
                    self.srtp = Some(Srtp { inbound, outbound });
                    self.scratch = vec![0; crate::io::MAX_DATAGRAM].into_boxed_slice();
                }
                dtls::Output::Timeout(at) => {
                    self.dtls_deadline = Some(at);
                    return Ok(());
                }
                dtls::Output::Idle => {
                    self.dtls_deadline = None;
                    return Ok(());
                }
                dtls::Output::ApplicationData(packet) => {
                    if let Some(d) = &mut self.data {
                        d.handle_input(now, packet);
                    }
                }
            }
        }
    }

    fn binding_request(&self, out: &mut [u8]) -> Result<usize, stun::Error> {
        let username = format!("{}:{}", self.remote.ufrag, self.local.ufrag);
        let mut w = stun::Writer::new(
            out,
            stun::method::BINDING,
            stun::Class::Request,
            &self.transaction,
        )?;
        w.attribute(stun::attr::USERNAME, username.as_bytes())?;
        w.attribute(stun::attr::PRIORITY, &0x6e00_1eff_u32.to_be_bytes())?;
        match self.role {
            IceRole::Controlling => {
                w.attribute(stun::attr::ICE_CONTROLLING, &self.tie_breaker.to_be_bytes())?;
                w.attribute(stun::attr::USE_CANDIDATE, &[])?;
            }
            IceRole::Controlled => {
                w.attribute(stun::attr::ICE_CONTROLLED, &self.tie_breaker.to_be_bytes())?;
            }
        }
        w.message_integrity(self.remote.pwd.as_bytes())?;
        w.fingerprint()?;
        Ok(w.finish())
    }

    /// Answers a binding request from the peer (see [`ice::answer_check`]): the success
    /// response is queued for `poll_transmit`, and USE-CANDIDATE counts as the peer's
    /// nomination. Invalid requests are dropped without an answer; so is a role conflict (both
    /// sides claim the same role) rather than resolved, as the roles here are fixed by who
    /// offered.
    fn answer_check(&mut self, from: SocketAddr, msg: &stun::Message<'_>) {
        let mut out = [0u8; 128];
        let Ok(check) =
            ice::answer_check(&self.local, &self.remote, self.role, from, msg, &mut out)
        else {
            return;
        };
        self.stun_responses
            .push_back(out[..check.response_len].to_vec());
        if check.nominated {
            self.peer_nominated = true;
        }
    }

    /// ICE is up once a check of ours was answered and, as the controlled agent, the peer
    /// nominated; DTLS starts then.
    fn update_ice(&mut self, now: Instant) -> Result<(), Error> {
        let ready =
            self.check_answered && (self.role == IceRole::Controlling || self.peer_nominated);
        if ready && !self.ice_connected {
            self.ice_connected = true;
            self.next_check = now + CONSENT_INTERVAL;
            self.dtls.handle_timeout(now)?;
        }
        Ok(())
    }

    /// When `poll_transmit` or `handle_timeout` next has work: the next connectivity or
    /// consent check, or, once DTLS runs, its next retransmission if that comes first.
    pub fn poll_timeout(&self) -> Instant {
        let data = self.data.as_ref().and_then(|d| d.poll_timeout());
        let at = match self.dtls_deadline {
            Some(at) if self.ice_connected => self.next_check.min(at),
            _ => self.next_check,
        };
        data.map_or(at, |d| at.min(d))
    }

    /// Drives DTLS retransmissions; what they send comes out of `poll_transmit`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        if self.ice_connected {
            self.dtls.handle_timeout(now)?;
            if let Some(d) = &mut self.data {
                d.handle_timeout(now);
            }
            // Queues the retransmitted records and takes the next deadline, so `poll_timeout`
            // does not keep reporting the one just handled.
            self.drive_dtls(now)?;
        }
        Ok(())
    }

    /// Handles a datagram from the server, decrypting media in place. The peer's connectivity
    /// checks are not answered (an ICE-lite server sends none); use `handle_datagram_from`
    /// against a full ICE agent.
    pub fn handle_datagram(&mut self, now: Instant, data: &mut [u8]) -> Result<Received, Error> {
        self.handle(now, None, data)
    }

    /// Handles a datagram that came from `from`, decrypting media in place. A valid
    /// connectivity check from the peer is answered: the response (XOR-MAPPED-ADDRESS `from`)
    /// comes out of the next `poll_transmit`.
    pub fn handle_datagram_from(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Result<Received, Error> {
        self.handle(now, Some(from), data)
    }

    fn handle(
        &mut self,
        now: Instant,
        from: Option<SocketAddr>,
        data: &mut [u8],
    ) -> Result<Received, Error> {
        match demux::classify(data) {
            demux::PacketKind::Stun => {
                let Ok(msg) = stun::Message::parse(data) else {
                    return Ok(Received::Other);
                };
                match msg.class() {
                    stun::Class::Success => {
                        if msg.transaction_id() == &self.transaction
                            && msg.integrity_ok(self.remote.pwd.as_bytes())
                            && !self.check_answered
                        {
                            self.check_answered = true;
                            self.next_check = now + CONSENT_INTERVAL;
                        }
                    }
                    stun::Class::Request => {
                        if let Some(from) = from {
                            self.answer_check(from, &msg);
                        }
                    }
                    // Keepalive indications and error responses change nothing.
                    stun::Class::Indication | stun::Class::Error => {}
                }
                self.update_ice(now)?;
                Ok(Received::Other)
            }
            demux::PacketKind::Dtls => {
                self.dtls.handle_datagram(data)?;
                self.drive_dtls(now)?;
                Ok(Received::Other)
            }
            demux::PacketKind::Rtp => {
                let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
                Ok(Received::Rtp(srtp.inbound.unprotect_rtp(data)?))
            }
            demux::PacketKind::Rtcp => {
                let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
                Ok(Received::Rtcp(srtp.inbound.unprotect_rtcp(data)?))
            }
            demux::PacketKind::Unknown => Ok(Received::Other),
        }
    }

    /// Encrypts an RTP packet in place (see `srtp::Context::protect_rtp`).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
        Ok(srtp.outbound.protect_rtp(buf, len)?)
    }

    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let srtp = self.srtp.as_mut().ok_or(Error::NotConnected)?;
        Ok(srtp.outbound.protect_rtcp(buf, len)?)
    }
}

/// A track in an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferTrack {
    /// We publish `codec` as `ssrc` (sendonly).
    Send {
        codec: Codec,
        payload_type: u8,
        ssrc: u32,
    },
    /// We want to receive a track of this kind (recvonly), accepting `codec`.
    Receive { codec: Codec, payload_type: u8 },
    /// Both on one m-line (sendrecv): we send `codec` as `ssrc` and receive the same kind back,
    /// as an MCU participant does (the mix comes back on the m-lines it sends on).
    SendRecv {
        codec: Codec,
        payload_type: u8,
        ssrc: u32,
        /// Opus only: the highest rate this end captures and plays, when below 48 kHz (RFC
        /// 7587's `sprop-maxcapturerate` and `maxplaybackrate`): a phone call's 8 or 16 kHz,
        /// so the mixer codes what it sends back in that band only.
        max_audio_rate: Option<u32>,
    },
}

/// The DTLS role an offer proposes (`a=setup`, RFC 5763 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Setup {
    /// `actpass`, as browsers offer: the answerer picks. Our ICE-lite server answers
    /// `passive` (it is the DTLS server), so the client stays the DTLS client.
    #[default]
    ActPass,
    /// `active`: we insist on being the DTLS client. Needed for peers that answer `actpass`
    /// with `active`, as Janus does: Janus 1.1 answers an actpass offer with `a=setup:active`
    /// (it would be the DTLS client) but an active offer with `a=setup:passive`. Offering
    /// `active` keeps one DTLS role in this client, which is smaller than adding a DTLS-server
    /// mode that only Janus publishers would use.
    Active,
}

impl Setup {
    fn as_str(self) -> &'static str {
        match self {
            Setup::ActPass => "actpass",
            Setup::Active => "active",
        }
    }
}

/// A browser-like offer: BUNDLE, rtcp-mux, the MID extension, `a=setup:actpass`, NACK/PLI/FIR
/// feedback, one codec per m-line. `session_id` goes in the `o=` line (see `sdp::Writer::new`).
pub fn offer(
    ice: &Credentials,
    fingerprint: &Fingerprint,
    tracks: &[OfferTrack],
    session_id: u64,
) -> String {
    offer_with(ice, fingerprint, tracks, Setup::ActPass, session_id)
}

/// The feedback we offer on video and take from an offer's `a=rtcp-fb`: what the client can
/// answer with RTCP.
const FEEDBACK: [&str; 4] = ["nack", "nack pli", "ccm fir", "goog-remb"];

/// `offer` with the given `a=setup` (use `Setup::Active` towards Janus).
pub fn offer_with(
    ice: &Credentials,
    fingerprint: &Fingerprint,
    tracks: &[OfferTrack],
    setup: Setup,
    session_id: u64,
) -> String {
    let mids: Vec<String> = (0..tracks.len()).map(|i| i.to_string()).collect();
    let mut w = sdp::Writer::new(session_id);
    w.bundle(&mids).msid_semantic(false);
    for (mid, track) in mids.iter().zip(tracks) {
        let (codec, pt, direction, max_audio_rate) = match *track {
            OfferTrack::Send {
                codec,
                payload_type,
                ..
            } => (codec, payload_type, Direction::SendOnly, None),
            OfferTrack::Receive {
                codec,
                payload_type,
            } => (codec, payload_type, Direction::RecvOnly, None),
            OfferTrack::SendRecv {
                codec,
                payload_type,
                max_audio_rate,
                ..
            } => (codec, payload_type, Direction::SendRecv, max_audio_rate),
        };
        let kind = codec.kind();
        w.media(&MediaSection {
            media: kind.as_str(),
            port: 9,
            protocol: "UDP/TLS/RTP/SAVPF",
            payload_types: &[pt],
            address: Ipv4Addr::UNSPECIFIED.into(),
            mid,
            ice,
            fingerprint,
            setup: setup.as_str(),
            direction,
        });
        w.extmap(1, sdp::MID_URI);
        let channels = (kind == MediaKind::Audio).then_some(2);
        w.rtpmap(pt, codec.name(), codec.clock_rate(), channels);
        match codec {
            Codec::H264 => {
                w.fmtp(
                    pt,
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                );
            }
            Codec::Opus => {
                match max_audio_rate {
                    Some(rate) => w.fmtp(
                        pt,
                        &format!(
                            "minptime=10;useinbandfec=1;maxplaybackrate={rate};sprop-maxcapturerate={rate}"
                        ),
                    ),
                    None => w.fmtp(pt, "minptime=10;useinbandfec=1"),
                };
            }
            _ => {}
        }
        if kind == MediaKind::Video {
            for fb in FEEDBACK {
                w.rtcp_fb(pt, fb);
            }
        }
        if let OfferTrack::Send { ssrc, .. } | OfferTrack::SendRecv { ssrc, .. } = *track {
            w.track(
                "switchyard",
                &format!("track{mid}"),
                ssrc,
                "switchyard-client",
            );
        }
    }
    w.finish()
}

fn negotiation_error(reason: String) -> sdp::Error {
    sdp::Error { line: None, reason }
}

/// An offered format we accept.
struct Picked<'a> {
    pt: u8,
    /// The encoding name as the offer spells it.
    name: &'a str,
    clock_rate: u32,
    channels: Option<u8>,
}

/// The first format of `m` whose `a=rtpmap` is one of `accept` (Opus must be 48000/2, video
/// 90000).
fn pick_codec<'a>(m: &'a sdp::MediaDescription, accept: &[Codec]) -> Option<Picked<'a>> {
    m.formats.iter().find_map(|f| {
        let pt: u8 = f.parse().ok()?;
        let prefix = format!("{pt} ");
        let rtpmap = m
            .attributes("rtpmap")
            .find_map(|v| v.strip_prefix(&prefix))?
            .trim();
        let mut parts = rtpmap.split('/');
        let name = parts.next()?;
        let codec = Codec::from_name(name)?;
        let clock_rate: u32 = parts.next()?.parse().ok()?;
        let channels: Option<u8> = parts.next().map(str::parse).transpose().ok()?;
        let ok = accept.contains(&codec)
            && clock_rate == codec.clock_rate()
            && (codec != Codec::Opus || channels == Some(2));
        ok.then_some(Picked {
            pt,
            name,
            clock_rate,
            channels,
        })
    })
}

/// An answer to a full ICE agent's offer (Janus's subscriber offer): the offer's m-lines and
/// mids mirrored in order, BUNDLE over the accepted ones, `recvonly` where the offer sends,
/// for each audio/video m-line the offer's first payload type whose codec is in `accept`
/// (with its fmtp and the NACK/PLI/FIR/REMB feedback it offers) and the MID header extension
/// if offered, our ICE credentials and certificate fingerprint, rtcp-mux, and
/// `a=setup:active` so we stay the DTLS client. No candidates: the peer learns our address
/// from our checks (peer-reflexive). M-lines with no accepted codec, and data channels, are
/// rejected (port 0). Use the client as `IceRole::Controlled`. `session_id` goes in the `o=`
/// line (see `sdp::Writer::new`).
pub fn answer(
    ice: &Credentials,
    fingerprint: &Fingerprint,
    remote_offer: &str,
    accept: &[Codec],
    session_id: u64,
) -> Result<String, sdp::Error> {
    let offer = SessionDescription::parse(remote_offer)?;
    // Every m-line is decided before anything is written: the BUNDLE line, in the session
    // part, names the accepted ones.
    let mut decided = Vec::with_capacity(offer.media.len());
    for (i, m) in offer.media.iter().enumerate() {
        let mid = m.mid().ok_or_else(|| {
            negotiation_error(format!("m-line {} ({}) has no a=mid", i + 1, m.media))
        })?;
        let picked = match m.media.as_str() {
            "audio" | "video" if m.port != 0 => pick_codec(m, accept),
            _ => None,
        };
        decided.push((m, mid, picked));
    }
    let bundle: Vec<&str> = decided
        .iter()
        .filter(|(_, _, picked)| picked.is_some())
        .map(|(_, mid, _)| *mid)
        .collect();
    if bundle.is_empty() {
        return Err(negotiation_error(format!(
            "the offer has no audio or video m-line with any of {accept:?}"
        )));
    }
    let mut w = sdp::Writer::new(session_id);
    w.bundle(&bundle).msid_semantic(false);
    for (m, mid, picked) in decided {
        let Some(picked) = picked else {
            w.rejected(m, mid);
            continue;
        };
        let has = |name: &str| m.attributes.iter().any(|a| a.name == name);
        let sends = has("sendonly")
            || has("sendrecv")
            || !["sendonly", "recvonly", "sendrecv", "inactive"]
                .into_iter()
                .any(has);
        let pt = picked.pt;
        w.media(&MediaSection {
            media: &m.media,
            port: 9,
            payload_types: &[pt],
            protocol: "UDP/TLS/RTP/SAVPF",
            address: Ipv4Addr::UNSPECIFIED.into(),
            mid,
            ice,
            fingerprint,
            setup: "active",
            direction: if sends {
                Direction::RecvOnly
            } else {
                Direction::Inactive
            },
        });
        if let Some(id) = m.mid_extension() {
            w.extmap(id, sdp::MID_URI);
        }
        w.rtpmap(pt, picked.name, picked.clock_rate, picked.channels);
        let prefix = format!("{pt} ");
        if let Some(fmtp) = m.attributes("fmtp").find_map(|v| v.strip_prefix(&prefix)) {
            w.fmtp(pt, fmtp.trim());
        }
        for fb in m
            .attributes("rtcp-fb")
            .filter_map(|v| v.strip_prefix(&prefix))
        {
            let fb = fb.trim();
            if FEEDBACK.iter().any(|f| f.eq_ignore_ascii_case(fb)) {
                w.rtcp_fb(pt, fb);
            }
        }
    }
    Ok(w.finish())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "127.0.0.2:47928";

    fn client(role: IceRole) -> (Client, Instant) {
        let identity = Identity::generate().unwrap();
        let peer = Identity::generate().unwrap();
        let now = Instant::now();
        let local = Credentials {
            ufrag: "ours".into(),
            pwd: "ourpasswordourpassword".into(),
        };
        let remote = Credentials {
            ufrag: "2pIh".into(),
            pwd: "9sLXawT9d0ukjQdkBKcnKa".into(),
        };
        let c = Client::with_role(
            &identity,
            local,
            remote,
            peer.fingerprint().clone(),
            role,
            now,
            7,
        );
        (c, now)
    }

    /// A check as libnice sends it: USERNAME "ours:theirs", keyed with our password.
    fn peer_check(username: &str, key: &str, role: u16, use_candidate: bool) -> Vec<u8> {
        let mut out = [0u8; 256];
        let mut w = stun::Writer::new(
            &mut out,
            stun::method::BINDING,
            stun::Class::Request,
            &[7; 12],
        )
        .unwrap();
        w.attribute(stun::attr::USERNAME, username.as_bytes())
            .unwrap();
        w.attribute(stun::attr::PRIORITY, &1_853_759_231_u32.to_be_bytes())
            .unwrap();
        w.attribute(role, &42u64.to_be_bytes()).unwrap();
        if use_candidate {
            w.attribute(stun::attr::USE_CANDIDATE, &[]).unwrap();
        }
        w.message_integrity(key.as_bytes()).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        out[..n].to_vec()
    }

    /// The peer's success response to the check `request` (keyed with the peer's password).
    fn peer_response(request: &[u8], from: SocketAddr) -> Vec<u8> {
        let msg = stun::Message::parse(request).unwrap();
        let mut out = [0u8; 256];
        let mut w = stun::Writer::new(
            &mut out,
            stun::method::BINDING,
            stun::Class::Success,
            msg.transaction_id(),
        )
        .unwrap();
        w.xor_mapped_address(from).unwrap();
        w.message_integrity(b"9sLXawT9d0ukjQdkBKcnKa").unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        out[..n].to_vec()
    }

    fn transmit(c: &mut Client, now: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let n = c.poll_transmit(now, &mut buf).unwrap()?;
        buf.truncate(n);
        Some(buf)
    }

    #[test]
    fn a_valid_check_from_the_peer_is_answered() {
        for (role, peer_role) in [
            (IceRole::Controlled, stun::attr::ICE_CONTROLLING),
            (IceRole::Controlling, stun::attr::ICE_CONTROLLED),
        ] {
            let (mut c, now) = client(role);
            let from: SocketAddr = PEER.parse().unwrap();
            let mut req = peer_check("ours:2pIh", "ourpasswordourpassword", peer_role, true);
            assert_eq!(
                c.handle_datagram_from(now, from, &mut req).unwrap(),
                Received::Other
            );
            let out = transmit(&mut c, now).expect("a response");
            let resp = stun::Message::parse(&out).unwrap();
            assert_eq!(resp.class(), stun::Class::Success, "{role:?}");
            assert_eq!(resp.method(), stun::method::BINDING);
            assert_eq!(resp.transaction_id(), &[7; 12]);
            assert_eq!(resp.xor_mapped_address(), Some(from));
            assert!(resp.integrity_ok(b"ourpasswordourpassword"));
            assert_eq!(resp.fingerprint_ok(), Some(true));
            // Then our own check, as usual.
            let next = transmit(&mut c, now).expect("our check");
            assert_eq!(
                stun::Message::parse(&next).unwrap().class(),
                stun::Class::Request
            );
        }
    }

    #[test]
    fn invalid_checks_get_no_answer() {
        let from: SocketAddr = PEER.parse().unwrap();
        let cases = [
            peer_check(
                "ours:2pIh",
                "not our password",
                stun::attr::ICE_CONTROLLING,
                true,
            ),
            peer_check(
                "2pIh:ours",
                "ourpasswordourpassword",
                stun::attr::ICE_CONTROLLING,
                true,
            ),
            peer_check(
                "ours:other",
                "ourpasswordourpassword",
                stun::attr::ICE_CONTROLLING,
                true,
            ),
            // Both sides claim to be controlled.
            peer_check(
                "ours:2pIh",
                "ourpasswordourpassword",
                stun::attr::ICE_CONTROLLED,
                true,
            ),
        ];
        for mut req in cases {
            let (mut c, now) = client(IceRole::Controlled);
            c.handle_datagram_from(now, from, &mut req).unwrap();
            let out = transmit(&mut c, now).expect("our check");
            assert_eq!(
                stun::Message::parse(&out).unwrap().class(),
                stun::Class::Request
            );
            assert_eq!(transmit(&mut c, now), None);
        }
        // Without the source address (the old entry point) nothing is answered.
        let (mut c, now) = client(IceRole::Controlled);
        let mut req = peer_check(
            "ours:2pIh",
            "ourpasswordourpassword",
            stun::attr::ICE_CONTROLLING,
            true,
        );
        c.handle_datagram(now, &mut req).unwrap();
        let out = transmit(&mut c, now).unwrap();
        assert_eq!(
            stun::Message::parse(&out).unwrap().class(),
            stun::Class::Request
        );
    }

    #[test]
    fn controlled_client_waits_for_the_peers_nomination() {
        let (mut c, now) = client(IceRole::Controlled);
        let from: SocketAddr = PEER.parse().unwrap();
        let check = transmit(&mut c, now).expect("a check");
        let msg = stun::Message::parse(&check).unwrap();
        assert_eq!(msg.username(), Some(&b"2pIh:ours"[..]));
        assert!(msg.ice_controlled().is_some());
        assert!(msg.ice_controlling().is_none());
        assert!(!msg.use_candidate());
        assert!(msg.integrity_ok(b"9sLXawT9d0ukjQdkBKcnKa"));

        // Our check answered, but no nomination yet: no DTLS.
        let mut resp = peer_response(&check, "127.0.0.1:5000".parse().unwrap());
        c.handle_datagram_from(now, from, &mut resp).unwrap();
        assert_eq!(transmit(&mut c, now), None);

        // A check without USE-CANDIDATE is answered but does not nominate.
        let mut req = peer_check(
            "ours:2pIh",
            "ourpasswordourpassword",
            stun::attr::ICE_CONTROLLING,
            false,
        );
        c.handle_datagram_from(now, from, &mut req).unwrap();
        assert!(transmit(&mut c, now).is_some_and(|r| stun::is_stun(&r)));
        assert_eq!(transmit(&mut c, now), None);

        // The nomination: the response, then the ClientHello.
        let mut req = peer_check(
            "ours:2pIh",
            "ourpasswordourpassword",
            stun::attr::ICE_CONTROLLING,
            true,
        );
        c.handle_datagram_from(now, from, &mut req).unwrap();
        let response = transmit(&mut c, now).unwrap();
        assert_eq!(
            stun::Message::parse(&response).unwrap().class(),
            stun::Class::Success
        );
        let hello = transmit(&mut c, now).expect("a DTLS ClientHello");
        assert_eq!(demux::classify(&hello), demux::PacketKind::Dtls);
    }

    #[test]
    fn controlling_client_nominates_and_connects_on_the_first_answer() {
        let (mut c, now) = client(IceRole::Controlling);
        let check = transmit(&mut c, now).unwrap();
        let msg = stun::Message::parse(&check).unwrap();
        assert!(msg.ice_controlling().is_some());
        assert!(msg.use_candidate());
        let mut resp = peer_response(&check, "127.0.0.1:5000".parse().unwrap());
        c.handle_datagram(now, &mut resp).unwrap();
        let hello = transmit(&mut c, now).expect("a DTLS ClientHello");
        assert_eq!(demux::classify(&hello), demux::PacketKind::Dtls);
    }

    #[test]
    fn poll_timeout_includes_the_dtls_retransmission() {
        let (mut c, now) = client(IceRole::Controlling);
        let check = transmit(&mut c, now).unwrap();
        // Before ICE is up only checks are due: the next one after CHECK_RETRY.
        assert_eq!(c.poll_timeout(), now + CHECK_RETRY);
        let mut resp = peer_response(&check, "127.0.0.1:5000".parse().unwrap());
        c.handle_datagram(now, &mut resp).unwrap();
        let hello = transmit(&mut c, now).expect("a DTLS ClientHello");
        assert_eq!(demux::classify(&hello), demux::PacketKind::Dtls);
        assert_eq!(transmit(&mut c, now), None);

        // The ClientHello's retransmission comes before the first consent check.
        let retransmit = c.poll_timeout();
        assert!(now < retransmit && retransmit < now + CONSENT_INTERVAL);
        assert_eq!(c.next_check, now + CONSENT_INTERVAL);
        // Nothing before it; at it, the ClientHello again.
        let early = retransmit - Duration::from_millis(1);
        c.handle_timeout(early).unwrap();
        assert_eq!(transmit(&mut c, early), None);
        assert_eq!(c.poll_timeout(), retransmit);
        c.handle_timeout(retransmit).unwrap();
        let again = transmit(&mut c, retransmit).expect("the ClientHello, retransmitted");
        assert_eq!(demux::classify(&again), demux::PacketKind::Dtls);
        // The next retransmission backs off, and stays before the consent check here.
        let next = c.poll_timeout();
        assert!(
            next > retransmit && next < now + CONSENT_INTERVAL,
            "{next:?}"
        );
    }

    #[test]
    fn the_seed_decides_transaction_ids_and_tie_breaker() {
        let check = |seed| {
            let identity = Identity::generate().unwrap();
            let now = Instant::now();
            let creds = Credentials {
                ufrag: "u".into(),
                pwd: "p".into(),
            };
            let mut c = Client::new(
                &identity,
                creds.clone(),
                creds,
                identity.fingerprint().clone(),
                now,
                seed,
            );
            let first = transmit(&mut c, now).unwrap();
            let second = transmit(&mut c, now + CHECK_RETRY).unwrap();
            let parse = |b: &[u8]| {
                let m = stun::Message::parse(b).unwrap();
                (*m.transaction_id(), m.ice_controlling().unwrap())
            };
            (parse(&first), parse(&second))
        };
        let (a, b) = (check(1), check(1));
        assert_eq!(a, b);
        assert_ne!(a.0.0, a.1.0, "each check has its own transaction id");
        assert_eq!(a.0.1, a.1.1, "one tie-breaker per client");
        assert_ne!(check(2), a);
    }

    /// `text` with each line trimmed and ended with CRLF.
    fn crlf(text: &str) -> String {
        text.lines().map(|l| format!("{}\r\n", l.trim())).collect()
    }

    const FP: &str = "sha-256 3B:36:0D:9C:7F:95:3B:48:1D:0B:46:8A:9C:A4:5F:1D:1D:39:9F:B5:45:29:93:84:63:52:8A:09:AB:43:60:B1";

    fn fixed_ice() -> Credentials {
        Credentials {
            ufrag: "uFrG".into(),
            pwd: "passwordpasswordpassword".into(),
        }
    }

    /// An MCU participant's m-line is sendrecv and names the SSRC it sends.
    #[test]
    fn sendrecv_tracks_send_and_receive_on_one_m_line() {
        let tracks = [OfferTrack::SendRecv {
            codec: Codec::Opus,
            payload_type: 111,
            ssrc: 9,
            max_audio_rate: None,
        }];
        let text = offer(&fixed_ice(), &FP.parse().unwrap(), &tracks, 1);
        assert_eq!(text.matches("m=audio").count(), 1, "{text}");
        assert!(text.contains("a=sendrecv\r\n"), "{text}");
        assert!(text.contains("a=ssrc:9 "), "{text}");
        assert!(
            text.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"),
            "{text}"
        );

        // A phone call's leg says how much of the band it has.
        let tracks = [OfferTrack::SendRecv {
            codec: Codec::Opus,
            payload_type: 111,
            ssrc: 9,
            max_audio_rate: Some(8000),
        }];
        let text = offer(&fixed_ice(), &FP.parse().unwrap(), &tracks, 1);
        assert!(
            text.contains("a=fmtp:111 minptime=10;useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000\r\n"),
            "{text}"
        );
    }

    /// The whole text of an offer: a change to a line, or to the order of lines (which the
    /// server and Janus read), shows up here.
    #[test]
    fn offer_text_is_stable() {
        let tracks = [
            OfferTrack::Send {
                codec: Codec::Opus,
                payload_type: 111,
                ssrc: 5,
            },
            OfferTrack::Receive {
                codec: Codec::Vp8,
                payload_type: 96,
            },
        ];
        let text = offer(&fixed_ice(), &FP.parse().unwrap(), &tracks, 1);
        assert_eq!(
            text,
            crlf(&format!(
                "v=0
                o=- 1 2 IN IP4 127.0.0.1
                s=-
                t=0 0
                a=group:BUNDLE 0 1
                a=msid-semantic: WMS
                m=audio 9 UDP/TLS/RTP/SAVPF 111
                c=IN IP4 0.0.0.0
                a=mid:0
                a=ice-ufrag:uFrG
                a=ice-pwd:passwordpasswordpassword
                a=fingerprint:{FP}
                a=setup:actpass
                a=sendonly
                a=rtcp-mux
                a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
                a=rtpmap:111 opus/48000/2
                a=fmtp:111 minptime=10;useinbandfec=1
                a=msid:switchyard track0
                a=ssrc:5 cname:switchyard-client
                a=ssrc:5 msid:switchyard track0
                m=video 9 UDP/TLS/RTP/SAVPF 96
                c=IN IP4 0.0.0.0
                a=mid:1
                a=ice-ufrag:uFrG
                a=ice-pwd:passwordpasswordpassword
                a=fingerprint:{FP}
                a=setup:actpass
                a=recvonly
                a=rtcp-mux
                a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
                a=rtpmap:96 VP8/90000
                a=rtcp-fb:96 nack
                a=rtcp-fb:96 nack pli
                a=rtcp-fb:96 ccm fir
                a=rtcp-fb:96 goog-remb"
            ))
        );
    }

    /// The whole text of an answer to Janus, as `offer_text_is_stable` for offers.
    #[test]
    fn answer_text_is_stable() {
        let text = answer(
            &fixed_ice(),
            &FP.parse().unwrap(),
            JANUS_OFFER,
            &[Codec::Vp8],
            1,
        )
        .unwrap();
        assert_eq!(
            text,
            crlf(&format!(
                "v=0
                o=- 1 2 IN IP4 127.0.0.1
                s=-
                t=0 0
                a=group:BUNDLE 1
                a=msid-semantic: WMS
                m=audio 0 UDP/TLS/RTP/SAVPF 111
                c=IN IP4 0.0.0.0
                a=mid:0
                a=inactive
                m=video 9 UDP/TLS/RTP/SAVPF 96
                c=IN IP4 0.0.0.0
                a=mid:1
                a=ice-ufrag:uFrG
                a=ice-pwd:passwordpasswordpassword
                a=fingerprint:{FP}
                a=setup:active
                a=recvonly
                a=rtcp-mux
                a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
                a=rtpmap:96 VP8/90000
                a=rtcp-fb:96 ccm fir
                a=rtcp-fb:96 nack
                a=rtcp-fb:96 nack pli
                a=rtcp-fb:96 goog-remb
                m=application 0 UDP/DTLS/SCTP webrtc-datachannel
                c=IN IP4 0.0.0.0
                a=mid:2
                a=inactive"
            ))
        );
    }

    #[test]
    fn offers_say_actpass_unless_asked_for_active() {
        let ice = Credentials::random();
        let identity = Identity::generate().unwrap();
        let tracks = [OfferTrack::Send {
            codec: Codec::Vp8,
            payload_type: 96,
            ssrc: 5,
        }];
        let plain = offer(&ice, identity.fingerprint(), &tracks, 99);
        assert!(plain.contains("a=setup:actpass\r\n"));
        let active = offer_with(&ice, identity.fingerprint(), &tracks, Setup::Active, 99);
        assert!(active.contains("a=setup:active\r\n"));
        assert!(!active.contains("actpass"));
        // Otherwise the same offer, session id included.
        assert!(plain.starts_with("v=0\r\no=- 99 2 IN IP4 127.0.0.1\r\n"));
        assert_eq!(plain.replace("actpass", "active"), active);
    }

    /// A subscriber offer from Janus 1.1.2 (candidates in the SDP, half-trickle), with an H265
    /// format put before VP8 and a data channel added.
    const JANUS_OFFER: &str = "v=0\r\no=- 1796212419321609 1 IN IP4 127.0.0.1\r\ns=VideoRoom 1234\r\n\
t=0 0\r\na=group:BUNDLE 0 1 2\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 91:CB:04:A3:64:6E:73:B5:BF:E4:A2:A3:48:AC:74:A8:6B:2E:26:E7:11:52:34:D3:4E:0D:14:1C:3D:82:1F:3A\r\n\
a=extmap-allow-mixed\r\na=msid-semantic: WMS *\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\na=mid:0\r\na=rtcp-mux\r\n\
a=ice-ufrag:61Ex\r\na=ice-pwd:53JuyyntUi/MKmoYNbQLH/\r\na=ice-options:trickle\r\na=setup:actpass\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=fmtp:111 useinbandfec=1\r\n\
a=msid:janus janus0\r\na=ssrc:1164389958 cname:janus\r\n\
a=candidate:1 1 udp 2015363839 127.0.0.2 40196 typ host\r\na=end-of-candidates\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 100 96 97\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\na=mid:1\r\na=rtcp-mux\r\n\
a=ice-ufrag:61Ex\r\na=ice-pwd:53JuyyntUi/MKmoYNbQLH/\r\na=ice-options:trickle\r\na=setup:actpass\r\n\
a=rtpmap:100 H265/90000\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
a=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=ssrc-group:FID 2138797741 2363520459\r\na=msid:janus janus1\r\n\
a=ssrc:2138797741 cname:janus\r\na=ssrc:2363520459 cname:janus\r\n\
a=candidate:1 1 udp 2015363839 127.0.0.2 40196 typ host\r\na=end-of-candidates\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\na=mid:2\r\n\
a=ice-ufrag:61Ex\r\na=ice-pwd:53JuyyntUi/MKmoYNbQLH/\r\na=setup:actpass\r\na=sctp-port:5000\r\n";

    #[test]
    fn answer_to_a_janus_offer_mirrors_it_and_parses() {
        let ice = Credentials::random();
        let identity = Identity::generate().unwrap();
        let text = answer(
            &ice,
            identity.fingerprint(),
            JANUS_OFFER,
            &[Codec::Opus, Codec::Vp8],
            5,
        )
        .unwrap();
        let sd = SessionDescription::parse(&text).unwrap();
        let mids: Vec<_> = sd
            .media
            .iter()
            .map(|m| {
                m.attributes
                    .iter()
                    .find(|a| a.name == "mid")
                    .and_then(|a| a.value.clone())
                    .unwrap()
            })
            .collect();
        assert_eq!(mids, ["0", "1", "2"]);
        assert_eq!(sd.media[0].formats, ["111"]);
        assert_eq!(sd.media[1].formats, ["96"]);
        assert_eq!(
            (sd.media[2].media.as_str(), sd.media[2].port),
            ("application", 0)
        );
        assert!(text.contains("a=group:BUNDLE 0 1\r\n"));
        assert!(text.contains("a=rtpmap:96 VP8/90000\r\n"));
        assert!(text.contains("a=rtcp-fb:96 nack pli\r\n"));
        assert_eq!(
            text.matches("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n")
                .count(),
            2
        );
        assert!(!text.contains("abs-send-time") && !text.contains("rtx"));
        assert!(!text.contains("transport-cc"));
        assert!(text.contains("a=fmtp:111 useinbandfec=1\r\n"));
        assert!(!text.contains("candidate"));
        for m in &sd.media[..2] {
            let has = |n: &str| m.attributes.iter().any(|a| a.name == n);
            assert!(has("recvonly") && has("rtcp-mux"));
            assert_eq!(m.port, 9);
        }
        // The same checks our server makes of an offer: BUNDLE, rtcp-mux, one transport with
        // our credentials and certificate, and a setup that leaves us the DTLS client.
        let checked = sdp::Offer::parse(&text).unwrap();
        assert_eq!(checked.ice, ice);
        assert_eq!(&checked.fingerprint, identity.fingerprint());
        assert_eq!(text.matches("a=setup:active\r\n").count(), 2);

        // Nothing acceptable.
        let err = answer(&ice, identity.fingerprint(), JANUS_OFFER, &[Codec::H264], 5).unwrap_err();
        assert!(err.reason.contains("no audio or video m-line"), "{err}");
        // Not an SDP.
        assert!(answer(&ice, identity.fingerprint(), "hello", &[Codec::Vp8], 5).is_err());
    }
}
