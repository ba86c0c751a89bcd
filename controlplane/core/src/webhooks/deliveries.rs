//! The delivery log the admin API shows: each event posted to each webhook, with its attempts
//! and how it ended. In memory and bounded ([`LOG_LEN`], the oldest forgotten first): it is for
//! looking at what happened lately, not an archive, and a restart empties it (as it loses the
//! deliveries still being retried, which are in memory too).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::event::{Event, Kind};

/// The most deliveries remembered.
pub const LOG_LEN: usize = 1000;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Not answered with a 2xx yet; being tried again.
    Pending,
    /// Answered with a 2xx.
    Delivered,
    /// Given up after the retries' time ran out.
    Failed,
    /// Never sent: the webhook's queue was full.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: u64,
    pub event_id: String,
    pub event_type: Kind,
    pub application_id: String,
    pub channel_id: String,
    /// The webhook's name.
    pub webhook: String,
    pub url: String,
    pub state: State,
    pub attempts: u32,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (no answer, or not a 2xx).
    pub last_error: Option<String>,
    /// Unix ms: when the event was queued, and when the delivery last changed.
    pub created_at: u64,
    pub updated_at: u64,
}

/// The log; shared by the sender's tasks and the admin API.
#[derive(Debug, Default)]
pub struct Deliveries {
    inner: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    next_id: u64,
    /// Oldest first.
    entries: VecDeque<Delivery>,
}

impl Deliveries {
    /// Logs `event` as pending for the webhook `name` at `url`; returns the delivery's id.
    pub fn add(&self, event: &Event, name: &str, url: &str) -> u64 {
        let mut log = self.lock();
        log.next_id += 1;
        let id = log.next_id;
        if log.entries.len() >= LOG_LEN {
            log.entries.pop_front();
        }
        let now = now_ms();
        log.entries.push_back(Delivery {
            id,
            event_id: event.id.clone(),
            event_type: event.kind,
            application_id: event.application_id.clone(),
            channel_id: event.channel_id.clone(),
            webhook: name.to_string(),
            url: url.to_string(),
            state: State::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        });
        id
    }

    /// Applies `change` to delivery `id`, if it is still remembered.
    pub fn update(&self, id: u64, change: impl FnOnce(&mut Delivery)) {
        let mut log = self.lock();
        // The newest are at the back, and a delivery being worked on is recent.
        if let Some(d) = log.entries.iter_mut().rev().find(|d| d.id == id) {
            change(d);
            d.updated_at = now_ms();
        }
    }

    /// `application`'s newest `limit` deliveries, newest first.
    pub fn of(&self, application: &str, limit: usize) -> Vec<Delivery> {
        self.lock()
            .entries
            .iter()
            .rev()
            .filter(|d| d.application_id == application)
            .take(limit)
            .cloned()
            .collect()
    }

    // Each change is whole under the lock, so a panic elsewhere cannot leave an entry half
    // written: a poisoned lock is still good to use.
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_per_application_and_bounded() {
        let log = Deliveries::default();
        let a = Event::new(Kind::ClientJoined, "a", "c");
        let b = Event::new(Kind::ClientJoined, "b", "c");
        let first = log.add(&a, "hook", "http://h/");
        log.add(&b, "hook", "http://h/");
        let second = log.add(&a, "hook", "http://h/");
        log.update(first, |d| {
            d.attempts = 2;
            d.state = State::Delivered;
            d.last_status = Some(204);
        });
        let of_a = log.of("a", 10);
        assert_eq!(
            of_a.iter().map(|d| d.id).collect::<Vec<_>>(),
            [second, first]
        );
        assert_eq!(of_a[1].state, State::Delivered);
        assert_eq!(of_a[1].attempts, 2);
        assert_eq!(of_a[0].state, State::Pending);
        assert_eq!(log.of("a", 1).len(), 1);
        assert!(log.of("nobody", 10).is_empty());
        for _ in 0..LOG_LEN {
            log.add(&b, "hook", "http://h/");
        }
        assert!(log.of("a", 10).is_empty(), "the oldest are forgotten");
        assert_eq!(log.of("b", usize::MAX).len(), LOG_LEN);
        // A forgotten delivery's update changes nothing.
        log.update(first, |d| d.attempts = 99);
        let json = serde_json::to_value(&log.of("b", 1)[0]).unwrap();
        assert_eq!(json["state"], "pending");
        assert_eq!(json["eventType"], "client.joined");
    }
}
