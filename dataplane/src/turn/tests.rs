//! The TURN core driven with messages built by [`super::client`], without sockets.

// ok: this file is compiled for tests only (`#[cfg(test)]` on its `mod` line); every unwrap()/expect() in it is on values the tests built, never on network input

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client::{self, Credentials, Request};
use super::policy::PeerPolicy;
use super::*;
use crate::stun::{self as s, Class, Message};

const SECRET: &str = "north";
const NOW_UNIX: u64 = 1_800_000_000;

#[derive(Default)]
struct Out {
    to_client: Vec<(ClientAddr, Vec<u8>)>,
    to_peer: Vec<(RelayId, SocketAddr, Vec<u8>)>,
    bound: u32,
    closed: Vec<RelayId>,
    no_ports: bool,
}

impl Output for Out {
    fn to_client(
        &mut self,
        client: ClientAddr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let mut buf = vec![0u8; 2048];
        let Some(n) = fill(&mut buf) else {
            return false;
        };
        buf.truncate(n);
        self.to_client.push((client, buf));
        true
    }

    fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]) {
        self.to_peer.push((relay, peer, data.to_vec()));
    }

    fn bind_relay(&mut self, _family: Family) -> Option<(RelayId, SocketAddr)> {
        if self.no_ports {
            return None;
        }
        self.bound += 1;
        let addr = SocketAddr::new("198.51.100.1".parse().unwrap(), 50_000 + self.bound as u16);
        Some((RelayId(self.bound), addr))
    }

    fn close_relay(&mut self, relay: RelayId) {
        self.closed.push(relay);
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Harness {
    server: Server,
    out: Out,
    now: Instant,
    next_id: u8,
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut Config)) -> Harness {
        let mut config = Config::new("switchyard", auth::Secrets::new([SECRET]));
        config.relay_ips = vec!["198.51.100.1".parse().unwrap()];
        config.relay_ports = 50_000..=50_999;
        tweak(&mut config);
        let now = Instant::now();
        Harness {
            server: Server::new(config, now, NOW_UNIX, b"test seed"),
            out: Out::default(),
            now,
            next_id: 0,
        }
    }

    fn id(&mut self) -> [u8; 12] {
        self.next_id += 1;
        [self.next_id; 12]
    }

    /// Sends a message from `src` (over UDP) and returns the one answer, if any.
    fn send(&mut self, src: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        self.send_via(ClientAddr::Udp(src), src, msg)
    }

    fn send_via(&mut self, client: ClientAddr, src: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        let before = self.out.to_client.len();
        self.server
            .handle_client(self.now, client, src, msg, &mut self.out);
        assert!(self.out.to_client.len() <= before + 1);
        self.out.to_client.get(before).map(|(_, m)| m.clone())
    }

    fn request(
        &mut self,
        src: SocketAddr,
        creds: Option<&Credentials>,
        build: impl for<'b> FnOnce(&'b mut [u8], &[u8; 12]) -> Request<'b>,
    ) -> Vec<u8> {
        let id = self.id();
        let mut buf = [0u8; 1500];
        let n = build(&mut buf, &id).finish(creds).unwrap();
        let answer = self.send(src, &buf[..n]).expect("an answer");
        assert_eq!(Message::parse(&answer).unwrap().transaction_id(), &id);
        answer
    }

    /// The 401 dance: returns credentials for `user` holding the server's realm and nonce.
    fn credentials(&mut self, src: SocketAddr, user: &str, ttl: u64) -> Credentials {
        let challenge = self.request(src, None, |b, id| Request::allocate(b, id).unwrap());
        let m = Message::parse(&challenge).unwrap();
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.error_code().unwrap().0, 401);
        let realm = std::str::from_utf8(m.attribute(attr::REALM).unwrap()).unwrap();
        let nonce = m.attribute(attr::NONCE).unwrap();
        let username = format!("{}:{user}", NOW_UNIX + ttl);
        let password = auth::rest_password(SECRET.as_bytes(), &username);
        Credentials::new(&username, &password, realm, nonce)
    }

    fn allocate(&mut self, src: SocketAddr, creds: &Credentials) -> SocketAddr {
        let answer = self.request(src, Some(creds), |b, id| Request::allocate(b, id).unwrap());
        let m = Message::parse(&answer).unwrap();
        assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
        assert!(m.integrity_ok(creds.key()));
        assert_eq!(m.xor_mapped_address(), Some(src));
        m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    fn code(answer: &[u8]) -> u16 {
        Message::parse(answer)
            .unwrap()
            .error_code()
            .map_or(0, |(c, _)| c)
    }
}

