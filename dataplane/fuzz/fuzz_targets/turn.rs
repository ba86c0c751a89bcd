#![no_main]

//! The TURN server fed arbitrary messages from a client that holds an allocation (set up
//! with a real handshake first, since a fuzzer cannot forge MESSAGE-INTEGRITY), from a stream
//! client and from peers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::stun::Message;
use switchyard_dataplane::turn::auth::{self, Secrets};
use switchyard_dataplane::turn::client::{Credentials, Request};
use switchyard_dataplane::turn::policy::PeerPolicy;
use switchyard_dataplane::turn::{ClientAddr, Config, Family, Output, RelayId, Server, attr};

struct Sink {
    last: Vec<u8>,
    bound: u32,
}

impl Output for Sink {
    fn to_client(&mut self, _: ClientAddr, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let mut buf = [0u8; 2048];
        let Some(n) = fill(&mut buf) else { return false };
        self.last = buf[..n].to_vec();
        true
    }
    fn to_peer(&mut self, _: RelayId, _: SocketAddr, _: &[u8]) {}
    fn bind_relay(&mut self, _: Family) -> Option<(RelayId, SocketAddr)> {
        self.bound += 1;
        Some((RelayId(self.bound), SocketAddr::from(([198, 51, 100, 1], 50_000))))
    }
    fn close_relay(&mut self, _: RelayId) {}
}

fuzz_target!(|data: &[u8]| {
    let mut config = Config::new("fuzz", Secrets::new(["fuzz-secret"]));
    config.policy = PeerPolicy::new(true, vec![], vec![], vec![]);
    config.bandwidth = Some(100_000);
    let now = Instant::now();
    let mut server = Server::new(config, now, 1_800_000_000, b"seed");
    let mut out = Sink { last: Vec::new(), bound: 0 };
    let src: SocketAddr = "203.0.113.1:4000".parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let client = ClientAddr::Udp(src);
    // The handshake: challenge, then an authenticated Allocate.
    let mut buf = [0u8; 512];
    let Ok(n) = Request::allocate(&mut buf, &[1; 12]).and_then(|r| r.finish(None)) else { return };
    server.handle_client(now, client, src, &buf[..n], &mut out);
    let Ok(challenge) = Message::parse(&out.last) else { return };
    let (Some(nonce), Some(realm)) = (challenge.attribute(attr::NONCE), challenge.attribute(attr::REALM)) else { return };
    let username = "1900000000:fuzz";
    let password = auth::rest_password(b"fuzz-secret", username);
    let creds = Credentials::new(username, &password, std::str::from_utf8(realm).unwrap_or(""), nonce);
    let Ok(n) = Request::allocate(&mut buf, &[2; 12]).and_then(|r| r.finish(Some(&creds))) else { return };
    server.handle_client(now, client, src, &buf[..n], &mut out);

    // Then the fuzzer's messages: a length byte, a selector byte, the message.
    let mut rest = data;
    let mut t = now;
    while let [len, who, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (msg, next) = tail.split_at(len);
        rest = next;
        t += Duration::from_millis(u64::from(*who) * 10);
        match who % 4 {
            0 => server.handle_client(t, client, src, msg, &mut out),
            1 => server.handle_client(t, ClientAddr::Stream(7), src, msg, &mut out),
            2 => server.handle_peer(t, RelayId(1), "192.0.2.9:9".parse().unwrap_or(src), msg, &mut out),
            _ => server.handle_timeout(t, &mut out),
        }
    }
    server.client_closed(ClientAddr::Stream(7), &mut out);
    server.close_all(&mut out);
});
