//! What the cluster's handler tests share: one request through an axum router, as if from an
//! address (the allow-list middleware reads it from `ConnectInfo`); a media server in the test's
//! process for a gateway to call; an MCU participant's offer.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use tower::ServiceExt;

/// Sends `method path` with an optional JSON `body` from `from`; returns the status and body.
pub async fn call(
    router: &Router,
    from: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let mut request = request
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let from: SocketAddr = from.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(from));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A media server in this process: one unpinned worker on loopback (ports from `port_min`)
/// with `mcu_workers` MCU threads, its cluster API served on a free loopback port. Returns the
/// node and its record as it registers (its cluster address that port).
pub async fn media_server(
    id: &str,
    port_min: u16,
    mcu_workers: usize,
) -> (
    std::sync::Arc<crate::node::Node>,
    crate::registry::MediaServerRecord,
) {
    use std::sync::Arc;
    use switchyard_controlplane::allowlist::AllowList;
    use switchyard_controlplane::session::AppState;
    use switchyard_controlplane::token::Applications;
    use switchyard_dataplane::io::Backend;
    use switchyard_dataplane::worker::{MediaConfig, MediaServer};

    let config = MediaConfig {
        workers: 1,
        io_backend: Some(Backend::Mmsg),
        bind_ip: "127.0.0.1".parse().unwrap(),
        port_min,
        port_max: port_min + 99,
        pin: false,
        first_core: 0,
        ice_tcp: false,
        handoff: None,
        mcu_workers,
        io: Default::default(),
    };
    let (media, _events) = MediaServer::start(config).unwrap();
    let state = AppState::new(
        media,
        Applications::default(),
        vec!["127.0.0.1".parse().unwrap()],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let record = crate::registry::MediaServerRecord {
        id: id.into(),
        region: "a".into(),
        available: true,
        active: false,
        over_capacity: false,
        used_capacity: 0.0,
        draining: false,
        ip_addresses: vec!["127.0.0.1".into()],
        public_ip_address: None,
        version: "test".into(),
        core_count: 1,
        cluster_address: listener.local_addr().unwrap().to_string(),
        turn_urls: Vec::new(),
        checks: Vec::new(),
    };
    let capacity = crate::capacity::Capacity {
        transports: 100,
        mcu_connections: 2,
    };
    let node = Arc::new(crate::node::Node::new(
        Arc::new(state),
        record.clone(),
        capacity,
        AllowList::parse("127.0.0.1").unwrap(),
    ));
    let router = crate::node::router(node.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (node, record)
}

/// An Opus and a VP8 m-line: sendrecv, as an MCU participant offers, or receive only, as
/// a viewer of the mix.
pub fn mix_offer(receive_only: bool) -> String {
    use switchyard_dataplane::client::{self, OfferTrack};
    use switchyard_dataplane::dtls::Identity;
    use switchyard_dataplane::ice::Credentials;
    use switchyard_dataplane::media::Codec;
    let identity = Identity::generate().unwrap();
    let tracks: Vec<OfferTrack> = [(Codec::Opus, 111), (Codec::Vp8, 96)]
        .into_iter()
        .zip(1000..)
        .map(|((codec, payload_type), ssrc)| match receive_only {
            true => OfferTrack::Receive {
                codec,
                payload_type,
            },
            false => OfferTrack::SendRecv {
                codec,
                payload_type,
                ssrc,
                max_audio_rate: None,
            },
        })
        .collect();
    client::offer(&Credentials::random(), identity.fingerprint(), &tracks, 1)
}
