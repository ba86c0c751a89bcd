//! The task that delivers events: it takes them off the bounded queue signalling fills, signs
//! each body once with its application's newest secret, and hands it to one worker per URL,
//! which posts its deliveries one at a time, in order, retrying each with exponential backoff
//! until it is answered with a 2xx or [`Retry::give_up_after`] has passed. A receiver that is
//! down holds up only its own URL's deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use switchyard_store::CachedStore;
use tokio::sync::mpsc::{self, error::TrySendError};
use url::Url;

use super::Counters;
use super::deliveries::{Deliveries, State};
use super::event::Event;
use super::http::Client;

/// Deliveries waiting per URL; past it, new ones are dropped (and logged as such) until the
/// receiver catches up.
pub const URL_QUEUE: usize = 1000;
/// A URL's worker with nothing to send for this long stops; the next delivery starts another.
const IDLE: Duration = Duration::from_secs(60);

/// When to try a delivery again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The wait after the first failure; it doubles after each further one.
    pub first: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// No attempt starts later than this after the first.
    pub give_up_after: Duration,
}

impl Default for Retry {
    /// 0.5 s doubling to 30 s, for up to 5 minutes: about 14 attempts.
    fn default() -> Retry {
        Retry {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// The signature of `body` under `secret`: HMAC-SHA256, in standard Base64 with padding, what
/// LiveSwitch's `X-ApplicationSignature` carries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    BASE64.encode(hmac::sign(&key, body).as_ref())
}

/// One event for one webhook.
struct Job {
    delivery: u64,
    url: Url,
    body: Bytes,
    signature: String,
}

/// What a URL's worker shares with the others.
#[derive(Clone)]
struct Shared {
    http: Client,
    deliveries: Arc<Deliveries>,
    counters: Arc<Counters>,
    retry: Retry,
}

/// Delivers the events of a [`super::Webhooks`] handle: run [`Sender::run`] on the runtime.
pub struct Sender {
    events: mpsc::Receiver<Event>,
    store: CachedStore,
    shared: Shared,
    /// Each URL's worker's queue, by URL.
    queues: HashMap<String, mpsc::Sender<Job>>,
}

impl Sender {
    pub(super) fn new(
        events: mpsc::Receiver<Event>,
        store: CachedStore,
        deliveries: Arc<Deliveries>,
        counters: Arc<Counters>,
        http: Client,
        retry: Retry,
    ) -> Sender {
        Sender {
            events,
            store,
            shared: Shared {
                http,
                deliveries,
                counters,
                retry,
            },
            queues: HashMap::new(),
        }
    }

    /// Delivers until every [`super::Webhooks`] handle is gone. Deliveries still being retried
    /// then (at shutdown) are lost.
    pub async fn run(mut self) {
        while let Some(event) = self.events.recv().await {
            self.dispatch(&event);
        }
    }

    /// Queues `event` for each of its application's webhooks that wants it. The webhooks and
    /// secret are the configuration store's, as last read.
    fn dispatch(&mut self, event: &Event) {
        let Some((secret, hooks)) = self
            .store
            .webhooks_for(&event.application_id, event.kind.name())
        else {
            return;
        };
        if hooks.is_empty() {
            return;
        }
        let body = match serde_json::to_vec(event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(
                    event = event.kind.name(),
                    "cannot write the webhook body: {e}"
                );
                return;
            }
        };
        let signature = sign(&secret, &body);
        self.queues.retain(|_, q| !q.is_closed());
        for hook in hooks {
            let url = match hook.target() {
                Ok(url) => url,
                // Checked when stored; one written to the database by hand may not be.
                Err(e) => {
                    tracing::warn!(webhook = %hook.name, "webhook skipped: {e}");
                    continue;
                }
            };
            let delivery = self.shared.deliveries.add(event, &hook.name, &hook.url);
            let job = Job {
                delivery,
                url,
                body: body.clone(),
                signature: signature.clone(),
            };
            self.enqueue(hook.url, job);
        }
    }

    /// Hands `job` to its URL's worker, starting one if there is none.
    fn enqueue(&mut self, url: String, job: Job) {
        let job = match self.queues.get(&url) {
            None => job,
            Some(queue) => match queue.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job)) => {
                    self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    self.shared.deliveries.update(job.delivery, |d| {
                        d.state = State::Dropped;
                        d.last_error =
                            Some(format!("{URL_QUEUE} deliveries already wait for this URL"));
                    });
                    tracing::warn!(%url, "webhook delivery dropped: its URL's queue is full");
                    return;
                }
                // Its worker stopped, idle: start another.
                Err(TrySendError::Closed(job)) => job,
            },
        };
        let (queue, jobs) = mpsc::channel(URL_QUEUE);
        // A new queue has room.
        let _ = queue.try_send(job);
        tokio::spawn(work(jobs, self.shared.clone()));
        self.queues.insert(url, queue);
    }
}

/// A URL's worker: its deliveries one at a time, in order, until idle for [`IDLE`].
async fn work(mut jobs: mpsc::Receiver<Job>, shared: Shared) {
    loop {
        match tokio::time::timeout(IDLE, jobs.recv()).await {
            Ok(Some(job)) => deliver(&shared, job).await,
            Ok(None) => return,
            Err(_) => {
                // Refuse more, then send what came in meanwhile: nothing queued is lost.
                jobs.close();
                while let Ok(job) = jobs.try_recv() {
                    deliver(&shared, job).await;
                }
                return;
            }
        }
    }
}

/// Posts `job` until it is answered with a 2xx or the retries' time is up.
async fn deliver(shared: &Shared, job: Job) {
    let started = Instant::now();
    let mut wait = shared.retry.first;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = shared
            .http
            .post(&job.url, &job.signature, job.body.clone())
            .await;
        let delivered = matches!(result, Ok(status) if (200..300).contains(&status));
        let give_up = !delivered && started.elapsed() + wait > shared.retry.give_up_after;
        shared.deliveries.update(job.delivery, |d| {
            d.attempts = attempts;
            d.last_status = result.as_ref().ok().copied();
            d.last_error = match &result {
                Ok(_) if delivered => None,
                Ok(status) => Some(format!("answered {status}")),
                Err(e) => Some(e.clone()),
            };
            d.state = if delivered {
                State::Delivered
            } else if give_up {
                State::Failed
            } else {
                State::Pending
            };
        });
        if delivered {
            shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared
            .counters
            .attempts_failed
            .fetch_add(1, Ordering::Relaxed);
        if give_up {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %job.url, attempts, "webhook delivery failed: {result:?}");
            return;
        }
        tracing::debug!(url = %job.url, attempts, ?wait, "webhook delivery to retry: {result:?}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(shared.retry.max);
    }
}
