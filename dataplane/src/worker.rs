//! The media server as the control plane sees it: worker threads, one pinned per core, each
//! running an engine under an I/O backend, reached through bounded command queues.
//!
//! Commands go to a worker on a bounded queue and an eventfd wakes its loop; replies come back
//! on oneshot channels and events on an unbounded channel (a handful per transport lifetime),
//! so neither side ever blocks on the other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::dtls::{Fingerprint, Identity};
use crate::engine::{Command, Engine};
use crate::ice::Credentials;
use crate::io::{self, Backend, Waker};
use crate::media::{Codec, MediaKind};
use crate::stats::{self, Drop};

/// Commands a worker's queue holds before `create_transport` reports it busy.
const COMMAND_QUEUE: usize = 1024;

/// Identifies a transport (one peer connection) across the process; chosen by the control plane.
pub type TransportId = u64;
/// Identifies a producer (a published track); chosen by the control plane.
pub type ProducerId = u64;
/// Identifies a router (a channel on a worker); chosen by the control plane.
pub type RouterId = u64;

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Worker threads; each is pinned to a core and owns one UDP port.
    pub workers: usize,
    /// `None`: io_uring where available, else recvmmsg/sendmmsg.
    pub io_backend: Option<Backend>,
    /// Address the media sockets bind to.
    pub bind_ip: IpAddr,
    /// Media port range; worker i takes the first free port from the start.
    pub port_min: u16,
    pub port_max: u16,
    /// Pin worker i to core (first_core + i) modulo the cores available.
    pub pin: bool,
    pub first_core: usize,
}

/// A track the client publishes on this transport.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub id: ProducerId,
    pub kind: MediaKind,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// From `a=ssrc`; otherwise learned from the first packet carrying `mid_ext` = `mid`.
    pub ssrc: Option<u32>,
    pub mid: String,
    pub mid_ext: Option<u8>,
    /// The publisher accepts NACK / PLI / FIR / REMB from us.
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
}

/// A track the client receives on this transport: a consumer of `producer`.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub producer: ProducerId,
    pub ssrc: u32,
    /// The subscriber's payload type for the producer's codec.
    pub payload_type: u8,
    pub mid: String,
    pub mid_ext: Option<u8>,
    /// The subscriber sends NACK / PLI / FIR.
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
}

/// Everything a worker needs to run one transport; built from the negotiated SDP.
#[derive(Debug, Clone)]
pub struct TransportSpec {
    pub id: TransportId,
    pub router: RouterId,
    pub local_ice: Credentials,
    pub remote_ice: Credentials,
    pub remote_fingerprint: Fingerprint,
    pub producers: Vec<ProducerSpec>,
    pub consumers: Vec<ConsumerSpec>,
    /// Set for a pipe between two media servers instead of a peer connection.
    pub pipe: Option<Box<PipeSpec>>,
}

/// A pipe: a transport to another media server of the cluster that relays a channel's tracks
/// (cascading). There is no ICE or DTLS: the remote address is known and both ends get their
/// SRTP keys (AEAD_AES_128_GCM) from the control plane, so it carries media at once. The ends
/// send to each other's worker sockets, so the remote is also where its packets come from; pipes
/// sharing that pair of sockets are told apart by SSRC.
#[derive(Clone)]
pub struct PipeSpec {
    pub remote: std::net::SocketAddr,
    /// Master key (16 bytes) then salt (12 bytes) for what we send, and for what we receive.
    pub send_key: Vec<u8>,
    pub receive_key: Vec<u8>,
    /// The sender SSRC of our RTCP on this pipe, and of the other end's.
    pub local_rtcp_ssrc: u32,
    pub remote_rtcp_ssrc: u32,
}

