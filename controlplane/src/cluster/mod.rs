//! The cluster roles: `switchyard media-server` (media workers behind an internal control API)
//! and `switchyard gateway` (signalling that places media on media servers and shares presence
//! with the other gateways through Redis). See docs/architecture.md, "Cluster".

pub mod api;
pub mod gateway;
pub mod listen;
pub mod node;
pub mod presence;
pub mod stun_probe;

/// Resolves once `stop` is true (or its sender is gone). The watch guard is dropped here, so
/// callers can `select!` on this from spawned tasks.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.is_ok();
}
