//! The media server as the control plane sees it: worker threads, one pinned per core, each
//! driving an [`Engine`] under an I/O backend, reached through bounded command queues.
//!
//! This is the only place channels and threads meet the engine: commands go to a worker on a
//! bounded queue and an eventfd wakes its loop; replies come back on oneshot channels and events
//! on an unbounded channel (a handful per transport lifetime), so neither side ever blocks on
//! the other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::dtls::Identity;
use crate::engine::Engine;
use crate::handoff::{self, Hub};
use crate::io::{self, Backend, Handler, Tx, Waker};
use crate::lane::{self, Far};
use crate::mcu::{Mcu, McuLanes, ToMcu};
use crate::spec::{Error, MediaEvent, Preferences, TransportId, TransportSpec};
use crate::stats::{self, Counters, DropReason};

/// Commands a worker's queue holds before `create_transport` reports it busy.
const COMMAND_QUEUE: usize = 1024;
/// Handed-off datagrams a tick takes before the loop's sockets get a turn.
const HANDOFF_BATCH: usize = 256;
/// Counters are published for the control plane at most this often (and not at all while
/// nothing changes, so an idle worker sleeps).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

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
    /// Also listen on TCP at each worker's port, for ICE-TCP (RFC 6544) passive candidates.
    pub ice_tcp: bool,
    /// Where the process's embedded TURN server hands relayed datagrams over in-process.
    pub handoff: Option<Arc<Hub>>,
    /// MCU threads (mixers), each pinned to a core after the workers'; 0: no MCU.
    pub mcu_workers: usize,
    /// How workers send: GSO trains where the kernel takes them (probed per socket at
    /// start), and io_uring's zero-copy trains and SQPOLL mode where asked for.
    pub io: io::Options,
}

/// What the control plane asks of a worker.
enum Command {
    CreateTransport {
        /// Boxed: a spec is several times larger than the other commands.
        spec: Box<TransportSpec>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    CloseTransport {
        id: TransportId,
    },
    SetPreferences {
        id: TransportId,
        prefs: Preferences,
    },
    Stop,
}

/// One worker thread's state: its engine and the ends of its channels.
struct Worker {
    engine: Engine,
    commands: Receiver<Command>,
    events: mpsc::UnboundedSender<MediaEvent>,
    shared: Arc<stats::Shared>,
    /// What was last published, and when.
    published: Counters,
    last_publish: Instant,
    stopped: bool,
    /// The in-process lane from TURN, and this worker's media port (what TURN sees it from).
    handoff: Option<(Arc<Hub>, std::sync::mpsc::Receiver<handoff::Datagram>, u16)>,
    /// The lanes to and from the MCU threads.
    mcu: Option<McuLanes>,
    /// Lanes between the workers, for a channel's shard links (with two workers or more).
    peers: Option<Peers>,
}

/// A worker's lane from the other workers, and its way to theirs.
struct Peers {
    inbound: Receiver<lane::Packet>,
    /// Each worker's lane and the waker of its loop, by worker index (its own included).
    to: Vec<(SyncSender<lane::Packet>, Waker)>,
}

impl Peers {
    /// One per worker, each with every worker's lane.
    fn all(wakers: &[Waker]) -> Vec<Peers> {
        let (senders, receivers): (Vec<_>, Vec<_>) = wakers
            .iter()
            .map(|_| std::sync::mpsc::sync_channel(lane::LANE_CAPACITY))
            .unzip();
        let to: Vec<_> = senders.into_iter().zip(wakers.iter().cloned()).collect();
        receivers
            .into_iter()
            .map(|inbound| Peers {
                inbound,
                to: to.clone(),
            })
            .collect()
    }
}

impl Worker {
    /// Feeds what TURN handed over to the engine; true when the lane still holds more.
    fn take_handed_off(&mut self, now: Instant, tx: &mut Tx) -> bool {
        let Some((_, lane, _)) = &self.handoff else {
            return false;
        };
        for _ in 0..HANDOFF_BATCH {
            match lane.try_recv() {
                Ok(mut d) => self.engine.handle_datagram(now, d.src, d.payload(), tx),
                Err(_) => return false,
            }
        }
        true
    }

