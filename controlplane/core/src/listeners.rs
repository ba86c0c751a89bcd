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
            turn: state.turn.as_ref().map(|t| TurnListeners {
                udp: t.service.udp_addr(),
                tcp: t.service.tcp_addr(),
                tls: t.service.tls_addr(),
                urls: t.urls().to_vec(),
            }),
        }
    }
}