const CLIENT: &str = "203.0.113.10:40000";
const PEER: &str = "192.0.2.77:5000";

#[test]
fn binding_answers_the_mapped_address() {
    let mut h = Harness::new(|_| {});
    let answer = h.request(addr(CLIENT), None, |b, id| {
        Request::new(b, s::method::BINDING, id).unwrap()
    });
    let m = Message::parse(&answer).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.xor_mapped_address(), Some(addr(CLIENT)));
    assert_eq!(m.fingerprint_ok(), Some(true));
    assert_eq!(h.server.counters().get(Counter::Bindings), 1);
}

#[test]
fn allocate_after_a_challenge() {
    let mut h = Harness::new(|_| {});
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    let id = h.id();
    let mut buf = [0u8; 1500];
    let n = Request::allocate(&mut buf, &id)
        .unwrap()
        .finish(Some(&creds))
        .unwrap();
    let first = h.send(c, &buf[..n]).unwrap();
    let m = Message::parse(&first).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(
        m.xor_address(attr::XOR_RELAYED_ADDRESS),
        Some(addr("198.51.100.1:50001"))
    );
    assert_eq!(m.attribute(attr::LIFETIME), Some(&600u32.to_be_bytes()[..]));
    // A retransmission gets the same answer; a new Allocate on the same 5-tuple a mismatch.
    assert_eq!(h.send(c, &buf[..n]).unwrap(), first);
    let again = h.request(c, Some(&creds), |b, id| Request::allocate(b, id).unwrap());
    assert_eq!(Harness::code(&again), 437);
    assert_eq!(h.server.counters().allocations, 1);
    assert_eq!(
        h.server.relayed_address(ClientAddr::Udp(c)),
        Some(addr("198.51.100.1:50001"))
    );
}

#[test]
fn bad_credentials_are_refused() {
    let mut h = Harness::new(|_| {});
    let c = addr(CLIENT);
    let good = h.credentials(c, "alice", 60);
    let wrong = Credentials::new(&good.username, "not the password", &good.realm, &good.nonce);
    let a = h.request(c, Some(&wrong), |b, id| Request::allocate(b, id).unwrap());
    assert_eq!(Harness::code(&a), 401);
    // A 401 carries a fresh challenge and no integrity.
    let m = Message::parse(&a).unwrap();
    assert!(m.attribute(attr::NONCE).is_some());
    assert!(m.attribute(s::attr::MESSAGE_INTEGRITY).is_none());

    let expired = h.credentials(c, "alice", 0);
    let username = format!("{}:alice", NOW_UNIX - 1);
    let password = auth::rest_password(SECRET.as_bytes(), &username);
    let expired = Credentials::new(&username, &password, &expired.realm, &expired.nonce);
    let a = h.request(c, Some(&expired), |b, id| Request::allocate(b, id).unwrap());
    assert_eq!(Harness::code(&a), 401);

    let bad_nonce = Credentials::new(
        &good.username,
        "x",
        &good.realm,
        b"0123456789abcdef01234567",
    );
    let a = h.request(c, Some(&bad_nonce), |b, id| {
        Request::allocate(b, id).unwrap()
    });
    assert_eq!(Harness::code(&a), 401);

    // The nonce expires: 438 with a new one, which then works.
    h.now += Duration::from_secs(auth::NONCE_LIFETIME_SECS + 5);
    let a = h.request(c, Some(&good), |b, id| Request::allocate(b, id).unwrap());
    assert_eq!(Harness::code(&a), 438);
    let fresh = h.credentials(c, "alice", 3600);
    h.allocate(c, &fresh);
    assert_eq!(h.server.counters().get(Counter::Unauthorized), 6);
    assert_eq!(h.server.counters().get(Counter::StaleNonce), 1);
}

