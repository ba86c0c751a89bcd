//! Webhooks: an application's channel, client, connection and recording events, posted as JSON
//! to the URLs the application registered in the configuration store, each body signed with
//! HMAC-SHA256 under the application's newest secret in `X-ApplicationSignature` (Base64), as
//! LiveSwitch does.
//!
//! Where events happen (joining, leaving, a transport connecting or closing, recording) they
//! are handed to [`Webhooks::emit`], which never waits: a bounded queue ([`QUEUE`]) that, when
//! full, drops the event and counts it, so a slow receiver can never slow signalling down. The
//! [`Sender`] task takes them off the queue and delivers them (see `sender`); what became of
//! each delivery is in [`Webhooks::deliveries`], which the admin API shows.

mod deliveries;
mod event;
mod http;
mod sender;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_store::CachedStore;
use tokio::sync::mpsc::{self, error::TrySendError};

use deliveries::Deliveries;
pub use deliveries::{Delivery, LOG_LEN, State};
pub use event::{Event, Kind, Link, Recording, mixed};
pub use http::{Client, SIGNATURE};
pub use sender::{Retry, Sender, URL_QUEUE, sign};

/// Events waiting for the sender; past it, new ones are dropped and counted.
pub const QUEUE: usize = 10_000;

/// What became of events and deliveries, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events not queued: the queue was full.
    events_dropped: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries given up after their retries.
    failed: AtomicU64,
    /// Deliveries not queued: their URL's queue was full.
    dropped: AtomicU64,
    /// Attempts that got no 2xx (each failed delivery counts once per attempt).
    attempts_failed: AtomicU64,
}

impl Counters {
    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        crate::metrics::metric(
            out,
            "switchyard_webhook_events_dropped_total",
            "counter",
            "Webhook events dropped because the sender's queue was full.",
            self.events_dropped.load(Ordering::Relaxed),
        );
        out.push_str(
            "# HELP switchyard_webhook_deliveries_total Webhook deliveries that ended, by result.\n",
        );
        out.push_str("# TYPE switchyard_webhook_deliveries_total counter\n");
        for (result, n) in [
            ("delivered", &self.delivered),
            ("failed", &self.failed),
            ("dropped", &self.dropped),
        ] {
            let _ = writeln!(
                out,
                "switchyard_webhook_deliveries_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        crate::metrics::metric(
            out,
            "switchyard_webhook_attempts_failed_total",
            "counter",
            "Webhook posts that got no 2xx answer (each is tried again until it gives up).",
            self.attempts_failed.load(Ordering::Relaxed),
        );
    }
}

/// Where events go. The default one sends nothing (a server without webhooks: a cluster's
/// media servers, whose gateways know the applications).
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    queue: Option<mpsc::Sender<Event>>,
    deliveries: Arc<Deliveries>,
    counters: Arc<Counters>,
}

impl Webhooks {
    /// A handle that sends `store`'s applications' events through `http`, and the [`Sender`] to
    /// run for it. `counters` are the ones `/metrics` shows.
    pub fn new(
        store: CachedStore,
        counters: Arc<Counters>,
        http: Client,
        retry: Retry,
    ) -> (Webhooks, Sender) {
        let (queue, events) = mpsc::channel(QUEUE);
        let deliveries = Arc::new(Deliveries::default());
        let sender = Sender::new(
            events,
            store,
            deliveries.clone(),
            counters.clone(),
            http,
            retry,
        );
        let webhooks = Webhooks {
            queue: Some(queue),
            deliveries,
            counters,
        };
        (webhooks, sender)
    }

    /// Queues `event` without waiting; one of no application (a participant a cluster gateway
    /// placed here) goes nowhere.
    pub fn emit(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        if event.application_id.is_empty() {
            return;
        }
        match queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(event = event.kind.name(), channel = %event.channel_id, "webhook event dropped: the queue is full");
            }
            // The sender is gone: the process is stopping.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// A handle whose events are read from the receiver rather than sent: for tests of where
    /// events come from.
    #[cfg(test)]
    pub(crate) fn capture() -> (Webhooks, mpsc::Receiver<Event>) {
        let (queue, events) = mpsc::channel(QUEUE);
        let hooks = Webhooks {
            queue: Some(queue),
            ..Webhooks::default()
        };
        (hooks, events)
    }

