//! The server's cost of one ICE connectivity check: a binding request as our client (and a
//! browser) sends it, with USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
//! MESSAGE-INTEGRITY and FINGERPRINT.
//!
//! - `engine`: the whole path, `Engine::on_datagram` on a worker holding 1000 transports:
//!   classify, parse, find the transport by ufrag, check integrity and fingerprint, write the
//!   success response (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT) into a send buffer,
//!   record the address; then the buffer is freed as a backend's send would.
//! - `parse` and `ice_lite`: the parts, `stun::Message::parse` alone and with
//!   `IceLite::handle_request` (checks and response) after it.
//!
//! `cargo bench -p switchyard-benches --bench stun`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_benches::Sim;
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::IceLite;
use switchyard_dataplane::io::MAX_DATAGRAM;
use switchyard_dataplane::stun;

/// Transports on the worker besides the one checked: the ufrag lookup is in a full table.
const OTHER_TRANSPORTS: usize = 999;

fn binding(c: &mut Criterion) {
    let mut sim = Sim::new();
    let fingerprint = Identity::generate()
        .expect("identity")
        .fingerprint()
        .clone();
    for _ in 0..OTHER_TRANSPORTS {
        sim.create(fingerprint.clone(), Vec::new(), Vec::new());
    }
    let peer = sim.connect(Vec::new(), Vec::new());
    let mut request = vec![0u8; MAX_DATAGRAM];
    let now = sim.now;
    let n = sim.peers[peer]
        .client
        .poll_transmit(now, &mut request)
        .expect("client")
        .expect("a connectivity check is due");
    request.truncate(n);
    sim.deliver(peer, &mut request);
    assert_eq!(sim.tx.queued(), 1, "the check is answered");
    sim.drain();

    let mut group = c.benchmark_group("stun_binding");
    group.throughput(Throughput::Elements(1));
    group.bench_function("engine", |b| {
        b.iter(|| {
            sim.deliver(peer, black_box(&mut request));
            sim.drain();
        })
    });

    group.bench_function("parse", |b| {
        b.iter(|| black_box(stun::Message::parse(black_box(&request)).expect("parse")))
    });

    let p = &sim.peers[peer];
    let mut ice = IceLite::new(p.server_ice.clone(), p.client.local().clone(), now);
    let src: SocketAddr = p.addr;
    let mut out = [0u8; MAX_DATAGRAM];
    group.bench_function("ice_lite", |b| {
        b.iter(|| {
            let msg = stun::Message::parse(black_box(&request)).expect("parse");
            black_box(
                ice.handle_request(now, src, &msg, &mut out)
                    .expect("valid check"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, binding);
criterion_main!(benches);