#[test]
fn the_previous_secret_still_works_during_a_rotation() {
    let mut h = Harness::new(|c| c.secrets = auth::Secrets::new(["new", SECRET]));
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    h.allocate(c, &creds);
}

#[test]
fn relaying_through_permissions_and_channels() {
    let mut h = Harness::new(|_| {});
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    let relayed = h.allocate(c, &creds);
    let peer = addr(PEER);

    // Without a permission, nothing passes either way.
    let mut buf = [0u8; 1500];
    let n = client::send_indication(&mut buf, &[9; 12], peer, b"hello").unwrap();
    assert!(h.send(c, &buf[..n]).is_none());
    h.server
        .handle_peer(h.now, RelayId(1), peer, b"back", &mut h.out);
    assert!(h.out.to_client.len() == 2 && h.out.to_peer.is_empty());
    assert_eq!(h.server.counters().get(Counter::DropNoPermission), 2);

    let a = h.request(c, Some(&creds), |b, id| {
        Request::new(b, method::CREATE_PERMISSION, id)
            .unwrap()
            .peer(peer)
            .unwrap()
    });
    assert_eq!(Message::parse(&a).unwrap().class(), Class::Success);
    assert!(h.send(c, &buf[..n]).is_none());
    assert_eq!(
        h.out.to_peer.last().unwrap(),
        &(RelayId(1), peer, b"hello".to_vec())
    );

    // Peer data comes back in a Data indication.
    h.server
        .handle_peer(h.now, RelayId(1), peer, b"back", &mut h.out);
    let (to, data) = h.out.to_client.last().unwrap().clone();
    assert_eq!(to, ClientAddr::Udp(c));
    let m = Message::parse(&data).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, method::DATA));
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
    assert_eq!(m.attribute(attr::DATA), Some(&b"back"[..]));

    // A channel: ChannelData both ways.
    let a = h.request(c, Some(&creds), |b, id| {
        Request::new(b, method::CHANNEL_BIND, id)
            .unwrap()
            .channel(0x4001)
            .unwrap()
            .peer(peer)
            .unwrap()
    });
    assert_eq!(Message::parse(&a).unwrap().class(), Class::Success);
    let n = client::channel_data(&mut buf, 0x4001, b"fast").unwrap();
    assert!(h.send(c, &buf[..n]).is_none());
    assert_eq!(h.out.to_peer.last().unwrap().2, b"fast");
    h.server
        .handle_peer(h.now, RelayId(1), peer, b"12345", &mut h.out);
    assert_eq!(
        h.out.to_client.last().unwrap().1,
        [0x40, 0x01, 0, 5, b'1', b'2', b'3', b'4', b'5']
    );
    // The number is the peer's until it expires: binding it to another peer fails.
    let a = h.request(c, Some(&creds), |b, id| {
        Request::new(b, method::CHANNEL_BIND, id)
            .unwrap()
            .channel(0x4001)
            .unwrap()
            .peer(addr("192.0.2.78:5000"))
            .unwrap()
    });
    assert_eq!(Harness::code(&a), 400);
    assert_eq!(relayed, addr("198.51.100.1:50001"));
    assert_eq!(h.server.counters().get(Counter::ToPeerPackets), 2);
    assert_eq!(h.server.counters().get(Counter::ToClientPackets), 2);
}

