//! Settings that change what a running server does, each shown by its effect on one:
//! `EXTERNAL:IPADDRESSES` moves the media sockets and the announced candidates to the
//! addresses clients reach.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use switchyard_dataplane::dtls::Identity;
use switchyard_tests::peer::Peer;
use switchyard_tests::server::Server;
use switchyard_tests::{http, netns};

fn listeners(server: &Server) -> serde_json::Value {
    let r = http::get(server.port, "/api/listeners").expect("GET /api/listeners");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).expect("listeners JSON")
}

/// Whether a datagram to `to` is refused by the kernel (ICMP port unreachable: nothing bound
/// there) rather than taken by a socket.
fn refused(to: SocketAddr) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s.connect(to).expect("connect");
    s.send(b"are you there").expect("send");
    let mut buf = [0u8; 64];
    matches!(s.recv(&mut buf), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// With EXTERNAL:IPADDRESSES=127.0.0.2 (the namespace's loopback answers all of 127/8), the
/// media sockets and TURN bind there alone, only 127.0.0.2 is announced, and a client
/// connects to it.
#[test]
fn external_addresses_bind_and_announce_media_there_only() {
    netns::enter();
    let server = Server::start_with_env(
        &["--workers", "2"],
        &[("EXTERNAL__IPADDRESSES", "127.0.0.2")],
    );
    let external: IpAddr = "127.0.0.2".parse().unwrap();
    let l = listeners(&server);
    assert_eq!(l["announce"], serde_json::json!(["127.0.0.2"]), "{l}");
    let media: Vec<SocketAddr> = serde_json::from_value(l["media"].clone()).unwrap();
    assert_eq!(media.len(), 2, "{l}");
    for addr in &media {
        assert_eq!(addr.ip(), external, "media socket bound elsewhere: {l}");
        assert!(
            refused(SocketAddr::new("127.0.0.1".parse().unwrap(), addr.port())),
            "something answers on 127.0.0.1:{} too",
            addr.port()
        );
        assert!(!refused(*addr), "nothing bound at {addr}");
    }
    let turn: SocketAddr = serde_json::from_value(l["turn"]["udp"].clone()).unwrap();
    assert_eq!(turn.ip(), external, "TURN bound elsewhere: {l}");

    let token = server.token("bound", "encoder", &[]);
    let identity = Identity::generate().unwrap();
    let mut peer = Peer::whip(server.port, "bound", &token, &identity, None).expect("WHIP publish");
    let candidates: Vec<&str> = peer
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!candidates.is_empty(), "{}", peer.answer);
    for c in &candidates {
        assert_eq!(c.split_whitespace().nth(4), Some("127.0.0.2"), "{c}");
    }
    assert!(
        peer.connect(Duration::from_secs(5)),
        "ICE and DTLS to 127.0.0.2"
    );
}