impl std::fmt::Debug for PipeSpec {
    /// The keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeSpec")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// The SRTP profile of pipes and the length of its keying material (master key and salt).
pub const PIPE_PROFILE: crate::srtp::Profile = crate::srtp::Profile::AeadAes128Gcm;
pub const PIPE_KEY_LEN: usize = 16 + 12;

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

/// What the workers tell the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS completed; media flows.
    Connected { transport: TransportId },
    /// The transport is gone; its producers and consumers with it.
    Closed {
        transport: TransportId,
        reason: CloseReason,
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

/// Counters summed over the workers (drops are counted by reason).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// RTP packets written to consumers.
    pub rtp_forwarded: u64,
    pub nack_retransmits: u64,
    pub keyframe_requests: u64,
    pub transports: u64,
    /// (reason, count), e.g. ("stun_bad_integrity", 3), for every reason.
    pub drops: Vec<(&'static str, u64)>,
}

struct WorkerHandle {
    commands: SyncSender<Command>,
    waker: Waker,
    addr: SocketAddr,
    stats: Arc<stats::Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The running workers.
pub struct MediaServer {
    identity: Arc<Identity>,
    backend: Backend,
    workers: Vec<WorkerHandle>,
}

impl MediaServer {
    /// Binds one UDP port per worker and starts the worker threads; events arrive on the
    /// returned receiver.
    pub fn start(
        config: MediaConfig,
    ) -> Result<(MediaServer, mpsc::UnboundedReceiver<MediaEvent>), Error> {
        let identity = Identity::generate().map_err(|e| Error::Start(e.to_string()))?;
        let available = Backend::detect();
        let backend = match config.io_backend {
            Some(Backend::Uring) if available != Backend::Uring => {
                return Err(Error::Start(
                    "io_uring is not available here (kernel or seccomp); use --io-backend mmsg"
                        .into(),
                ));
            }
            Some(b) => b,
            None => Backend::DEFAULT,
        };
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(config.workers);
        let mut next_port = config.port_min;
        for index in 0..config.workers.max(1) {
            let socket =
                io::bind_udp(config.bind_ip, next_port..=config.port_max).map_err(|e| {
                    Error::Start(format!(
                        "worker {index}: no free UDP port in {next_port}-{}: {e}",
                        config.port_max
                    ))
                })?;
            let addr = socket
                .local_addr()
                .map_err(|e| Error::Start(e.to_string()))?;
            next_port = addr.port().saturating_add(1);
            let waker = Waker::new().map_err(|e| Error::Start(format!("eventfd: {e}")))?;
            let (commands, commands_rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
            let shared = Arc::new(stats::Shared::default());
            let core = (config.pin && !cores.is_empty())
                .then(|| cores[(config.first_core + index) % cores.len()]);
            let mut engine = Engine::new(
                identity.clone(),
                commands_rx,
                events_tx.clone(),
                shared.clone(),
                Instant::now(),
            );
            let thread_waker = waker.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sy-worker-{index}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        tracing::warn!(worker = index, "could not pin to core {}", core.id);
                    }
                    if let Err(e) = io::run(backend, &socket, &thread_waker, &mut engine) {
                        tracing::error!(worker = index, "I/O loop failed: {e}");
                    }
                })
                .map_err(|e| Error::Start(format!("spawn worker {index}: {e}")))?;
            tracing::info!(worker = index, %addr, backend = backend.as_str(), core = ?core.map(|c| c.id), "media worker started");
            workers.push(WorkerHandle {
                commands,
                waker,
                addr,
                stats: shared,
                thread: Some(thread),
            });
        }
        Ok((
            MediaServer {
                identity,
                backend,
                workers,
            },
            events_rx,
        ))
    }

    /// The certificate every transport presents.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The local address of worker `worker`'s media socket.
    pub fn worker_addr(&self, worker: usize) -> Option<SocketAddr> {
        self.workers.get(worker).map(|w| w.addr)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn send(&self, worker: usize, command: Command) -> Result<(), Error> {
        let w = self.workers.get(worker).ok_or(Error::NoWorker(worker))?;
        match w.commands.try_send(command) {
            Ok(()) => {
                w.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Error::Busy(worker)),
            Err(TrySendError::Disconnected(_)) => Err(Error::Stopped),
        }
    }

    /// Sets up a transport on `worker`; every transport of a router must go to the same worker.
    pub async fn create_transport(&self, worker: usize, spec: TransportSpec) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(worker, Command::CreateTransport { spec, reply })?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Closes a transport; a `Closed` event follows.
    pub fn close_transport(&self, worker: usize, transport: TransportId) -> Result<(), Error> {
        self.send(worker, Command::CloseTransport { id: transport })
    }

    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        let mut drops = [0u64; Drop::ALL.len()];
        for w in &self.workers {
            let c = w.stats.snapshot();
            total.packets_in += c.packets_in;
            total.packets_out += c.packets_out;
            total.bytes_in += c.bytes_in;
            total.bytes_out += c.bytes_out;
            total.rtp_forwarded += c.rtp_forwarded;
            total.nack_retransmits += c.nack_retransmits;
            total.keyframe_requests += c.keyframe_requests;
            total.transports += c.transports;
            for (sum, n) in drops.iter_mut().zip(c.drops) {
                *sum += n;
            }
        }
        total.drops = Drop::ALL
            .iter()
            .zip(drops)
            .map(|(d, n)| (d.name(), n))
            .collect();
        total
    }

    /// Tells every worker to close its transports and stop; `Drop` waits for the threads.
    pub fn stop(&self) {
        for w in &self.workers {
            // A full queue still stops the worker: it also stops when the queue disconnects.
            let _ = w.commands.try_send(Command::Stop);
            w.waker.wake();
        }
    }
}

impl std::ops::Drop for MediaServer {
    fn drop(&mut self) {
        self.stop();
        for w in &mut self.workers {
            let (dead, _) = std::sync::mpsc::sync_channel(0);
            drop(std::mem::replace(&mut w.commands, dead));
            w.waker.wake();
            if let Some(thread) = w.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
