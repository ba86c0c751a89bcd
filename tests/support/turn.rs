//! One TURN Allocate with a given REST credential, for tests that check a credential someone
//! else minted (a gateway's `iceServers`) against a running TURN server.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use switchyard_dataplane::stun::{Class, Message};
use switchyard_dataplane::turn::attr;
use switchyard_dataplane::turn::client::{Credentials, Request};

/// Allocates on `server` over UDP as `username`/`password`, answering the 401 challenge:
/// 0 when the allocation succeeds, else the error code of the refusal.
pub fn allocate(server: SocketAddr, username: &str, password: &str) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let transact = |id: [u8; 12], creds: Option<&Credentials>| -> (Class, u16, Vec<u8>) {
        let mut buf = [0u8; 1500];
        let n = Request::allocate(&mut buf, &id)
            .and_then(|r| r.finish(creds))
            .expect("an Allocate request");
        socket.send_to(&buf[..n], server).expect("send Allocate");
        loop {
            let mut got = [0u8; 1500];
            let len = socket
                .recv(&mut got)
                .expect("an answer from the TURN server");
            if let Ok(m) = Message::parse(&got[..len])
                && m.transaction_id() == &id
            {
                let code = m.error_code().map_or(0, |(c, _)| c);
                return (m.class(), code, got[..len].to_vec());
            }
        }
    };
    let (_, code, challenge) = transact([1; 12], None);
    assert_eq!(code, 401, "an unauthenticated Allocate is challenged");
    let m = Message::parse(&challenge).expect("the challenge parses");
    let realm = m.attribute(attr::REALM).expect("REALM");
    let realm = String::from_utf8_lossy(realm).to_string();
    let nonce = m.attribute(attr::NONCE).expect("NONCE").to_vec();
    let creds = Credentials::new(username, password, &realm, &nonce);
    match transact([2; 12], Some(&creds)) {
        (Class::Success, _, _) => 0,
        (_, code, _) => code,
    }
}
