//! An engine in memory: client transports ([`Client`]: controlling ICE, DTLS client, SRTP) talk
//! to one worker's [`Engine`] through a simulated network with a simulated clock. No sockets,
//! no threads. The engine's tests (`dataplane/tests/engine.rs`) and benches (`benches/`) drive
//! it; it plays the kernel the way `Tx::drain_to` documents.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Client, Received};
use crate::dtls::{self, Identity};
use crate::engine::Engine;
use crate::ice::Credentials;
use crate::io::{MAX_DATAGRAM, TX_BUFFERS, Tx};
use crate::spec::{
    ConsumerSpec, DataSpec, Error, MediaEvent, ProducerSpec, RouterId, TransportId, TransportKind,
    TransportSpec,
};

/// Every transport a `Sim` connects goes into this router (channel).
pub const ROUTER: RouterId = RouterId(7);
/// Simulated time per `step`.
pub const STEP: Duration = Duration::from_millis(5);

/// Why a simulated peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("client identity: {0}")]
    Identity(#[from] dtls::Error),
    #[error(transparent)]
    Engine(#[from] Error),
}

/// A client transport on the simulated network, and what it received.
pub struct Peer {
    pub addr: SocketAddr,
    pub client: Client,
    /// Decrypted RTP and RTCP it received, oldest first.
    pub rtp: Vec<Vec<u8>>,
    pub rtcp: Vec<Vec<u8>>,
    /// Errors its client reported on received datagrams.
    pub errors: Vec<String>,
    /// Sends nothing while set (to let consent expire).
    pub silent: bool,
    inbox: VecDeque<Vec<u8>>,
}

pub struct Sim {
    pub engine: Engine,
    /// The engine's send buffers, as large a pool as a worker has.
    pub tx: Tx,
    pub now: Instant,
    /// The certificate the engine's transports present.
    pub identity: Arc<Identity>,
    pub peers: Vec<Peer>,
    /// Datagrams sent to addresses that are not peers (a pipe's other end), with where to.
    pub elsewhere: Vec<(SocketAddr, Vec<u8>)>,
}

impl Sim {
    /// An engine seeded with `seed`, no transports.
    pub fn new(seed: u64) -> Result<Sim, dtls::Error> {
        let identity = Identity::generate()?;
        let now = Instant::now();
        Ok(Sim {
            engine: Engine::new(identity.clone(), seed, now),
            tx: Tx::new(TX_BUFFERS),
            now,
            identity,
            peers: Vec::new(),
            elsewhere: Vec::new(),
        })
    }

    /// Creates peer connection `id` in [`ROUTER`] expecting a client with `client_identity`;
    /// returns the server's and the client's ICE credentials.
    pub fn create(
        &mut self,
        id: TransportId,
        client_identity: &Identity,
        producers: Vec<ProducerSpec>,
        consumers: Vec<ConsumerSpec>,
    ) -> Result<(Credentials, Credentials), Error> {
        self.create_with_data(id, client_identity, producers, consumers, None)
    }

    /// [`create`](Self::create) with data channels (`data`).
    pub fn create_with_data(
        &mut self,
        id: TransportId,
        client_identity: &Identity,
        producers: Vec<ProducerSpec>,
        consumers: Vec<ConsumerSpec>,
        data: Option<DataSpec>,
    ) -> Result<(Credentials, Credentials), Error> {
        let (server_ice, client_ice) = (Credentials::random(), Credentials::random());
        let spec = TransportSpec {
            id,
            router: ROUTER,
            kind: TransportKind::WebRtc {
                local_ice: server_ice.clone(),
                remote_ice: client_ice.clone(),
                remote_fingerprint: client_identity.fingerprint().clone(),
            },
            producers,
            consumers,
            data,
        };
        self.engine.create_transport(self.now, spec)?;
        Ok((server_ice, client_ice))
    }

    /// Creates peer connection `id` and a client for it (connected by `step`s, or
    /// `handshake`); returns the peer's index.
    pub fn connect(
        &mut self,
        id: TransportId,
        producers: Vec<ProducerSpec>,
        consumers: Vec<ConsumerSpec>,
    ) -> Result<usize, SimError> {
        let identity = Identity::generate()?;
        let (server_ice, client_ice) = self.create(id, &identity, producers, consumers)?;
        let client = Client::new(
            &identity,
            client_ice,
            server_ice,
            self.identity.fingerprint().clone(),
            self.now,
            id.0,
        );
        Ok(self.add_peer(client))
    }

    /// A peer connection with data channels only (`data`), and its client with its SCTP
    /// association enabled; returns the peer's index.
    pub fn connect_data(&mut self, id: TransportId, data: DataSpec) -> Result<usize, SimError> {
        let identity = Identity::generate()?;
        let remote_max = data.remote_max_message_size;
        let (server_ice, client_ice) =
            self.create_with_data(id, &identity, Vec::new(), Vec::new(), Some(data))?;
        let mut client = Client::new(
            &identity,
            client_ice,
            server_ice,
            self.identity.fingerprint().clone(),
            self.now,
            id.0,
        );
        client
            .enable_data_channels(remote_max)
            .map_err(|e| SimError::Engine(Error::Rejected(e.to_string())))?;
        Ok(self.add_peer(client))
    }

    /// Puts `client` on the network at the next free address; returns its index.
    pub fn add_peer(&mut self, client: Client) -> usize {
        let index = self.peers.len();
        let port = 20_000 + u16::try_from(index).unwrap_or(u16::MAX - 20_000);
        self.peers.push(Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client,
            rtp: Vec::new(),
            rtcp: Vec::new(),
            errors: Vec::new(),
            silent: false,
            inbox: VecDeque::new(),
        });
        index
    }

    /// Hands the engine one datagram from `from`, as a backend does.
    pub fn deliver(&mut self, from: SocketAddr, datagram: &mut [u8]) {
        self.engine
            .handle_datagram(self.now, from, datagram, &mut self.tx);
    }

    /// One round on the network: every peer sends what it has, the engine runs its due timers,
    /// what it queued reaches the peers (or `elsewhere`), the peers handle it, and the clock
    /// moves on by [`STEP`].
    pub fn step(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for i in 0..self.peers.len() {
            if self.peers[i].silent {
                continue;
            }
            loop {
                let now = self.now;
                match self.peers[i].client.poll_transmit(now, &mut buf) {
                    Ok(Some(n)) => {
                        let from = self.peers[i].addr;
                        if let Some(datagram) = buf.get_mut(..n) {
                            self.deliver(from, datagram);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.peers[i].errors.push(e.to_string());
                        break;
                    }
                }
            }
        }
        self.engine.handle_timeout(self.now, &mut self.tx);
        let (peers, elsewhere) = (&mut self.peers, &mut self.elsewhere);
        self.tx.drain_to(
            |dst, bytes| match peers.iter_mut().find(|p| p.addr == dst) {
                Some(p) => p.inbox.push_back(bytes.to_vec()),
                None => elsewhere.push((dst, bytes.to_vec())),
            },
        );
        for p in &mut self.peers {
            while let Some(mut d) = p.inbox.pop_front() {
                match p.client.handle_datagram(self.now, &mut d) {
                    Ok(Received::Rtp(n)) => p.rtp.push(d[..n].to_vec()),
                    Ok(Received::Rtcp(n)) => p.rtcp.push(d[..n].to_vec()),
                    Ok(Received::Other) => {}
                    Err(e) => p.errors.push(e.to_string()),
                }
            }
            if let Err(e) = p.client.handle_timeout(self.now) {
                p.errors.push(e.to_string());
            }
        }
        self.now += STEP;
    }

    /// Steps until `done` holds, at most `max_steps` times; returns whether it held.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Steps until every peer is connected (at most 10 s of simulated time).
    pub fn handshake(&mut self) -> bool {
        self.run_until(2000, |s| s.peers.iter().all(|p| p.client.is_connected()))
    }

    /// Discards what the engine queued, as a backend's send would free the buffers.
    pub fn drain(&mut self) {
        self.tx.drain_to(|_, data| {
            std::hint::black_box(data);
        });
    }

    pub fn event(&mut self) -> Option<MediaEvent> {
        self.engine.poll_event()
    }
}
