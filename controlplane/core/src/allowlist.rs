//! Who may use a listener: the IP addresses and CIDR ranges of `ADMIN:IPADDRESSES` and the other
//! `*:IPADDRESSES` settings, and the middleware that refuses everyone else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::error::Error;

/// An entry of an allow list that is neither an address nor a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{item:?} is not an IP address or CIDR range; expected e.g. 10.0.0.0/8,192.0.2.7")]
pub struct BadEntry {
    item: String,
}

/// A set of addresses and ranges. Addresses arriving IPv4-mapped on a dual-stack socket
/// (`::ffff:10.1.2.3`) match IPv4 ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Parses a comma- or space-separated list such as `10.0.0.0/8, 192.0.2.7, ::1`.
    pub fn parse(list: &str) -> Result<AllowList, BadEntry> {
        let nets = list
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadEntry {
                        item: item.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { nets })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The entries that name one address (`192.0.2.7`, `10.0.0.5/32`), which a host may
    /// answer on without any interface carrying it (all of 127.0.0.0/8 on loopback, a
    /// `local` route); ranges only ever match interface addresses.
    pub fn single_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.nets
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(IpNet::addr)
    }
}

/// An API that answers only the addresses of one allow list: the state of [`guard`].
#[derive(Debug, Clone)]
pub struct Guarded {
    /// What is guarded, as refusals name it: "the cluster API".
    pub api: &'static str,
    /// The setting the list comes from, as refusals name it: "INTERNAL:IPADDRESSES".
    pub setting: &'static str,
    pub allow: AllowList,
}

/// Middleware (`axum::middleware::from_fn_with_state`) that passes requests from the addresses
/// of `guarded.allow` and refuses the rest with 403, logged with the caller and path, before
/// anything else looks at the request (its body included). The router must be served with
/// `ConnectInfo<SocketAddr>`, as [`crate::server::serve_with`] and `Https::serve` do.
pub async fn guard(
    State(guarded): State<Arc<Guarded>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if guarded.allow.allows(from.ip()) {
        return next.run(request).await;
    }
    tracing::warn!(%from, path = %request.uri().path(), "call to {} from outside {} refused", guarded.api, guarded.setting);
    Error::Forbidden(format!(
        "{} may not use {}: it is not in {}",
        from.ip(),
        guarded.api,
        guarded.setting
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_ranges_and_mapped_ipv4() {
        let a = AllowList::parse("10.0.0.0/8, 192.0.2.7 2001:db8::/32").unwrap();
        assert!(a.allows(ip("10.200.3.4")));
        assert!(a.allows(ip("192.0.2.7")));
        assert!(!a.allows(ip("192.0.2.8")));
        assert!(a.allows(ip("2001:db8::5")));
        assert!(a.allows(ip("::ffff:10.1.2.3")));
        assert!(!a.allows(ip("11.0.0.1")));
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("example.com").is_err());
        assert!(!AllowList::parse("").unwrap().allows(ip("127.0.0.1")));
        let singles: Vec<IpAddr> = a.single_addresses().collect();
        assert_eq!(singles, vec![ip("192.0.2.7")]);
    }

    async fn call(router: &Router, from: &str) -> (StatusCode, String) {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = "/x".parse().unwrap();
        let from: SocketAddr = from.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(from));
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_guard_passes_the_list_and_refuses_the_rest_saying_why() {
        let guarded = Arc::new(Guarded {
            api: "the cluster API",
            setting: "INTERNAL:IPADDRESSES",
            allow: AllowList::parse("127.0.0.1/32").unwrap(),
        });
        let router = Router::new()
            .route("/x", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(guarded, guard));
        assert_eq!(
            call(&router, "127.0.0.1:5000").await,
            (StatusCode::OK, "ok".into())
        );
        let (status, body) = call(&router, "127.0.0.2:5000").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let body: crate::error::ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body.error,
            "127.0.0.2 may not use the cluster API: it is not in INTERNAL:IPADDRESSES"
        );
    }
}