    /// `application`'s newest `limit` deliveries, newest first (see `deliveries`: in memory,
    /// the last [`LOG_LEN`] of all applications).
    pub fn deliveries(&self, application: &str, limit: usize) -> Vec<Delivery> {
        self.deliveries.of(application, limit)
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_store::{Application, Store, Webhook};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A receiver on 127.0.0.1 that answers each request with the next of `statuses` (then
    /// 200) and passes on (signature, body).
    async fn receiver(
        listener: TcpListener,
        statuses: Vec<u16>,
    ) -> mpsc::UnboundedReceiver<(String, String)> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut buf).await.unwrap();
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= length {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                let signature = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-applicationsignature: "))
                    .unwrap()
                    .to_string();
                let status = statuses.next().unwrap_or(200);
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                s.write_all(answer.as_bytes()).await.unwrap();
                tx.send((signature, body)).unwrap();
            }
        });
        rx
    }

    async fn store_with_hook(url: &str) -> CachedStore {
        let store = Store::open(Some("sqlite::memory:"), &std::env::temp_dir())
            .await
            .unwrap();
        store
            .put_application("t", &Application::new("acme", "old-secret"))
            .await
            .unwrap();
        store
            .rotate_secret("t", "acme", "new-secret")
            .await
            .unwrap();
        let hook = Webhook {
            application_id: "acme".into(),
            name: "hook".into(),
            url: url.into(),
            events: vec![],
        };
        store.put_webhook("t", &hook).await.unwrap();
        let cache = CachedStore::new(store);
        cache.refresh().await;
        cache
    }

    fn quick() -> Retry {
        Retry {
            first: Duration::from_millis(20),
            max: Duration::from_millis(80),
            give_up_after: Duration::from_millis(400),
        }
    }

    #[test]
    fn signatures_are_base64_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[tokio::test]
    async fn events_arrive_signed_in_order_through_failures() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let store = store_with_hook(&url).await;
        // The first two attempts are refused with a 503: the first event waits, the second
        // waits behind it.
        let mut received = receiver(listener, vec![503, 503]).await;
        let counters = Arc::new(Counters::default());
        let (hooks, sender) =
            Webhooks::new(store, counters.clone(), Client::new().unwrap(), quick());
        tokio::spawn(sender.run());
        let first = Event::new(Kind::ClientJoined, "acme", "room").client("p1", "alice");
        let second = Event::new(Kind::ClientLeft, "acme", "room").client("p1", "alice");
        hooks.emit(first.clone());
        hooks.emit(second.clone());
        // Another application's event goes nowhere.
        hooks.emit(Event::new(Kind::ClientJoined, "other", "room"));
        let mut bodies = Vec::new();
        for _ in 0..4 {
            let (signature, body) = tokio::time::timeout(Duration::from_secs(5), received.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(signature, sign("new-secret", body.as_bytes()));
            bodies.push(serde_json::from_str::<serde_json::Value>(&body).unwrap());
        }
        let ids: Vec<&str> = bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [&first.id, &first.id, &first.id, &second.id]);
        assert_eq!(bodies[3]["type"], "client.left");
        // The log: both delivered, the first after three attempts.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = hooks.deliveries("acme", 10);
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!((log[1].attempts, log[1].state), (3, State::Delivered));
        assert_eq!(log[1].last_status, Some(200));
        assert_eq!((log[0].attempts, log[0].state), (1, State::Delivered));
        let mut metrics = String::new();
        counters.render(&mut metrics);
        assert!(
            metrics.contains("switchyard_webhook_deliveries_total{result=\"delivered\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("switchyard_webhook_attempts_failed_total 2"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_is_given_up_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        drop(listener);
        let store = store_with_hook(&url).await;
        let counters = Arc::new(Counters::default());
        let (hooks, sender) =
            Webhooks::new(store, counters.clone(), Client::new().unwrap(), quick());
        tokio::spawn(sender.run());
        hooks.emit(Event::new(Kind::ChannelActivated, "acme", "room"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let failed = loop {
            let log = hooks.deliveries("acme", 10);
            if log.first().is_some_and(|d| d.state == State::Failed) {
                break log[0].clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "{log:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(failed.attempts >= 3, "{failed:?}");
        assert!(
            failed
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("cannot connect")),
            "{failed:?}"
        );
        assert_eq!(failed.last_status, None);
        let mut metrics = String::new();
        counters.render(&mut metrics);
        assert!(
            metrics.contains("switchyard_webhook_deliveries_total{result=\"failed\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, _events) = mpsc::channel(1);
        let counters = Arc::new(Counters::default());
        let hooks = Webhooks {
            queue: Some(queue),
            deliveries: Arc::default(),
            counters: counters.clone(),
        };
        hooks.emit(Event::new(Kind::ClientJoined, "a", "c"));
        hooks.emit(Event::new(Kind::ClientLeft, "a", "c"));
        // No application: not even queued.
        hooks.emit(Event::new(Kind::ClientLeft, "", "c"));
        assert_eq!(counters.events_dropped.load(Ordering::Relaxed), 1);
        // The default handle sends nothing and keeps no log.
        Webhooks::default().emit(Event::new(Kind::ClientJoined, "a", "c"));
        assert!(Webhooks::default().deliveries("a", 10).is_empty());
    }
}