    /// Feeds the engine what came on its lanes: what the mixers made, and what shard links
    /// on other workers sent; true when a lane still holds more.
    fn take_lanes(&mut self, now: Instant, tx: &mut Tx) -> bool {
        let mut more = false;
        if let Some(lanes) = &self.mcu {
            more |= drain(&lanes.from_mcu, |p| {
                self.engine.handle_lane(now, p.transport, p.data(), tx)
            });
        }
        if let Some(peers) = &self.peers {
            more |= drain(&peers.inbound, |p| {
                self.engine.handle_lane(now, p.transport, p.data(), tx)
            });
        }
        more
    }

    /// Hands what the engine queued to other threads' transports (mixer streams, shard
    /// links) to their lanes, and tells the MCU threads which mixer streams closed.
    fn hand_to_lanes(&mut self, tx: &mut Tx) {
        if let Some(lanes) = &self.mcu {
            // Told again next time when the lane is full.
            self.engine
                .closed_mixer_streams()
                .retain(|&(mcu, transport)| {
                    lanes.to_mcu.get(mcu).is_some_and(|q| {
                        matches!(
                            q.try_send(ToMcu::Closed(transport)),
                            Err(TrySendError::Full(_))
                        )
                    })
                });
            // What the MCU threads could not take from us.
            let dropped = lanes.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
            self.engine
                .counters_mut()
                .drop_many(DropReason::TxFull, dropped);
        }
        if !self.engine.has_lane_streams() {
            return;
        }
        let (mcu, peers) = (&self.mcu, &self.peers);
        let counters = self.engine.counters_mut();
        let mut woken = 0u64;
        tx.take_if(|data, dst| {
            let Some((far, transport)) = lane::parse(&dst) else {
                return false;
            };
            let packet = lane::Packet::new(transport, data);
            let sent = match far {
                Far::Mcu(n) => packet.is_some_and(|p| {
                    mcu.as_ref()
                        .and_then(|l| l.to_mcu.get(n))
                        .is_some_and(|q| q.try_send(ToMcu::Packet(p)).is_ok())
                }),
                Far::Worker(n) => packet.is_some_and(|p| {
                    let sent = peers
                        .as_ref()
                        .and_then(|peers| peers.to.get(n))
                        .is_some_and(|(q, _)| q.try_send(p).is_ok());
                    if sent {
                        woken |= 1 << n.min(63);
                    }
                    sent
                }),
            };
            if !sent {
                counters.drop(DropReason::TxFull);
            }
            true
        });
        if let Some(peers) = peers {
            for (n, (_, waker)) in peers.to.iter().enumerate().take(64) {
                if woken & (1 << n) != 0 {
                    waker.wake();
                }
            }
        }
    }

    /// Hands the queued datagrams addressed to a relay of this process's TURN server to its
    /// thread instead of the kernel.
    fn hand_to_turn(&mut self, tx: &mut Tx) {
        let Some((hub, _, port)) = &self.handoff else {
            return;
        };
        if !hub.has_relays() {
            return;
        }
        let counters = self.engine.counters_mut();
        // Threads to wake, as bits (a process has at most a few dozen).
        let mut woken = 0u64;
        tx.take_if(|data, dst| {
            let Some(thread) = hub.turn_for(dst) else {
                return false;
            };
            if hub.to_turn(thread, *port, dst, data) {
                woken |= 1 << thread.min(63);
            } else {
                counters.drop(DropReason::TxFull);
            }
            true
        });
        for thread in (0..64).filter(|t| woken & (1 << t) != 0) {
            hub.wake_turn(thread);
        }
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::CreateTransport { spec, reply } => {
                let result = self.engine.create_transport(now, *spec);
                // The control plane may have given up waiting; nothing to do then.
                let _ = reply.send(result);
            }
            Command::CloseTransport { id } => self.engine.close_transport(id),
            Command::SetPreferences { id, prefs } => self.engine.set_preferences(now, id, prefs),
            Command::Stop => {
                self.engine.close_all();
                self.stopped = true;
            }
        }
    }