#[test]
fn channel_data_over_a_stream_is_padded() {
    let mut h = Harness::new(|_| {});
    let c = addr(CLIENT);
    let stream = ClientAddr::Stream(7);
    let challenge = {
        let mut buf = [0u8; 1500];
        let n = Request::allocate(&mut buf, &[1; 12])
            .unwrap()
            .finish(None)
            .unwrap();
        h.send_via(stream, c, &buf[..n]).unwrap()
    };
    let m = Message::parse(&challenge).unwrap();
    let username = format!("{}:bob", NOW_UNIX + 60);
    let password = auth::rest_password(SECRET.as_bytes(), &username);
    let creds = Credentials::new(
        &username,
        &password,
        std::str::from_utf8(m.attribute(attr::REALM).unwrap()).unwrap(),
        m.attribute(attr::NONCE).unwrap(),
    );
    let mut buf = [0u8; 1500];
    let n = Request::allocate(&mut buf, &[2; 12])
        .unwrap()
        .finish(Some(&creds))
        .unwrap();
    let a = h.send_via(stream, c, &buf[..n]).unwrap();
    assert_eq!(Message::parse(&a).unwrap().class(), Class::Success);
    let n = Request::new(&mut buf, method::CHANNEL_BIND, &[3; 12])
        .and_then(|r| r.channel(0x4000))
        .and_then(|r| r.peer(addr(PEER)))
        .unwrap()
        .finish(Some(&creds))
        .unwrap();
    let a = h.send_via(stream, c, &buf[..n]).unwrap();
    assert_eq!(Message::parse(&a).unwrap().class(), Class::Success);
    h.server
        .handle_peer(h.now, RelayId(1), addr(PEER), b"12345", &mut h.out);
    assert_eq!(
        h.out.to_client.last().unwrap(),
        &(
            stream,
            vec![0x40, 0, 0, 5, b'1', b'2', b'3', b'4', b'5', 0, 0, 0]
        )
    );
    // The connection closing ends the allocation.
    h.server.client_closed(stream, &mut h.out);
    assert_eq!(h.out.closed, [RelayId(1)]);
}

#[test]
fn special_peers_are_forbidden_unless_allowed() {
    let mut h = Harness::new(|c| {
        c.policy = PeerPolicy::new(false, vec![], vec![], vec![addr("10.0.0.5:40000")]);
    });
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    h.allocate(c, &creds);
    let permission = |h: &mut Harness, peer: &str| {
        let peer = addr(peer);
        let a = h.request(c, Some(&creds), |b, id| {
            Request::new(b, method::CREATE_PERMISSION, id)
                .unwrap()
                .peer(peer)
                .unwrap()
        });
        Harness::code(&a)
    };
    for peer in [
        "127.0.0.1:9",
        "0.0.0.0:6379",
        "10.0.0.5:6379",
        "169.254.169.254:80",
    ] {
        assert_eq!(permission(&mut h, peer), 403, "{peer}");
    }
    // The media server's own socket, and another allocation's relayed address, are fine.
    assert_eq!(permission(&mut h, "10.0.0.5:40000"), 0);
    assert_eq!(permission(&mut h, "198.51.100.1:50123"), 0);
    assert_eq!(permission(&mut h, PEER), 0);
    assert_eq!(h.server.counters().get(Counter::Forbidden), 4);

    let mut h = Harness::new(|c| c.policy = PeerPolicy::new(true, vec![], vec![], vec![]));
    let creds2 = h.credentials(c, "alice", 60);
    h.allocate(c, &creds2);
    let a = h.request(c, Some(&creds2), |b, id| {
        Request::new(b, method::CREATE_PERMISSION, id)
            .unwrap()
            .peer(addr("127.0.0.1:9"))
            .unwrap()
    });
    assert_eq!(Harness::code(&a), 0);
}

