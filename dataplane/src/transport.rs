//! A transport: how one peer is reached. A peer connection has an ICE-lite agent and a DTLS
//! session that yield its SRTP contexts; a pipe to another media server has its SRTP keys from
//! the start. Either way the transport decrypts what arrives and encrypts what its router sends;
//! its tracks (producers and consumers) belong to its [`Router`](crate::router::Router).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::datachannel::DataChannels;
use crate::dtls::{self, Dtls};
use crate::ice::IceLite;
use crate::io::Tx;
use crate::pacer;
use crate::spec::{
    DataSpec, Error, PIPE_KEY_LEN, PIPE_PROFILE, PipeSpec, ProducerId, Ssrc, TransportId,
};
use crate::srtp;
use crate::stats::{Counters, DropReason};
use crate::timers::Grid;

/// Addresses with a valid check kept per peer connection (the peer may check from several).
const MAX_ADDRS: usize = 4;
/// A peer connection that has not finished DTLS this long after creation is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A transport's key in its worker's table: what routers and timers refer to it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportKey(pub usize);

/// The SRTP contexts of one transport: what it receives and what it sends.
pub struct Srtp {
    pub inbound: srtp::Context,
    pub outbound: srtp::Context,
}

impl Srtp {
    /// The contexts of a pipe, from the keys the control plane gave both ends.
    pub fn for_pipe(pipe: &PipeSpec) -> Result<Srtp, Error> {
        if pipe.send_key.len() != PIPE_KEY_LEN || pipe.receive_key.len() != PIPE_KEY_LEN {
            return Err(Error::Rejected(format!(
                "pipe keys must be {PIPE_KEY_LEN} bytes"
            )));
        }
        let context = |material: &[u8]| {
            let (key, salt) = material.split_at(16);
            srtp::Context::new(PIPE_PROFILE, key, salt)
                .map_err(|e| Error::Rejected(format!("pipe keys: {e}")))
        };
        Ok(Srtp {
            inbound: context(&pipe.receive_key)?,
            outbound: context(&pipe.send_key)?,
        })
    }
}

pub struct Transport {
    pub id: TransportId,
    /// Its router's key on the worker, and its member key in that router.
    pub router: usize,
    pub member: usize,
    pub link: Link,
    /// Set once media may flow: when DTLS completes, or at creation for a pipe.
    pub srtp: Option<Srtp>,
    /// Where we send: the nominated address (else the latest with a valid check), or the
    /// pipe's far end.
    pub remote: Option<SocketAddr>,
    /// The time of this transport's live entry in the engine's timer queue.
    pub scheduled: Option<Instant>,
    /// Its media's pacer and what it holds back, once its router has an estimate of the path
    /// (a subscriber that sends transport-cc feedback).
    pub pacing: Option<Box<pacer::Queue<Held>>>,
}

/// A packet a transport's pacer holds: written and protected in a send buffer of the engine's
/// [`Tx`], and its transport-wide sequence number, whose send time the estimator learns when
/// it really goes.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub slot: u32,
    pub twcc: Option<u16>,
}

/// How the transport reaches its peer. A peer connection's state is boxed: its DTLS session
/// is large, and transports are scanned by key on the packet path.
pub enum Link {
    WebRtc(Box<WebRtc>),
    Pipe(Pipe),
    /// A stream to or from a mixer on MCU thread `mcu`: sent in the clear to that thread
    /// (`crate::lane`).
    Mixer {
        mcu: usize,
    },
    /// One end of a shard link: sent in the clear to the other end, on worker `worker`
    /// (`crate::lane`, `crate::router` mirror).
    Shard {
        worker: usize,
    },
}

/// A peer connection's ICE-lite agent and DTLS session.
pub struct WebRtc {
    pub ice: IceLite,
    pub dtls: Dtls,
    /// The peer nominated an address (USE-CANDIDATE): later unnominated checks do not move us.
    nominated: bool,
    /// Addresses with valid checks, oldest first (each is in the engine's address map).
    pub addrs: Vec<SocketAddr>,
    created: Instant,
    /// When DTLS wants `handle_timeout` (retransmission), if it does.
    dtls_deadline: Option<Instant>,
    /// The data channels (SCTP over this DTLS session), when the SDP negotiated them.
    pub data: Option<Box<DataLink>>,
}