    /// Publishes the counters if they changed and the last publication is old enough;
    /// otherwise returns when to publish them.
    fn publish(&mut self, now: Instant) -> Option<Instant> {
        let counters = self.engine.counters();
        if *counters == self.published {
            return None;
        }
        let due = self.last_publish + PUBLISH_INTERVAL;
        if now < due {
            return Some(due);
        }
        self.shared.publish(counters);
        self.published = counters.clone();
        self.last_publish = now;
        None
    }
}

/// Takes up to `HANDOFF_BATCH` packets from `lane` into `take`; true when it holds more.
fn drain<T>(lane: &Receiver<T>, mut take: impl FnMut(T)) -> bool {
    for _ in 0..HANDOFF_BATCH {
        match lane.try_recv() {
            Ok(p) => take(p),
            Err(_) => return false,
        }
    }
    true
}

impl Handler for Worker {
    fn on_datagram(&mut self, now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        self.engine.handle_datagram(now, src, data, tx);
    }

    fn on_tick(&mut self, now: Instant, tx: &mut Tx) -> Option<Instant> {
        let more_handed_off = self.take_handed_off(now, tx) | self.take_lanes(now, tx);
        loop {
            match self.commands.try_recv() {
                Ok(command) => self.command(now, command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The control plane is gone: stop as if told to.
                    self.command(now, Command::Stop);
                    break;
                }
            }
        }
        self.engine.handle_timeout(now, tx);
        while let Some(event) = self.engine.poll_event() {
            let _ = self.events.send(event);
        }
        self.hand_to_turn(tx);
        self.hand_to_lanes(tx);
        let publish = self.publish(now);
        let soon = more_handed_off.then_some(now);
        [self.engine.poll_timeout(), publish, soon]
            .into_iter()
            .flatten()
            .min()
    }

    fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn counters(&mut self) -> &mut Counters {
        self.engine.counters_mut()
    }
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
    ice_tcp: bool,
    handoff: Option<Arc<Hub>>,
    workers: Vec<WorkerHandle>,
    /// The mixers' threads, when MCU workers were asked for.
    mcu: Option<Mcu>,
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
        if backend != Backend::Uring && (config.io.zero_copy_from.is_some() || config.io.sqpoll) {
            tracing::warn!(
                backend = backend.as_str(),
                "zero-copy sends and SQPOLL are io_uring's: ignored on this backend (--io-backend uring)"
            );
        }
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(config.workers);
        // Every socket and waker first: the hand-off lanes are registered all at once.
        let mut bound = Vec::with_capacity(config.workers.max(1));
        let mut next_port = config.port_min;
        for index in 0..config.workers.max(1) {
            let (socket, tcp) =
                io::bind_media(config.bind_ip, next_port..=config.port_max, config.ice_tcp)
                    .map_err(|e| {
                        let what = if config.ice_tcp { "UDP and TCP" } else { "UDP" };
                        Error::Start(format!(
                            "worker {index}: no port free for {what} in {next_port}-{}: {e}",
                            config.port_max
                        ))
                    })?;
            let addr = socket
                .local_addr()
                .map_err(|e| Error::Start(e.to_string()))?;
            next_port = addr.port().saturating_add(1);
            let waker = Waker::new().map_err(|e| Error::Start(format!("eventfd: {e}")))?;
            bound.push((socket, tcp, addr, waker));
        }
        let mut lanes = config.handoff.as_ref().map(|hub| {
            let ports: Vec<(u16, Waker)> = bound
                .iter()
                .map(|(_, _, a, w)| (a.port(), w.clone()))
                .collect();
            hub.register_workers(&ports).into_iter()
        });
        // MCU threads take the cores after the workers'.
        let (mcu, mut mcu_lanes) = if config.mcu_workers > 0 {
            let wakers = bound.iter().map(|(_, _, _, w)| w.clone()).collect();
            let mcu_cores = if config.pin && !cores.is_empty() {
                (0..config.mcu_workers)
                    .map(|i| cores[(config.first_core + bound.len() + i) % cores.len()])
                    .collect()
            } else {
                Vec::new()
            };
            let (mcu, lanes) = Mcu::start(config.mcu_workers, wakers, mcu_cores)?;
            (Some(mcu), lanes.into_iter())
        } else {
            (None, Vec::new().into_iter())
        };
        // Lanes between workers carry the shard links of channels spread over them.
        let mut peers = if bound.len() > 1 {
            let wakers: Vec<Waker> = bound.iter().map(|(_, _, _, w)| w.clone()).collect();
            Peers::all(&wakers).into_iter()
        } else {
            Vec::new().into_iter()
        };
        for (index, (socket, tcp, addr, waker)) in bound.into_iter().enumerate() {
            let (commands, commands_rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
            let shared = Arc::new(stats::Shared::default());
            let core = (config.pin && !cores.is_empty())
                .then(|| cores[(config.first_core + index) % cores.len()]);
            let now = Instant::now();
            let handoff = match (&config.handoff, lanes.as_mut().and_then(Iterator::next)) {
                (Some(hub), Some(lane)) => Some((hub.clone(), lane, addr.port())),
                _ => None,
            };
            let mut worker = Worker {
                engine: Engine::new(identity.clone(), rand::random(), now),
                commands: commands_rx,
                events: events_tx.clone(),
                shared: shared.clone(),
                published: Counters::default(),
                last_publish: now,
                stopped: false,
                handoff,
                mcu: mcu_lanes.next(),
                peers: peers.next(),
            };
            // Trains where asked for and the kernel takes them (reported in the start line).
            let options = io::Options {
                gso: config.io.gso && io::gso_supported(&socket),
                ..config.io
            };
            let gso = options.gso;
            worker.engine.set_frame_fanout(gso);
            let thread_waker = waker.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sy-worker-{index}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        tracing::warn!(worker = index, "could not pin to core {}", core.id);
                    }
                    if let Err(e) =
                        io::run(backend, &socket, tcp, &thread_waker, &mut worker, &options)
                    {
                        tracing::error!(worker = index, "I/O loop failed: {e}");
                    }
                })
                .map_err(|e| Error::Start(format!("spawn worker {index}: {e}")))?;
            tracing::info!(worker = index, %addr, ice_tcp = config.ice_tcp, backend = backend.as_str(), gso, zero_copy_from = ?options.zero_copy_from.filter(|_| backend == Backend::Uring), sqpoll = options.sqpoll && backend == Backend::Uring, core = ?core.map(|c| c.id), "media worker started");
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
                ice_tcp: config.ice_tcp,
                handoff: config.handoff.clone(),
                workers,
                mcu,
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

    /// Where an embedded TURN server of this process hands datagrams to the workers.
    pub fn handoff(&self) -> Option<Arc<Hub>> {
        self.handoff.clone()
    }

    /// The MCU threads, if any.
    pub fn mcu(&self) -> Option<&Mcu> {
        self.mcu.as_ref()
    }

    /// Whether each worker also takes ICE-TCP connections on its port.
    pub fn ice_tcp(&self) -> bool {
        self.ice_tcp
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
        let spec = Box::new(spec);
        self.send(worker, Command::CreateTransport { spec, reply })?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Closes a transport; a `Closed` event follows.
    pub fn close_transport(&self, worker: usize, transport: TransportId) -> Result<(), Error> {
        self.send(worker, Command::CloseTransport { id: transport })
    }

    /// Sets a subscriber's preferences for the consumers of its transport (see
    /// [`Preferences`]).
    pub fn set_preferences(
        &self,
        worker: usize,
        transport: TransportId,
        prefs: Preferences,
    ) -> Result<(), Error> {
        self.send(
            worker,
            Command::SetPreferences {
                id: transport,
                prefs,
            },
        )
    }

    /// Counters summed over the workers.
    pub fn stats(&self) -> Counters {
        let mut total = Counters::default();
        for w in &self.workers {
            total.add(&w.stats.snapshot());
        }
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