#[test]
fn quota_lifetime_and_capacity() {
    let mut h = Harness::new(|c| c.user_quota = 2);
    let clients = ["203.0.113.1:1", "203.0.113.2:1", "203.0.113.3:1"].map(addr);
    for c in &clients[..2] {
        let creds = h.credentials(*c, "carol", 60);
        h.allocate(*c, &creds);
    }
    let creds = h.credentials(clients[2], "carol", 60);
    let a = h.request(clients[2], Some(&creds), |b, id| {
        Request::allocate(b, id).unwrap()
    });
    assert_eq!(Harness::code(&a), 486);
    // Another user is not affected.
    let other = h.credentials(clients[2], "dave", 60);
    h.allocate(clients[2], &other);

    // Refresh with lifetime 0 frees the slot.
    let first = h.credentials(clients[0], "carol", 60);
    let a = h.request(clients[0], Some(&first), |b, id| {
        Request::new(b, method::REFRESH, id)
            .unwrap()
            .lifetime(0)
            .unwrap()
    });
    assert_eq!(Message::parse(&a).unwrap().class(), Class::Success);
    assert_eq!(h.out.closed, [RelayId(1)]);
    let creds = h.credentials(clients[0], "carol", 60);
    h.allocate(clients[0], &creds);

    // Allocations expire.
    h.now += Duration::from_secs(601);
    h.server.handle_timeout(h.now, &mut h.out);
    assert_eq!(h.server.counters().allocations, 0);
    assert_eq!(h.out.closed.len(), 4);
    assert!(h.server.poll_timeout().is_none());

    // No relay port free: 508.
    h.out.no_ports = true;
    let creds = h.credentials(clients[1], "erin", 3600);
    let a = h.request(clients[1], Some(&creds), |b, id| {
        Request::allocate(b, id).unwrap()
    });
    assert_eq!(Harness::code(&a), 508);
}

#[test]
fn the_lifetime_is_clamped() {
    let mut h = Harness::new(|c| c.max_lifetime = Duration::from_secs(1200));
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    let a = h.request(c, Some(&creds), |b, id| {
        Request::allocate(b, id).unwrap().lifetime(99_999).unwrap()
    });
    let m = Message::parse(&a).unwrap();
    assert_eq!(
        m.attribute(attr::LIFETIME),
        Some(&1200u32.to_be_bytes()[..])
    );
}

#[test]
fn bandwidth_cap_drops_the_excess() {
    let mut h = Harness::new(|c| c.bandwidth = Some(10_000));
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    h.allocate(c, &creds);
    h.request(c, Some(&creds), |b, id| {
        Request::new(b, method::CHANNEL_BIND, id)
            .unwrap()
            .channel(0x4000)
            .unwrap()
            .peer(addr(PEER))
            .unwrap()
    });
    let mut buf = [0u8; 1500];
    let n = client::channel_data(&mut buf, 0x4000, &[0u8; 1000]).unwrap();
    for _ in 0..20 {
        h.send(c, &buf[..n]);
    }
    assert_eq!(h.out.to_peer.len(), 10);
    assert_eq!(h.server.counters().get(Counter::DropBandwidth), 10);
    h.now += Duration::from_millis(500);
    h.send(c, &buf[..n]);
    assert_eq!(h.out.to_peer.len(), 11);
}

#[test]
fn bad_input_is_dropped_and_counted() {
    let mut h = Harness::new(|_| {});
    let c = addr(CLIENT);
    let creds = h.credentials(c, "alice", 60);
    h.allocate(c, &creds);
    for junk in [
        &b""[..],
        &[0x40],
        &[0x40, 0x00, 0x00, 0x08, 1, 2],
        &[0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42],
        &[0xFF; 64],
    ] {
        assert!(h.send(c, junk).is_none());
    }
    // ChannelData on an unbound channel.
    let mut buf = [0u8; 64];
    let n = client::channel_data(&mut buf, 0x4321, b"x").unwrap();
    assert!(h.send(c, &buf[..n]).is_none());
    assert_eq!(h.server.counters().get(Counter::DropUnboundChannel), 1);
    // An unknown comprehension-required attribute gets 420 naming it.
    let a = h.request(c, None, |b, id| {
        Request::new(b, s::method::BINDING, id)
            .unwrap()
            .attribute(0x7777, b"??")
            .unwrap()
    });
    let m = Message::parse(&a).unwrap();
    assert_eq!(m.error_code().unwrap().0, 420);
    assert_eq!(
        m.attribute(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x77, 0x77][..])
    );
    // An unknown method, and a stray response.
    let a = h.request(c, None, |b, id| Request::new(b, 0x0FF, id).unwrap());
    assert_eq!(Harness::code(&a), 400);
    assert!(h.out.to_peer.is_empty());
    assert!(h.server.counters().get(Counter::DropMalformed) >= 4);
    // The allocation is unharmed.
    assert_eq!(h.server.counters().allocations, 1);
}
