//! The media server as the control plane sees it: worker threads, one pinned per core, each
//! running an engine under an I/O backend, reached through bounded command queues.
//!
//! CONTRACT (skeleton): the control plane calls these; the implementation lands with the engine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::dtls::{Fingerprint, Identity};
use crate::ice::Credentials;
use crate::io::Backend;
use crate::media::{Codec, MediaKind};

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
}

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
    pub transports: u64,
    /// (reason, count), e.g. ("stun_bad_integrity", 3).
    pub drops: Vec<(&'static str, u64)>,
}

/// The running workers.
pub struct MediaServer {
    identity: Arc<Identity>,
}

impl MediaServer {
    /// Starts the workers; events arrive on the returned receiver.
    pub fn start(
        config: MediaConfig,
    ) -> Result<
        (
            MediaServer,
            tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
        ),
        Error,
    > {
        let _ = config;
        todo!()
    }

    /// The certificate every transport presents.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn workers(&self) -> usize {
        todo!()
    }

    /// The local address of worker `worker`'s media socket.
    pub fn worker_addr(&self, worker: usize) -> SocketAddr {
        let _ = worker;
        todo!()
    }

    pub fn backend(&self) -> Backend {
        todo!()
    }

    /// Sets up a transport on `worker`; every transport of a router must go to the same worker.
    pub async fn create_transport(&self, worker: usize, spec: TransportSpec) -> Result<(), Error> {
        let _ = (worker, spec);
        todo!()
    }

    /// Closes a transport; a `Closed` event follows.
    pub fn close_transport(&self, worker: usize, transport: TransportId) -> Result<(), Error> {
        let _ = (worker, transport);
        todo!()
    }

    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Stops the workers and joins their threads.
    pub fn shutdown(self) {
        todo!()
    }
}
