//! Registration with providers: a trunk with `register` set has the connector REGISTER its
//! contact with the provider (digest credentials), so calls to the account reach us, and
//! refresh the binding before the expiry the provider grants. The REGISTERs go to the trunk's
//! outbound proxy when it has one, else to its domain. A binding that fails or lapses is
//! registered again after a pause; a trunk that goes away has its binding removed.
//!
//! Our own loop around ezk's REGISTER builder (`register::Registration`), not ezk's
//! `Registration`: that one sends only to the Request-URI's host, and its refresh task panics
//! when a refresh goes unanswered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytesstr::BytesStr;
use ezk_sip_auth::{ClientAuthenticator, DigestAuthenticator};
use ezk_sip_core::Endpoint;
use ezk_sip_core::transport::TargetTransportInfo;
use ezk_sip_types::header::typed::Contact;
use ezk_sip_types::uri::{NameAddr, SipUri};
use ezk_sip_ua::register::Registration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Shared;
use crate::dial::{MAX_CHALLENGES, Trunk, answer_challenge};

/// How long to wait before registering again after a failure.
const RETRY: Duration = Duration::from_secs(30);
/// The expiry we ask for; the provider may grant less.
const EXPIRY: Duration = Duration::from_secs(300);
/// How long the REGISTER that removes a binding may take when a trunk goes away.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running registration: its task, and the signal that has it remove its binding and end.
struct Running {
    trunk: Trunk,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The registrations running, by trunk name.
#[derive(Default)]
pub(crate) struct Registrations {
    running: HashMap<String, Running>,
}

impl Registrations {
    /// Makes the running registrations those of `trunks` that want one: new ones start,
    /// changed ones restart, gone ones remove their binding at the provider and stop.
    pub fn set(&mut self, shared: &Arc<Shared>, endpoint: &Endpoint, trunks: Vec<Trunk>) {
        let wanted: HashMap<String, Trunk> = trunks
            .into_iter()
            .filter(|t| t.register && t.username.is_some())
            .map(|t| (t.name.clone(), t))
            .collect();
        self.running.retain(|name, running| {
            let keep = wanted.get(name) == Some(&running.trunk);
            if !keep && let Some(stop) = running.stop.take() {
                let _ = stop.send(());
            }
            keep
        });
        for (name, trunk) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(keep(
                shared.clone(),
                endpoint.clone(),
                trunk.clone(),
                stopped,
            ));
            let running = Running {
                trunk,
                stop: Some(stop),
                task,
            };
            self.running.insert(name, running);
        }
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

/// Keeps `trunk` registered until `stop` fires (or its sender goes), then removes the binding.
async fn keep(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    trunk: Trunk,
    mut stop: oneshot::Receiver<()>,
) {
    let stats = &shared.stats;
    loop {
        match Binding::new(&shared, &endpoint, &trunk).await {
            Ok(mut binding) => {
                let mut registered = false;
                loop {
                    let refreshed = async {
                        if registered {
                            binding.proto.wait_for_expiry().await;
                        }
                        binding.register(false).await
                    };
                    tokio::select! {
                        refreshed = refreshed => match refreshed {
                            Ok(()) => {
                                stats.registrations.fetch_add(1, Ordering::Relaxed);
                                if !registered {
                                    tracing::info!("registered with trunk {:?}", trunk.name);
                                }
                                registered = true;
                            }
                            Err(e) => {
                                tracing::warn!("trunk {:?}: REGISTER: {e}", trunk.name);
                                break;
                            }
                        },
                        _ = &mut stop => {
                            if registered {
                                let removed = binding.register(true);
                                if let Ok(Err(e)) = tokio::time::timeout(REMOVE_TIMEOUT, removed).await {
                                    tracing::debug!("trunk {:?}: removing the binding: {e}", trunk.name);
                                }
                            }
                            return;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("trunk {:?}: {e}", trunk.name),
        }
        stats.registration_failures.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = &mut stop => return,
        }
    }
}

/// One binding at a provider: the REGISTER builder (Call-ID, CSeq, expiry), where the requests
/// go, and the credentials for challenges.
struct Binding {
    endpoint: Endpoint,
    proto: Registration,
    target: TargetTransportInfo,
    authenticator: DigestAuthenticator,
}

impl Binding {
    /// The registrar (the trunk's domain), our identity there, the contact calls come to and
    /// the address REGISTERs go to (the outbound proxy's, else the domain's).
    async fn new(shared: &Shared, endpoint: &Endpoint, trunk: &Trunk) -> Result<Binding, String> {
        let username = trunk.username.clone().unwrap_or_default();
        let registrar = parse_uri(&trunk.uri(""))?;
        let next_hop = match trunk.proxy_uri() {
            Some(proxy) => parse_uri(&proxy)?,
            None => registrar.clone(),
        };
        let (transport, address) = endpoint
            .select_transport(&next_hop)
            .await
            .map_err(|e| format!("no way to {next_hop:?}: {e}"))?;
        let id = NameAddr::uri(registrar.clone().user(BytesStr::from(username.clone())));
        let host = shared
            .config
            .public_address
            .or_else(|| Some(shared.config.listen.ip()).filter(|ip| !ip.is_unspecified()))
            .unwrap_or_else(|| transport.bound().ip());
        let contact = crate::call::contact(host, shared.config.listen.port());
        let contact = Contact::new(NameAddr::uri(
            contact.uri.uri.clone().user(BytesStr::from(username)),
        ));
        Ok(Binding {
            endpoint: endpoint.clone(),
            proto: Registration::new(id, contact, registrar, EXPIRY),
            target: TargetTransportInfo {
                via_host_port: None,
                transport: Some((transport, address)),
            },
            authenticator: trunk.authenticator(),
        })
    }

    /// Sends a REGISTER (one that removes the binding when `remove`) until a final answer,
    /// answering up to [`MAX_CHALLENGES`] digest challenges.
    async fn register(&mut self, remove: bool) -> Result<(), String> {
        let mut challenges = 0;
        loop {
            let mut request = self.proto.create_register(remove);
            request.headers.insert_named(self.endpoint.allowed());
            self.authenticator.authorize_request(&mut request.headers);
            let mut transaction = self
                .endpoint
                .send_request(request, &mut self.target)
                .await
                .map_err(|e| e.to_string())?;
            let response = transaction
                .receive_final()
                .await
                .map_err(|e| e.to_string())?;
            match response.line.code.into_u16() {
                200..=299 => {
                    if !remove {
                        self.proto.receive_success_response(response);
                    }
                    return Ok(());
                }
                401 | 407 if challenges < MAX_CHALLENGES => {
                    challenges += 1;
                    let request = &transaction.request().msg;
                    answer_challenge(&mut self.authenticator, request, &response)?;
                }
                // 423 Interval Too Brief: again with the provider's Min-Expires.
                423 if !remove && challenges < MAX_CHALLENGES => {
                    challenges += 1;
                    let line = response.line.to_string();
                    if !self.proto.receive_error_response(response) {
                        return Err(format!("refused: {line}"));
                    }
                }
                _ => return Err(format!("refused: {}", response.line)),
            }
        }
    }
}

fn parse_uri(text: &str) -> Result<SipUri, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a SIP URI"))
}
