//! `GET /api/listeners`: the sockets this process listens on and the addresses and URLs it
//! announces, so that `switchyard doctor --server URL` checks a running server instead of
//! binding the same ports itself (which would fail: they are taken).
//!
//! Nothing here is private: clients already learn the announced addresses and ports from ICE
//! candidates and the TURN URLs from `joined` and WHIP/WHEP `Link` headers. Credentials are
//! never included.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::session::AppState;

/// What a server process reports at `/api/listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listeners {
    pub version: String,
    /// The addresses put in ICE candidates.
    pub announce: Vec<IpAddr>,
    /// One UDP socket per media worker, as bound (the candidates carry these ports).
    pub media: Vec<SocketAddr>,
    /// Whether each media port also listens on TCP for ICE-TCP (RFC 6544 passive candidates),
    /// so doctor knows to check TCP there too. Absent (false) in an older server's answer,
    /// which had no ICE-TCP.
    #[serde(default)]
    pub ice_tcp: bool,
    /// The embedded TURN server, when it runs.
    pub turn: Option<TurnListeners>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnListeners {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
    /// The `turn:`/`turns:` URLs clients are handed (with the advertised ports).
    pub urls: Vec<String>,
}

impl Listeners {
    pub fn of(state: &AppState) -> Listeners {
        Listeners {
            version: env!("CARGO_PKG_VERSION").to_string(),
            announce: state.announce.clone(),
            media: (0..state.media.workers())
                .filter_map(|w| state.media.worker_addr(w))
                .collect(),
            ice_tcp: state.media.ice_tcp(),
            turn: state.turn.as_ref().map(|t| TurnListeners {
                udp: t.service.udp_addr(),
                tcp: t.service.tcp_addr(),
                tls: t.service.tls_addr(),
                urls: t.urls().to_vec(),
            }),
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    /// An answer from a server that predates ICE-TCP still parses, as UDP only.
    #[test]
    fn an_older_answer_has_no_ice_tcp() {
        let old = r#"{"version":"0.1.0","announce":["203.0.113.20"],"media":["0.0.0.0:49152"],"turn":null}"#;
        let l: Listeners = serde_json::from_str(old).unwrap();
        assert!(!l.ice_tcp);
        assert_eq!(l.media, vec!["0.0.0.0:49152".parse().unwrap()]);
    }
}
