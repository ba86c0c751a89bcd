//! The worker loop on io_uring against recvmmsg/sendmmsg with the same traffic: a client sends
//! bursts of 1200-byte datagrams over loopback, the backend's handler echoes each one back.
//!
//! `cargo bench -p switchyard-benches --bench io`

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_dataplane::io::{self, Backend, Handler, Tx, Waker};

const BURST: usize = 32;
const SIZE: usize = 1200;

struct Echo {
    stop: Arc<AtomicBool>,
}

impl Handler for Echo {
    fn on_datagram(&mut self, _now: Instant, src: SocketAddr, data: &mut [u8], tx: &mut Tx) {
        tx.push(src, |out| {
            out.get_mut(..data.len())?.copy_from_slice(data);
            Some(data.len())
        });
    }

    fn on_tick(&mut self, _now: Instant, _tx: &mut Tx) -> Option<Instant> {
        None
    }

    fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn echo_round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("io_echo");
    group.throughput(Throughput::Elements(1));
    for backend in [Backend::Uring, Backend::Mmsg] {
        if backend == Backend::Uring && Backend::detect() != Backend::Uring {
            continue;
        }
        let socket = io::bind_udp("127.0.0.1".parse().expect("ip"), 0..=0).expect("bind");
        let addr = socket.local_addr().expect("addr");
        let waker = Waker::new().expect("waker");
        let stop = Arc::new(AtomicBool::new(false));
        let mut handler = Echo { stop: stop.clone() };
        let w = waker.clone();
        let server = std::thread::spawn(move || io::run(backend, &socket, &w, &mut handler));
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client.connect(addr).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let payload = [0x5Au8; SIZE];
        let mut buf = [0u8; 2048];
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
        stop.store(true, Ordering::Relaxed);
        waker.wake();
        server.join().expect("server thread").expect("loop");
    }
    group.finish();
}

criterion_group!(benches, echo_round_trips);
criterion_main!(benches);
