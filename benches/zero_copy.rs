//! The send path alone, copied against zero-copy, by train size: what a worker core pays to
//! hand GSO trains to a device, without loopback's receive side (which would copy every
//! zero-copy send anyway and so hide the difference).
//!
//! The sink is one end of a veth pair whose other end is down, in a network namespace of the
//! benchmark's own: with no carrier the kernel builds each datagram (copying the payload, or
//! pinning our buffers for a zero-copy send) and drops it at the device's queue, where a NIC
//! would take it for DMA. veth offers what zero-copy needs (scatter-gather, checksum and UDP
//! segmentation offload); a TUN device does not, and the kernel copies there anyway.
//!
//! Each element is one datagram of 1200 bytes; a round writes and queues `TRAIN` datagrams to
//! each of 32 destinations, and the time reported is the CPU time of every thread but
//! criterion's (the worker's loop, the kernel's work on its behalf, an SQPOLL thread).
//!
//! Needs root (`unshare(CLONE_NEWNET)`, `ip link add`); elsewhere it says so and skips.
//! `cargo bench -p switchyard-benches --bench zero_copy`

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use switchyard_dataplane::io::{self, Backend, Handler, Options, TX_BUFFERS, Tx, Waker};
use switchyard_dataplane::stats::Counters;

#[path = "cpu.rs"]
mod cpu;
use cpu::other_threads_cpu;

const SIZE: usize = 1200;
const DESTINATIONS: usize = 32;
/// Datagrams per destination per round (`TRAIN`): the train size (1: no trains).
const TRAINS: [usize; 6] = [1, 2, 4, 8, 11, 16];
/// The sink's subnet; the device is 10.9.0.1, destinations are 10.9.0.2.
const SINK: [u8; 4] = [10, 9, 0, 2];

/// Queues rounds of datagrams as criterion asks for them and counts what the kernel took.
struct Rounds {
    train: usize,
    wanted: Arc<AtomicU64>,
    queued: u64,
    /// Rounds queued and every buffer back: the kernel is done with them.
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    counters: Counters,
}

impl Handler for Rounds {
    fn on_datagram(&mut self, _: Instant, _: SocketAddr, _: &mut [u8], _: &mut Tx) {}

    /// One round per turn of the loop, so that each send round holds one train per
    /// destination (more rounds at once would merge into longer trains).
    fn on_tick(&mut self, now: Instant, tx: &mut Tx) -> Option<Instant> {
        let round = self.train * DESTINATIONS;
        let wanted = self.wanted.load(Ordering::Acquire);
        if self.queued < wanted && tx.free() >= round {
            for d in 0..DESTINATIONS {
                let dst = SocketAddr::from((SINK, 5000 + d as u16));
                for _ in 0..self.train {
                    // Written, as the engine writes (encrypts) every byte it sends: the copy
                    // a copied send makes reads from cache, as it would in the server.
                    tx.push(dst, |out| {
                        out.get_mut(..SIZE)?.fill(self.queued as u8);
                        Some(SIZE)
                    });
                }
            }
            self.queued += 1;
        }
        if self.queued < wanted {
            return Some(now);
        }
        if tx.free() == TX_BUFFERS {
            self.done.store(self.queued, Ordering::Release);
            return None;
        }
        // Zero-copy buffers come back with their notifications: look again soon.
        Some(now + Duration::from_micros(50))
    }

    fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }
}

/// A backend running `Rounds` on its own thread.
struct Sender {
    waker: Waker,
    wanted: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<Counters>>,
}

impl Sender {
    fn start(backend: Backend, options: Options, train: usize) -> Sender {
        let socket = io::bind_udp([10, 9, 0, 1].into(), 0..=0).expect("bind");
        let options = Options {
            gso: io::gso_supported(&socket),
            ..options
        };
        let waker = Waker::new().expect("waker");
        let (wanted, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut rounds = Rounds {
            train,
            wanted: wanted.clone(),
            queued: 0,
            done: done.clone(),
            stop: stop.clone(),
            counters: Counters::default(),
        };
        let w = waker.clone();
        let thread = std::thread::spawn(move || {
            io::run(backend, &socket, None, &w, &mut rounds, &options).map(|()| rounds.counters)
        });
        Sender {
            waker,
            wanted,
            done,
            stop,
            thread,
        }
    }

    /// Sends `n` more rounds and waits until the kernel is done with them.
    fn rounds(&self, n: u64) {
        let target = self.wanted.fetch_add(n, Ordering::AcqRel) + n;
        self.waker.wake();
        while self.done.load(Ordering::Acquire) < target {
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    fn stop(self) -> Counters {
        self.stop.store(true, Ordering::Relaxed);
        self.waker.wake();
        self.thread.join().expect("sender").expect("loop")
    }
}

/// This process's main thread in a network namespace of its own with the sink device, or why
/// not; the threads it starts later are in it too.
fn enter_sink_namespace() -> Result<(), String> {
    // SAFETY: unshare takes no pointers; the process is still single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {} (needs root)",
            std::io::Error::last_os_error()
        ));
    }
    // A permanent neighbour: datagrams waiting on ARP would hold zero-copy buffers for
    // seconds.
    let steps: [&[&str]; 4] = [
        &[
            "link", "add", "sink0", "type", "veth", "peer", "name", "sink1",
        ],
        &["link", "set", "sink0", "up"],
        &["addr", "add", "10.9.0.1/24", "dev", "sink0"],
        &[
            "neigh",
            "add",
            "10.9.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "sink0",
            "nud",
            "permanent",
        ],
    ];
    for args in steps {
        let status = Command::new("ip").args(args).status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            return Err(format!("ip {}: {status:?}", args.join(" ")));
        }
    }
    Ok(())
}

/// The ways compared, each with a name: mmsg, then io_uring copying, zero-copy from
/// registered buffers, and copying under SQPOLL.
fn setups() -> Vec<(&'static str, Backend, Options)> {
    let with = |zero_copy: bool, sqpoll| Options {
        gso: true,
        zero_copy_from: zero_copy.then_some(0),
        sqpoll,
    };
    let mut all = vec![("mmsg", Backend::Mmsg, with(false, false))];
    if Backend::detect() == Backend::Uring {
        all.push(("uring", Backend::Uring, with(false, false)));
        all.push(("uring_zc", Backend::Uring, with(true, false)));
        all.push(("uring_sqpoll", Backend::Uring, with(false, true)));
    }
    all
}

fn main() {
    // Criterion first: it asks `cargo metadata` where to write, which needs the host's network
    // namespace (in the new one it would write under benches/).
    let mut c = Criterion::default().configure_from_args();
    if let Err(why) = enter_sink_namespace() {
        eprintln!("zero_copy: skipped: {why}");
        return;
    }
    let mut group = c.benchmark_group("send_sink");
    for train in TRAINS {
        group.throughput(Throughput::Elements((train * DESTINATIONS) as u64));
        for (name, backend, options) in setups() {
            let sender = Sender::start(backend, options, train);
            group.bench_function(BenchmarkId::new(name, train), |b| {
                b.iter_custom(|iters| {
                    let before = other_threads_cpu();
                    sender.rounds(iters);
                    other_threads_cpu().saturating_sub(before)
                })
            });
            let c = sender.stop();
            eprintln!(
                "send_sink/{name}/{train}: {} trains, {} zero-copy ({} copied), {} fallbacks",
                c.gso_trains,
                c.zero_copy_trains,
                c.zero_copy_copied,
                c.gso_fallbacks + c.zero_copy_fallbacks
            );
        }
    }
    group.finish();
    c.final_summary();
}
