//! The HTTP listener: routes, CORS for WHIP/WHEP, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::channels::Channels;
use crate::session::AppState;
use crate::{metrics, signalling, web, whip};

pub fn router(state: Arc<AppState>) -> Router {
    // WHIP/WHEP clients on other origins (players, encoders in a browser) need CORS and to
    // read the Location header.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION]);
    let media_api = Router::new()
        .route("/whip/{channel}", post(whip::whip))
        .route("/whep/{channel}", post(whip::whep))
        .route(
            "/whip/{channel}/{resource}",
            axum::routing::delete(whip::delete).patch(whip::patch),
        )
        .route(
            "/whep/{channel}/{resource}",
            axum::routing::delete(whip::delete).patch(whip::patch),
        )
        .layer(cors);
    signalling_routes::<AppState>()
        .route("/metrics", get(metrics_handler))
        .merge(media_api)
        .with_state(state)
}

/// What all-in-one and a gateway both serve: the demo page and SDK, `/sync`, dev tokens and
/// `/health`.
pub fn signalling_routes<C: Channels>() -> Router<Arc<C>> {
    Router::new()
        .route("/", get(web::index))
        .route("/demo.js", get(web::demo))
        .route("/switchyard.js", get(web::sdk))
        .route("/style.css", get(web::style))
        .route("/sync", get(signalling::sync::<C>))
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route("/api/dev-token", get(web::dev_token::<C>))
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state),
    )
}

/// Serves `router` with each request's peer address (for allow lists) until `shutdown`
/// resolves, then calls `closing` (which tells signalling sockets to close) and returns.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    closing: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        closing();
    })
    .await
}

/// Serves until `shutdown` resolves, then tells signalling sockets to close and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let notify = state.clone();
    serve_with(listener, router(state), shutdown, move || {
        let _ = notify.shutdown.send(true);
    })
    .await
}

/// A bound HTTPS listener with its certificate, ready to serve: made before anything serves, so
/// a bad certificate or a taken port stops the process at start.
pub struct Https {
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
}

impl Https {
    /// Loads the PEM certificate chain and key (rustls with aws-lc-rs, the process's one TLS
    /// provider) and binds `addr`.
    pub async fn bind(
        addr: std::net::SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Https, String> {
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .map_err(|e| {
                format!(
                    "TLS certificate {} / key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on {addr} for HTTPS: {e}"))?;
        Ok(Https { listener, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `router` until `shutdown` resolves; connections then get 5 s to finish.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let addr = self.local_addr().map_err(|e| e.to_string())?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        axum_server::from_tcp_rustls(self.listener, self.tls)
            .map_err(|e| format!("HTTPS on {addr}: {e}"))?
            .handle(handle)
            .serve(router.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
            .map_err(|e| format!("HTTPS on {addr}: {e}"))
    }
}
