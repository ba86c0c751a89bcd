//! Keeping a running server in step with the configuration store: the token table is rebuilt
//! from the stored applications (plus any fixed ones, such as the dev application) after each
//! refresh, so adding an application or rotating a secret needs no restart. Here, not in the
//! store, because the token table is the control plane's: the store only reads.

use std::collections::HashMap;
use std::time::Duration;

use switchyard_store::{CachedStore, Health};
use tokio::sync::watch;

use crate::server::stopped;
use crate::token::Applications;

/// How often the store is read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Reads the store once into `applications` (with `fixed` ones first), and reports how it went.
pub async fn sync_once(
    cache: &CachedStore,
    applications: &Applications,
    fixed: &[(String, String)],
) -> Health {
    let health = cache.refresh().await;
    let mut table: HashMap<String, Vec<String>> = HashMap::new();
    for (id, secret) in fixed {
        table.entry(id.clone()).or_default().push(secret.clone());
    }
    // On a failed refresh the snapshot is the last good one: keep serving it.
    for app in &cache.snapshot().applications {
        table
            .entry(app.id.clone())
            .or_default()
            .extend(app.secrets.iter().cloned());
    }
    applications.replace(table);
    health
}

/// Refreshes every [`REFRESH_EVERY`] until `stop`, logging when the store goes away and when it
/// comes back.
pub async fn follow(
    cache: CachedStore,
    applications: Applications,
    fixed: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = cache.health();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
            _ = stopped(&mut stop) => return,
        }
        let health = sync_once(&cache, &applications, &fixed).await;
        match (&last, &health) {
            (Health::Ok, Health::Degraded(reason)) => tracing::warn!(
                "configuration store unavailable ({reason}); serving the configuration read before"
            ),
            (Health::Degraded(_), Health::Ok) => {
                tracing::info!("configuration store available again")
            }
            _ => {}
        }
        last = health;
    }
}
