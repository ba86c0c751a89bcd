//! Settings that change what a running server does, each shown by its effect on one:
//! `EXTERNAL:IPADDRESSES` moves the media sockets and the announced candidates to the
//! addresses clients reach; `EXTERNAL:PUBLICHOSTNAME` is the host of the `turns:` URLs clients
//! are handed; `SYNC:IPADDRESSES` refuses signalling and WHIP/WHEP to other addresses.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchyard_dataplane::dtls::Identity;
use switchyard_tests::peer::Peer;
use switchyard_tests::server::{Server, temp_dir};
use switchyard_tests::{http, netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A TCP connection to 127.0.0.1:`port` from source address `from` (any of 127/8 in the
/// namespace).
async fn connect_from(from: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

/// One HTTP/1.1 request from `from`; the status and the whole response.
async fn request_from(
    from: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = connect_from(from, port).await;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Opens `/sync` from `from` and joins with `token`: the `joined` message, or the HTTP
/// status the upgrade was refused with.
async fn join_from(from: &str, port: u16, token: &str) -> Result<serde_json::Value, u16> {
    let stream = connect_from(from, port).await;
    let url = format!("ws://127.0.0.1:{port}/sync");
    let (mut ws, _) = match tokio_tungstenite::client_async(url, stream).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => return Err(r.status().as_u16()),
        Err(e) => panic!("/sync from {from}: {e}"),
    };
    ws.send(Message::text(format!(
        r#"{{"type":"join","token":"{token}"}}"#
    )))
    .await
    .unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("joined in time");
        let Some(Ok(Message::Text(t))) = m else {
            panic!("socket ended before joining: {m:?}");
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "joined" {
            return Ok(v);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

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

/// With EXTERNAL:PUBLICHOSTNAME (and a certificate for TURN over TLS), the `turns:` URL in
/// `joined`, in the `Link` headers of WHIP and in `/api/listeners` names the host, and the
/// `turn:` URLs the announced address.
#[test]
fn the_public_hostname_is_in_the_turns_url_clients_get() {
    netns::enter();
    let dir = temp_dir();
    let (cert, key) = switchyard_tests::certificate(&dir, "media.example.test");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start_in(
        &dir,
        &["--workers", "1"],
        &[
            ("EXTERNAL__PUBLICHOSTNAME", "media.example.test"),
            ("TURN__CERTIFICATEPATH", cert.as_str()),
            ("TURN__PRIVATEKEYPATH", key.as_str()),
        ],
    );
    let named = |url: &str| {
        if url.starts_with("turns:") {
            url.starts_with("turns:media.example.test:")
        } else {
            url.starts_with("turn:127.0.0.1:")
        }
    };
    let l = listeners(&server);
    let urls: Vec<String> = serde_json::from_value(l["turn"]["urls"].clone()).unwrap();
    assert_eq!(urls.len(), 3, "{l}");
    assert!(urls.iter().all(|u| named(u)), "{urls:?}");

    let token = server.token("named", "viewer", &[]);
    let joined = runtime()
        .block_on(join_from("127.0.0.1", server.port, &token))
        .expect("joined");
    let handed: Vec<String> =
        serde_json::from_value(joined["iceServers"][0]["urls"].clone()).unwrap_or_default();
    assert_eq!(handed, urls, "joined: {joined}");

    // A plain OPTIONS on a WHIP endpoint (RFC 9725 section 4.6) answers the ICE servers.
    let r = http::request(
        server.port,
        "OPTIONS",
        "/whip/named",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .expect("OPTIONS /whip");
    let links: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(links.len(), urls.len(), "{r:?}");
    for link in links {
        let url = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(u, _)| u)
            .unwrap_or_default();
        assert!(named(url), "{link}");
    }
}

/// With SYNC:IPADDRESSES=127.0.0.1, a client from 127.0.0.1 joins and publishes, and one from
/// 127.0.0.2 is refused with 403 at `/sync`, `/api/dev-token` and WHIP/WHEP (counted), while
/// `/health` still answers it.
#[test]
fn sync_addresses_refuse_signalling_from_elsewhere() {
    netns::enter();
    let server = Server::start_with_env(&["--workers", "1"], &[("SYNC__IPADDRESSES", "127.0.0.1")]);
    let port = server.port;
    let token = server.token("guarded", "member", &[]);
    let rt = runtime();
    let joined = rt.block_on(join_from("127.0.0.1", port, &token));
    assert!(joined.is_ok(), "{joined:?}");
    assert_eq!(rt.block_on(join_from("127.0.0.2", port, &token)), Err(403));
    let auth = format!("Bearer {token}");
    for (method, path) in [
        ("GET", "/api/dev-token?channel=guarded"),
        ("POST", "/whip/guarded"),
        ("POST", "/whep/guarded"),
        ("OPTIONS", "/whip/guarded"),
    ] {
        let headers = [("Authorization", auth.as_str())];
        let (status, text) = rt.block_on(request_from("127.0.0.2", port, method, path, &headers));
        assert_eq!(status, 403, "{method} {path} from 127.0.0.2: {text}");
        assert!(text.contains("not in SYNC:IPADDRESSES"), "{text}");
    }
    let (status, _) = rt.block_on(request_from(
        "127.0.0.1",
        port,
        "GET",
        "/api/dev-token?channel=guarded",
        &[],
    ));
    assert_eq!(status, 200);
    let (status, _) = rt.block_on(request_from("127.0.0.2", port, "GET", "/health", &[]));
    assert_eq!(status, 200);
    let refused = server
        .metrics()
        .get("switchyard_signalling_errors_total{reason=\"address_not_allowed\"}")
        .copied();
    assert_eq!(refused, Some(5.0));

    let identity = Identity::generate().unwrap();
    let mut peer =
        Peer::whip(port, "guarded", &token, &identity, None).expect("WHIP from 127.0.0.1");
    assert!(peer.connect(Duration::from_secs(5)));
}
