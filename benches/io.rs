//! The worker loop on io_uring against recvmmsg/sendmmsg with the same traffic over loopback,
//! both backends in the same run:
//!
//! - `io_echo`: a client sends bursts of 32 datagrams of 1200 bytes and reads the echoes, one
//!   round trip per element.
//! - `io_fanout`: an SFU's shape of traffic: a client sends a batch of 32 datagrams of 1200
//!   bytes, the handler queues each to N destinations (sockets the client reads), and the
//!   batch is done when all 32 × N have arrived. Timed twice: `wall` is the batch's wall time;
//!   `worker_cpu` is the CPU time every thread but the client's spent on it (the backend's
//!   loop, with its system calls, and any io_uring kernel workers), which is what the
//!   backend costs a worker core. Elements are datagrams sent.
//!
//! `cargo bench -p switchyard-benches --bench io`

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_dataplane::io::{self, Backend, Handler, MAX_DATAGRAM, Tx, Waker};
use switchyard_dataplane::stats::Counters;

#[path = "cpu.rs"]
mod cpu;
use cpu::other_threads_cpu;

const BURST: usize = 32;
const SIZE: usize = 1200;
/// Destinations per received datagram in `io_fanout`.
const FANOUT: [usize; 2] = [1, 10];

/// Queues each datagram to every destination, or back to its source when there are none.
struct Forward {
    dsts: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    counters: Counters,
}

impl Handler for Forward {
    fn on_datagram(&mut self, _now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        let echo = [src];
        let dsts = if self.dsts.is_empty() {
            &echo[..]
        } else {
            &self.dsts
        };
        for &dst in dsts {
            tx.push(dst, |out| {
                out.get_mut(..data.len())?.copy_from_slice(data);
                Some(data.len())
            });
        }
    }

    fn on_tick(&mut self, _now: Instant, _tx: &mut Tx) -> Option<Instant> {
        None
    }

    fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }
}

/// A backend running `Forward` on its own thread, as a worker runs its engine.
struct Server {
    addr: SocketAddr,
    waker: Waker,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn start(backend: Backend, dsts: Vec<SocketAddr>) -> Server {
        let socket = io::bind_udp("127.0.0.1".parse().expect("ip"), 0..=0).expect("bind");
        let addr = socket.local_addr().expect("addr");
        let waker = Waker::new().expect("waker");
        let stop = Arc::new(AtomicBool::new(false));
        let mut handler = Forward {
            dsts,
            stop: stop.clone(),
            counters: Counters::default(),
        };
        let w = waker.clone();
        let options = io::Options {
            gso: io::gso_supported(&socket),
            ..io::Options::default()
        };
        let thread =
            std::thread::spawn(move || io::run(backend, &socket, None, &w, &mut handler, &options));
        Server {
            addr,
            waker,
            stop,
            thread,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.waker.wake();
        self.thread.join().expect("server thread").expect("loop");
    }
}

/// The backends this machine can run, io_uring first.
fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Mmsg];
    if Backend::detect() == Backend::Uring {
        all.insert(0, Backend::Uring);
    }
    all
}

/// A blocking client socket on loopback that gives up after two seconds.
fn client_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
}

fn echo_round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("io_echo");
    group.throughput(Throughput::Elements(1));
    for backend in backends() {
        let server = Server::start(backend, Vec::new());
        let client = client_socket();
        client.connect(server.addr).expect("connect");
        let payload = [0x5Au8; SIZE];
        let mut buf = [0u8; MAX_DATAGRAM];
        group.bench_function(BenchmarkId::new(backend.as_str(), SIZE), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(BURST);
                    for _ in 0..n {
                        client.send(&payload).expect("send");
                    }
                    for _ in 0..n {
                        black_box(client.recv(&mut buf).expect("echo"));
                    }
                    left -= n;
                }
                start.elapsed()
            })
        });
        server.stop();
    }
    group.finish();
}

/// One batch: 32 datagrams to the server, then every copy read from every sink.
fn fan_out_batch(client: &UdpSocket, server: SocketAddr, sinks: &[UdpSocket], buf: &mut [u8]) {
    let payload = [0x5Au8; SIZE];
    for _ in 0..BURST {
        client.send_to(&payload, server).expect("send");
    }
    for sink in sinks {
        for _ in 0..BURST {
            black_box(sink.recv(buf).expect("forwarded datagram"));
        }
    }
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("io_fanout");
    for n in FANOUT {
        group.throughput(Throughput::Elements((BURST * n) as u64));
        for backend in backends() {
            let sinks: Vec<UdpSocket> = (0..n).map(|_| client_socket()).collect();
            let dsts = sinks
                .iter()
                .map(|s| s.local_addr().expect("addr"))
                .collect();
            let server = Server::start(backend, dsts);
            let client = client_socket();
            let mut buf = [0u8; MAX_DATAGRAM];
            let name = backend.as_str();
            group.bench_function(BenchmarkId::new(format!("{name}_wall"), n), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        fan_out_batch(&client, server.addr, &sinks, &mut buf);
                    }
                    start.elapsed()
                })
            });
            group.bench_function(BenchmarkId::new(format!("{name}_worker_cpu"), n), |b| {
                b.iter_custom(|iters| {
                    let before = other_threads_cpu();
                    for _ in 0..iters {
                        fan_out_batch(&client, server.addr, &sinks, &mut buf);
                    }
                    other_threads_cpu().saturating_sub(before)
                })
            });
            server.stop();
        }
    }
    group.finish();
}

criterion_group!(benches, echo_round_trips, fan_out);
criterion_main!(benches);
