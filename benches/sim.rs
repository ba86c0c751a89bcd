//! Shared setup for the engine benches: one worker's `Engine` in memory with real client
//! transports (controlling ICE, DTLS client, SRTP) connected to it through ICE and DTLS, as the
//! engine simulation tests (`dataplane/tests/engine.rs`) do. No sockets and a frozen clock, so
//! a bench times only the engine's own work on the packets it is handed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant};

use switchyard_dataplane::client::Client;
use switchyard_dataplane::dtls::{Fingerprint, Identity};
use switchyard_dataplane::engine::{Command, Engine};
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::io::{Handler, MAX_DATAGRAM, TX_BUFFERS, Tx};
use switchyard_dataplane::stats::Shared;
use switchyard_dataplane::worker::{ConsumerSpec, MediaEvent, ProducerSpec, TransportSpec};
use tokio::sync::{mpsc, oneshot};

/// Every transport goes into this one router (channel).
const ROUTER: u64 = 1;
/// Simulated time per handshake step.
const STEP: Duration = Duration::from_millis(5);
/// Handshake steps before giving up (10 s of simulated time).
const MAX_STEPS: usize = 2000;

/// A client transport, the address it sends from and the server side's ICE credentials.
pub struct Peer {
    pub addr: SocketAddr,
    pub client: Client,
    pub server_ice: Credentials,
}

pub struct Sim {
    pub engine: Engine,
    /// The engine's send buffers, as large a pool as a worker has.
    pub tx: Tx,
    pub now: Instant,
    pub peers: Vec<Peer>,
    commands: SyncSender<Command>,
    /// Kept so the engine's events have somewhere to go.
    _events: mpsc::UnboundedReceiver<MediaEvent>,
    identity: Arc<Identity>,
    next_id: u64,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Sim {
        let identity = Identity::generate().expect("server identity");
        let (commands, rx) = sync_channel(16);
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let now = Instant::now();
        Sim {
            engine: Engine::new(identity.clone(), rx, events_tx, shared, now),
            tx: Tx::new(TX_BUFFERS),
            now,
            peers: Vec::new(),
            commands,
            _events: events,
            identity,
            next_id: 1,
        }
    }

    /// Creates a transport on the engine expecting a client with `client_fingerprint`; returns
    /// the server's and the client's ICE credentials. No client is attached: enough to fill a
    /// worker's transport tables.
    pub fn create(
        &mut self,
        client_fingerprint: Fingerprint,
        producers: Vec<ProducerSpec>,
        consumers: Vec<ConsumerSpec>,
    ) -> (Credentials, Credentials) {
        let (server_ice, client_ice) = (Credentials::random(), Credentials::random());
        let spec = TransportSpec {
            id: self.next_id,
            router: ROUTER,
            local_ice: server_ice.clone(),
            remote_ice: client_ice.clone(),
            remote_fingerprint: client_fingerprint,
            producers,
            consumers,
            pipe: None,
        };
        self.next_id += 1;
        let (reply, answer) = oneshot::channel();
        self.commands
            .try_send(Command::CreateTransport { spec, reply })
            .expect("command queue");
        self.engine.on_tick(self.now, &mut self.tx);
        answer
            .blocking_recv()
            .expect("engine replied")
            .expect("transport created");
        (server_ice, client_ice)
    }

    /// Creates a transport with a client for it (not yet connected: see `handshake`); returns
    /// the peer's index.
    pub fn connect(&mut self, producers: Vec<ProducerSpec>, consumers: Vec<ConsumerSpec>) -> usize {
        let identity = Identity::generate().expect("client identity");
        let (server_ice, client_ice) =
            self.create(identity.fingerprint().clone(), producers, consumers);
        let client = Client::new(
            &identity,
            client_ice,
            server_ice.clone(),
            self.identity.fingerprint().clone(),
            self.now,
            self.peers.len() as u64,
        );
        let index = self.peers.len();
        let port = u16::try_from(20_000 + index).expect("port");
        self.peers.push(Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client,
            server_ice,
        });
        index
    }

    /// Runs ICE and DTLS between the engine and every client until all are connected.
    pub fn handshake(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..MAX_STEPS {
            if self.peers.iter().all(|p| p.client.is_connected()) {
                return;
            }
            for p in &mut self.peers {
                while let Some(n) = p.client.poll_transmit(self.now, &mut buf).expect("client") {
                    self.engine
                        .on_datagram(self.now, p.addr, &mut buf[..n], &mut self.tx);
                }
            }
            self.engine.on_tick(self.now, &mut self.tx);
            let (peers, now) = (&mut self.peers, self.now);
            self.tx.drain_to(|dst, data| {
                if let Some(p) = peers.iter_mut().find(|p| p.addr == dst) {
                    let mut copy = data.to_vec();
                    // Media and reports may reach a client before its own handshake ends.
                    let _ = p.client.handle_datagram(now, &mut copy);
                }
            });
            for p in &mut self.peers {
                p.client.handle_timeout(self.now).expect("client timeout");
            }
            self.now += STEP;
        }
        panic!("handshakes did not finish");
    }

    /// Hands the engine one datagram from peer `from`, as a backend does.
    pub fn deliver(&mut self, from: usize, datagram: &mut [u8]) {
        let addr = self.peers[from].addr;
        self.engine
            .on_datagram(self.now, addr, datagram, &mut self.tx);
    }

    /// Discards what the engine queued, as a backend's send would free the buffers.
    pub fn drain(&mut self) {
        self.tx.drain_to(|_, data| {
            std::hint::black_box(data);
        });
    }
}
