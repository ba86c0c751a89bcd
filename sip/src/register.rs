//! Registration with providers: a trunk with `register` set has the connector REGISTER its
//! contact with the provider (digest credentials), so calls to the account reach us; the SIP
//! stack refreshes each binding before the expiry the provider grants. A binding that fails
//! is registered again after a pause.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytesstr::BytesStr;
use ezk_sip_core::Endpoint;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::uri::{NameAddr, SipUri};
use ezk_sip_ua::{RegistrarConfig, Registration};
use tokio::task::JoinHandle;

use crate::Shared;
use crate::dial::Trunk;

/// How long to wait before registering again after a failure.
const RETRY: Duration = Duration::from_secs(30);

/// The registrations running, by trunk name, with the trunk each was started for.
#[derive(Default)]
pub(crate) struct Registrations {
    running: HashMap<String, (Trunk, JoinHandle<()>)>,
}

impl Registrations {
    /// Makes the running registrations those of `trunks` that want one: new ones start,
    /// changed ones restart, gone ones stop (their task's end drops the binding, which the
    /// SIP stack then removes at the provider).
    pub fn set(&mut self, shared: &Arc<Shared>, endpoint: &Endpoint, trunks: Vec<Trunk>) {
        let wanted: HashMap<String, Trunk> = trunks
            .into_iter()
            .filter(|t| t.register && t.username.is_some())
            .map(|t| (t.name.clone(), t))
            .collect();
        self.running.retain(|name, (trunk, task)| {
            let keep = wanted.get(name) == Some(trunk);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, trunk) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(keep(shared.clone(), endpoint.clone(), trunk.clone()));
            self.running.insert(name, (trunk, task));
        }
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// Keeps `trunk` registered until aborted.
async fn keep(shared: Arc<Shared>, endpoint: Endpoint, trunk: Trunk) {
    let stats = &shared.stats;
    loop {
        match registrar_config(&shared, &trunk) {
            Ok(config) => {
                // In a task of its own: the SIP stack panics when a REGISTER gets no final
                // response (ezk-sip-ua 0.9.1), which must not end the retries.
                let attempt = tokio::spawn(Registration::register(
                    endpoint.clone(),
                    config,
                    trunk.authenticator(),
                ));
                match attempt.await {
                    Ok(Ok(mut registration)) => {
                        stats.registrations.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("registered with trunk {:?}", trunk.name);
                        // Not when the stack's refresh task panics on an unanswered refresh: our
                        // handle keeps its sender. A known gap (see the README).
                        registration.wait_for_registration_failure().await;
                        tracing::warn!("trunk {:?}: the registration lapsed", trunk.name);
                    }
                    Ok(Err(e)) => tracing::warn!("trunk {:?}: REGISTER: {e}", trunk.name),
                    Err(e) => tracing::warn!("trunk {:?}: REGISTER unanswered: {e}", trunk.name),
                }
            }
            Err(e) => tracing::warn!("trunk {:?}: {e}", trunk.name),
        }
        stats.registration_failures.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RETRY).await;
    }
}

/// The registrar (the trunk's domain), our identity there and the contact calls come to.
fn registrar_config(shared: &Shared, trunk: &Trunk) -> Result<RegistrarConfig, String> {
    let username = trunk.username.clone().unwrap_or_default();
    let text = trunk.uri("");
    let registrar: SipUri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a SIP URI"))?;
    let mut config = RegistrarConfig::new(username.clone(), registrar);
    if let Some(address) = shared
        .config
        .public_address
        .or_else(|| Some(shared.config.listen.ip()).filter(|ip| !ip.is_unspecified()))
    {
        let contact = crate::call::contact(address, shared.config.listen.port());
        let uri = contact.uri.uri.clone().user(BytesStr::from(username));
        config = config.with_override_contact(Contact::new(NameAddr::uri(uri)));
    }
    Ok(config)
}
