//! What the cluster's handler tests share: one request through an axum router, as if from an
//! address (the allow-list middleware reads it from `ConnectInfo`).

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
