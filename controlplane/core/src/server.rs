//! The HTTP listener: routes and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::channels::Channels;
use crate::session::AppState;
use crate::{metrics, signalling, web, whip};

pub fn router(state: Arc<AppState>) -> Router {
    signalling_routes::<AppState>()
        .route("/metrics", get(metrics_handler))
        .route(
            "/api/listeners",
            get(|State(state): State<Arc<AppState>>| async move {
                axum::Json(crate::listeners::Listeners::of(&state))
            }),
        )
        .with_state(state.clone())
        .merge(whip::routes(state))
}

/// What all-in-one and a gateway both serve: the demo page and SDK, `/sync`, dev tokens and
/// `/health`.
pub fn signalling_routes<C: Channels>() -> Router<Arc<C>> {
    Router::new()
        .route("/", get(web::index))
        .route("/demo.js", get(web::demo))
        .route("/switchyard.js", get(web::sdk))
        .route("/peer.js", get(web::peer))
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
    metrics_response(&state)
}

/// `/metrics` of a process that runs media: all-in-one's on its HTTP port, a media server's
/// on its cluster port.
pub fn metrics_response(state: &AppState) -> impl IntoResponse + use<> {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut out = metrics::render(&state.media, &state.metrics, state.live());
        if let Some(turn) = &state.turn {
            metrics::render_turn(&mut out, &turn.service.counters());
        }
        if let Some(phones) = state.phones.get() {
            for (name, help, value) in phones.metrics() {
                let kind = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                metrics::metric(
                    &mut out,
                    &format!("switchyard_sip_{name}"),
                    kind,
                    help,
                    value,
                );
            }
        }
        out
    })
}

/// Resolves once `stop` is true (or its sender is gone). The watch guard is dropped here, so
/// callers can `select!` on this from spawned tasks.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.is_ok();
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
        router.into_make_service_with_connect_info::<SocketAddr>(),
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

/// Why HTTPS cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("TLS certificate {} / key {}: {source}", cert.display(), key.display())]
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for HTTPS: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTPS on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound HTTPS listener with its certificate, ready to serve: made before anything serves, so
/// a bad certificate or a taken port stops the process at start.
pub struct Https {
    listener: std::net::TcpListener,
    /// Where it listens (`addr` as bound: a port 0 is resolved).
    local: SocketAddr,
    tls: axum_server::tls_rustls::RustlsConfig,
}

impl Https {
    /// Loads the PEM certificate chain and key (rustls with aws-lc-rs, the process's one TLS
    /// provider) and binds `addr`.
    pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> Result<Https, HttpsError> {
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .map_err(|source| HttpsError::Certificate {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            })?;
        let (listener, local) = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(|l| l.local_addr().map(|local| (l, local)))
            .map_err(|source| HttpsError::Listen { addr, source })?;
        Ok(Https {
            listener,
            local,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves `router` until `shutdown` resolves; connections then get 5 s to finish.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpsError> {
        let addr = self.local;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        let failed = |source| HttpsError::Serve { addr, source };
        axum_server::from_tcp_rustls(self.listener, self.tls)
            .map_err(failed)?
            .handle(handle)
            .serve(router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .map_err(failed)
    }
}
