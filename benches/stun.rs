//! The server's cost of one ICE connectivity check: a binding request as our client (and a
//! browser) sends it, with USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
//! MESSAGE-INTEGRITY and FINGERPRINT.
//!
//! - `engine`: the whole path, `Engine::handle_datagram` on a worker holding 1000 transports:
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
use switchyard_dataplane::client::Client;
use switchyard_dataplane::dtls::Identity;
use switchyard_dataplane::ice::IceLite;
use switchyard_dataplane::io::MAX_DATAGRAM;
use switchyard_dataplane::sim::Sim;
use switchyard_dataplane::spec::TransportId;
use switchyard_dataplane::stun;

/// Transports on the worker besides the one checked: the ufrag lookup is in a full table.
const OTHER_TRANSPORTS: usize = 999;

fn binding(c: &mut Criterion) {
    let mut sim = Sim::new(1).expect("engine");
    let identity = Identity::generate().expect("identity");
    for i in 0..OTHER_TRANSPORTS {
        sim.create(TransportId(i as u64), &identity, Vec::new(), Vec::new())
            .expect("transport");
    }
    let (server_ice, client_ice) = sim
        .create(TransportId(u64::MAX), &identity, Vec::new(), Vec::new())
        .expect("transport");
    let client = Client::new(
        &identity,
        client_ice,
        server_ice.clone(),
        sim.identity.fingerprint().clone(),
        sim.now,
        1,
    );
    let peer = sim.add_peer(client);
    let src: SocketAddr = sim.peers[peer].addr;
    let mut request = vec![0u8; MAX_DATAGRAM];
    let now = sim.now;
    let n = sim.peers[peer]
        .client
        .poll_transmit(now, &mut request)
        .expect("client")
        .expect("a connectivity check is due");
    request.truncate(n);
    sim.deliver(src, &mut request);
    assert_eq!(sim.tx.queued(), 1, "the check is answered");
    sim.drain();

    let mut group = c.benchmark_group("stun_binding");
    group.throughput(Throughput::Elements(1));
    group.bench_function("engine", |b| {
        b.iter(|| {
            sim.deliver(src, black_box(&mut request));
            sim.drain();
        })
    });

    group.bench_function("parse", |b| {
        b.iter(|| black_box(stun::Message::parse(black_box(&request)).expect("parse")))
    });

    let p = &sim.peers[peer];
    let mut ice = IceLite::new(server_ice, p.client.local().clone(), now);
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
