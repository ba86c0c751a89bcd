//! The ICE servers handed to clients: the embedded TURN server's URLs with short-lived TURN
//! REST credentials minted per client, in `joined` (signalling) and as `Link` headers on WHIP
//! and WHEP answers (RFC 9725 section 4.6).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_dataplane::turn::auth::Secrets;
use switchyard_dataplane::turn::service::TurnService;

/// How long a handed-out credential works: long enough for a call to start and its ICE
/// restarts; allocations made with it live on through refreshes.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(12 * 3600);

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// The embedded TURN server as the control plane sees it.
pub struct Turn {
    pub service: Arc<TurnService>,
    secrets: Secrets,
    urls: Vec<String>,
}

impl Turn {
    pub fn new(service: Arc<TurnService>, secrets: Secrets, urls: Vec<String>) -> Turn {
        Turn {
            service,
            secrets,
            urls,
        }
    }

    /// The URLs clients are handed, without credentials.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// ICE servers for `user` with a fresh credential (empty without a secret).
    pub fn ice_servers(&self, user: &str) -> Vec<IceServer> {
        ice_servers(&self.secrets, self.urls.clone(), user)
    }
}

/// One ICE server entry for `urls` with a credential for `user` minted now (none without a
/// secret or URLs). A cluster gateway calls this with its media servers' URLs.
pub fn ice_servers(secrets: &Secrets, urls: Vec<String>, user: &str) -> Vec<IceServer> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match secrets.credential(user, now, CREDENTIAL_TTL.as_secs()) {
        Some((username, credential)) if !urls.is_empty() => vec![IceServer {
            urls,
            username,
            credential,
        }],
        _ => Vec::new(),
    }
}

/// `Link` header values for WHIP and WHEP answers, one per URL.
pub fn link_headers(servers: &[IceServer]) -> Vec<String> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().map(move |url| {
                format!(
                    "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(&s.username),
                    quote(&s.credential)
                )
            })
        })
        .collect()
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_follow_rfc_9725() {
        let servers = [IceServer {
            urls: vec![
                "turn:192.0.2.1:3478?transport=udp".into(),
                "turn:192.0.2.1:3478?transport=tcp".into(),
            ],
            username: "1700000000:a\"b".into(),
            credential: "c3VwZXI=".into(),
        }];
        let links = link_headers(&servers);
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[0],
            "<turn:192.0.2.1:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000000:a\\\"b\"; credential=\"c3VwZXI=\"; credential-type=\"password\""
        );
    }
}