/// A peer connection's data channels and what they forward: the SCTP association, the data
/// producer it publishes (a publication's channels) and those it receives (a subscription's).
pub struct DataLink {
    pub channels: DataChannels,
    pub producer: Option<ProducerId>,
    pub consumes: Vec<ProducerId>,
}

impl DataLink {
    pub fn new(spec: &DataSpec) -> DataLink {
        DataLink {
            channels: DataChannels::server(spec.remote_max_message_size),
            producer: spec.producer,
            consumes: spec.consumes.clone(),
        }
    }
}

/// A pipe to another media server.
pub struct Pipe {
    /// The far end's RTCP sender SSRC, so its RTCP is matched to this pipe before decryption.
    pub remote_rtcp_ssrc: Ssrc,
}

/// What a transport's timer found.
pub enum Expiry {
    ConsentExpired,
    HandshakeTimeout,
}

impl WebRtc {
    /// A peer connection waiting for the peer's checks and ClientHello.
    pub fn new(ice: IceLite, dtls: Dtls, now: Instant) -> WebRtc {
        WebRtc {
            ice,
            dtls,
            nominated: false,
            addrs: Vec::with_capacity(MAX_ADDRS),
            created: now,
            dtls_deadline: None,
            data: None,
        }
    }
}

impl Transport {
    /// A transport of router `router` (its member `member` there) reached over `link`.
    pub fn new(id: TransportId, router: usize, member: usize, link: Link) -> Transport {
        Transport {
            id,
            router,
            member,
            link,
            srtp: None,
            remote: None,
            scheduled: None,
            pacing: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Decrypts an SRTP (or, with `rtcp`, SRTCP) packet from the peer in place; the error is
    /// the reason to count the drop under.
    pub fn unprotect(&mut self, data: &mut [u8], rtcp: bool) -> Result<usize, DropReason> {
        let srtp = self.srtp.as_mut().ok_or(DropReason::SrtpBeforeDtls)?;
        let result = if rtcp {
            srtp.inbound.unprotect_rtcp(data)
        } else {
            srtp.inbound.unprotect_rtp(data)
        };
        result.map_err(|e| match e {
            srtp::Error::Replay | srtp::Error::TooOld => DropReason::SrtpReplay,
            _ => DropReason::SrtpAuthFailed,
        })
    }

    /// Records a valid ICE check from `src`. Returns the address that fell out of the list (to
    /// remove from the engine's map) and whether `src` is new.
    pub fn checked(&mut self, src: SocketAddr, nominated: bool) -> (Option<SocketAddr>, bool) {
        let Link::WebRtc(w) = &mut self.link else {
            return (None, false);
        };
        if nominated || !w.nominated {
            self.remote = Some(src);
            w.nominated |= nominated;
        }
        if w.addrs.contains(&src) {
            return (None, false);
        }
        let evicted = if w.addrs.len() >= MAX_ADDRS {
            let remote = self.remote;
            let i = w.addrs.iter().position(|a| Some(*a) != remote).unwrap_or(0);
            Some(w.addrs.remove(i))
        } else {
            None
        };
        w.addrs.push(src);
        (evicted, true)
    }

    /// When the transport's timer is next due: a DTLS retransmission, the handshake limit,
    /// consent running out, data channel timers, or a held packet that may go. Pipes have none:
    /// the control plane keys and closes them.
    pub fn deadline(&self, grid: &Grid) -> Option<Instant> {
        let Link::WebRtc(w) = &self.link else {
            return None;
        };
        let consent = grid.after(w.ice.consent_deadline());
        let handshake = (!self.is_connected()).then(|| grid.after(w.created + HANDSHAKE_TIMEOUT));
        let data = w.data.as_ref().and_then(|d| d.channels.poll_timeout());
        let paced = self.pacing.as_ref().and_then(|q| q.next_due());
        [Some(consent), handshake, w.dtls_deadline, data, paced]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether consent or the handshake limit ran out at `now`.
    pub fn expired(&self, now: Instant) -> Option<Expiry> {
        let Link::WebRtc(w) = &self.link else {
            return None;
        };
        if w.ice.consent_expired(now) {
            Some(Expiry::ConsentExpired)
        } else if !self.is_connected()
            && now.saturating_duration_since(w.created) >= HANDSHAKE_TIMEOUT
        {
            Some(Expiry::HandshakeTimeout)
        } else {
            None
        }
    }

    /// Runs DTLS's retransmission timer and SCTP's timers if they are due.
    pub fn dtls_timeout(&mut self, now: Instant) -> Result<(), dtls::Error> {
        let Link::WebRtc(w) = &mut self.link else {
            return Ok(());
        };
        if let Some(d) = &mut w.data {
            d.channels.handle_timeout(now);
        }
        if w.dtls_deadline.is_some_and(|d| d <= now) {
            w.dtls.handle_timeout(now)?;
        }
        Ok(())
    }

    /// The transport's data channels, if it has them.
    pub fn data_mut(&mut self) -> Option<&mut DataLink> {
        match &mut self.link {
            Link::WebRtc(w) => w.data.as_deref_mut(),
            Link::Pipe(_) | Link::Mixer { .. } | Link::Shard { .. } => None,
        }
    }

    /// Sends what DTLS has to send and takes the SRTP keys when the handshake completes;
    /// returns whether it just connected. `scratch` holds [`dtls::POLL_BUFFER`] bytes.
    /// Application data goes to the data channels, and their SCTP packets out through DTLS
    /// (RFC 8261), until both are quiet.
    pub fn drive_dtls(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        tx: &mut Tx,
        counters: &mut Counters,
    ) -> Result<bool, dtls::Error> {
        if !matches!(self.link, Link::WebRtc(_)) {
            return Ok(false);
        }
        let mut connected = false;
        loop {
            connected |= self.poll_dtls(now, scratch, tx, counters)?;
            let Link::WebRtc(w) = &mut self.link else {
                return Ok(connected);
            };
            let Some(packet) = w.data.as_mut().and_then(|d| d.channels.poll_transmit()) else {
                return Ok(connected);
            };
            if !w.dtls.is_connected() {
                continue; // nothing can carry it yet; SCTP retransmits what mattered
            }
            // A refused packet is lost like one on the wire; SCTP recovers or gives up.
            if w.dtls.send_application_data(&packet).is_err() {
                counters.drop(DropReason::TxFull);
            }
        }
    }

    /// One pass of DTLS output: records out, keys taken, application data to SCTP.
    fn poll_dtls(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        tx: &mut Tx,
        counters: &mut Counters,
    ) -> Result<bool, dtls::Error> {
        let Link::WebRtc(w) = &mut self.link else {
            return Ok(false);
        };
        let mut connected = false;
        loop {
            match w.dtls.poll_output(scratch)? {
                dtls::Output::Transmit(record) => {
                    let Some(dst) = self.remote else { continue };
                    send(tx, counters, dst, |out| {
                        out.get_mut(..record.len())?.copy_from_slice(record);
                        Some(record.len())
                    });
                }
                dtls::Output::Connected(keying) => {
                    let (inbound, outbound) = srtp::session_from_keying(
                        keying.profile,
                        &keying.material,
                        keying.is_server,
                    )
                    .map_err(dtls::Error::SrtpKeys)?;
                    self.srtp = Some(Srtp { inbound, outbound });
                    connected = true;
                }
                dtls::Output::Timeout(at) => {
                    w.dtls_deadline = Some(at);
                    break;
                }
                dtls::Output::Idle => {
                    w.dtls_deadline = None;
                    break;
                }
                dtls::Output::ApplicationData(packet) => match &mut w.data {
                    Some(d) => {
                        let before = d.channels.malformed();
                        d.channels.handle_input(now, packet);
                        if d.channels.malformed() != before {
                            counters.drop(DropReason::SctpMalformed);
                        }
                    }
                    None => counters.drop(DropReason::SctpMalformed),
                },
            }
        }
        Ok(connected)
    }
}

/// Queues a datagram through `write` and counts it as sent, or as a `TxFull` drop when no send
/// buffer was free. A `write` that gives up (`None`) is neither.
pub fn send(
    tx: &mut Tx,
    counters: &mut Counters,
    dst: SocketAddr,
    write: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let mut called = false;
    let mut len = 0;
    let queued = tx.push(dst, |out| {
        called = true;
        len = write(out)?;
        Some(len)
    });
    if queued {
        counters.sent(len);
    } else if !called {
        counters.drop(DropReason::TxFull);
    }
    queued
}
