//! Limits on `/sync` sockets, so that no client holds a socket, a task and a reply queue for
//! nothing: a socket must join within a deadline, may send only so many frames a second, and
//! one source address may hold only so many sockets at once. Past a limit the socket is closed
//! (or the upgrade refused) rather than answered, and counted in `/metrics`.
//!
//! `SYNC:IPADDRESSES`, when set, is who may signal at all: `/sync`, `/api/dev-token` and
//! WHIP/WHEP answer other source addresses 403 before reading anything (the demo page's
//! files, `/health`, `/ready` and `/metrics` stay open, for probes and monitoring).
//!
//! The per-address count is of the TCP peer: behind a load balancer that does not pass the
//! client's address through, every client shares one, so raise or turn off
//! `SYNC:MAXCONNECTIONSPERADDRESS` there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::allowlist::{AllowList, BadEntry};
use crate::channels::Channels;
use crate::config::Config;
use crate::error::Error;
use crate::p2p::TokenBucket;

/// Close code for a socket that did not join in time (4000-4999 are for applications).
pub const CLOSE_JOIN_TIMEOUT: u16 = 4008;
/// Close code for a socket that sent frames faster than its limit.
pub const CLOSE_RATE: u16 = 4029;

/// Seconds a socket may stay open without a successful `join`: a page joins as soon as it has
/// a token, so this only ends sockets nobody uses.
pub const JOIN_TIMEOUT_SECS: u64 = 10;
/// Frames per second a socket may send, sustained. Above the sum of the per-kind limits on
/// signals and channel messages (50 a second each), so a client within those is never closed.
pub const MESSAGE_RATE: u64 = 100;
/// Frames a socket may send at once after being quiet: a page's start (join, publish,
/// subscribes, trickled candidates) with room to spare.
pub const MESSAGE_BURST: u64 = 200;
/// Sockets one source address may hold at once: a few dozen tabs, or people behind one NAT.
pub const PER_ADDRESS: u64 = 50;

/// The limits in force, and how many sockets each address holds now.
#[derive(Debug)]
pub struct SyncLimits {
    /// None: no deadline.
    pub join_timeout: Option<Duration>,
    /// (frames per second, burst); None: no limit.
    pub rate: Option<(f64, f64)>,
    /// None: no limit.
    pub per_address: Option<usize>,
    /// `SYNC:IPADDRESSES`; None: every address may signal.
    pub allow: Option<AllowList>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Default for SyncLimits {
    fn default() -> SyncLimits {
        SyncLimits::new(JOIN_TIMEOUT_SECS, MESSAGE_RATE, MESSAGE_BURST, PER_ADDRESS)
    }
}

impl SyncLimits {
    /// Limits from whole numbers, where 0 turns a limit off (a burst of 0 is read as 1).
    pub fn new(join_timeout_secs: u64, rate: u64, burst: u64, per_address: u64) -> SyncLimits {
        SyncLimits {
            join_timeout: (join_timeout_secs > 0).then(|| Duration::from_secs(join_timeout_secs)),
            rate: (rate > 0).then(|| (rate as f64, burst.max(1) as f64)),
            per_address: (per_address > 0)
                .then(|| usize::try_from(per_address).unwrap_or(usize::MAX)),
            allow: None,
            open: Arc::default(),
        }
    }

    /// `SYNC:JOINTIMEOUT`, `SYNC:MESSAGERATE`, `SYNC:MESSAGEBURST`,
    /// `SYNC:MAXCONNECTIONSPERADDRESS` and `SYNC:IPADDRESSES` (checked by `Config::load`),
    /// else the defaults.
    pub fn from_config(config: &Config) -> Result<SyncLimits, BadEntry> {
        let allow = config
            .get("SYNC:IPADDRESSES")
            .map(AllowList::parse)
            .transpose()?;
        let limits = SyncLimits::new(
            config
                .count("SYNC:JOINTIMEOUT")
                .unwrap_or(JOIN_TIMEOUT_SECS),
            config.count("SYNC:MESSAGERATE").unwrap_or(MESSAGE_RATE),
            config.count("SYNC:MESSAGEBURST").unwrap_or(MESSAGE_BURST),
            config
                .count("SYNC:MAXCONNECTIONSPERADDRESS")
                .unwrap_or(PER_ADDRESS),
        );
        Ok(SyncLimits { allow, ..limits })
    }

    /// Refuses `ip` (403) when `SYNC:IPADDRESSES` is set and does not hold it.
    pub fn check_source(&self, ip: IpAddr) -> Result<(), Error> {
        match &self.allow {
            Some(allow) if !allow.allows(ip) => Err(Error::Forbidden(format!(
                "{ip} may not use signalling: it is not in SYNC:IPADDRESSES"
            ))),
            _ => Ok(()),
        }
    }

    /// A full bucket for one socket's frames, if their rate is limited.
    pub fn bucket(&self, now: Instant) -> Option<TokenBucket> {
        self.rate
            .map(|(rate, burst)| TokenBucket::new(rate, burst, now))
    }

    /// Counts a socket from `ip`, or None when the address already holds its limit. The count
    /// drops when the returned [`Admitted`] does.
    pub fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if self.per_address.is_some_and(|max| *n >= max) {
            return None;
        }
        *n += 1;
        Some(Admitted {
            open: self.open.clone(),
            ip,
        })
    }
}

/// Why a refusal by `SYNC:IPADDRESSES` is counted, in `switchyard_signalling_errors_total`.
pub const NOT_ALLOWED: &str = "address_not_allowed";

/// Middleware (`axum::middleware::from_fn_with_state`) for routes besides `/sync` that only
/// `SYNC:IPADDRESSES` may use (WHIP/WHEP): others get 403, counted, before the request is read.
pub async fn guard<C: Channels>(
    State(channels): State<Arc<C>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match channels.sync_limits().check_source(from.ip()) {
        Ok(()) => next.run(request).await,
        Err(e) => refused(&*channels, from, request.uri().path(), e),
    }
}

/// Counts and logs a refusal by `SYNC:IPADDRESSES`, and answers it.
pub fn refused<C: Channels>(channels: &C, from: SocketAddr, path: &str, e: Error) -> Response {
    channels.metrics().signalling_error(NOT_ALLOWED);
    tracing::debug!(%from, path, "refused: outside SYNC:IPADDRESSES");
    e.into_response()
}

/// One socket counted against its address for as long as this lives.
#[derive(Debug)]
pub struct Admitted {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_them_back() {
        let limits = SyncLimits::new(10, 100, 200, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(mapped).unwrap();
        assert!(
            limits.admit(a).is_none(),
            "an IPv4-mapped address is the same"
        );
        assert!(limits.admit(b).is_some(), "other addresses are unaffected");
        drop(first);
        assert!(limits.admit(a).is_some());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = SyncLimits::new(0, 0, 0, 0);
        assert_eq!(limits.join_timeout, None);
        assert!(limits.bucket(Instant::now()).is_none());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| limits.admit(a).unwrap()).collect();
        assert_eq!(held.len(), 1000);
        let d = SyncLimits::default();
        assert_eq!(d.join_timeout, Some(Duration::from_secs(10)));
        assert_eq!(d.rate, Some((100.0, 200.0)));
        assert_eq!(d.per_address, Some(50));
    }

    #[test]
    fn settings_override_the_defaults_and_are_checked() {
        use std::ffi::OsString;
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect::<Vec<_>>()
        };
        let config = Config::load(
            None,
            vars(&[
                ("SYNC__JOINTIMEOUT", "3"),
                ("sync__messagerate", "0"),
                ("SYNC:MAXCONNECTIONSPERADDRESS", "7"),
                ("SYNC__IPADDRESSES", "10.0.0.0/8"),
            ]),
        )
        .unwrap();
        let limits = SyncLimits::from_config(&config).unwrap();
        assert_eq!(limits.join_timeout, Some(Duration::from_secs(3)));
        assert_eq!(limits.rate, None);
        assert_eq!(limits.per_address, Some(7));
        assert!(limits.check_source("10.1.2.3".parse().unwrap()).is_ok());
        let refused = limits.check_source("192.0.2.1".parse().unwrap());
        assert_eq!(
            refused.unwrap_err().to_string(),
            "192.0.2.1 may not use signalling: it is not in SYNC:IPADDRESSES"
        );
        let open = SyncLimits::from_config(&Config::load(None, vars(&[])).unwrap()).unwrap();
        assert!(open.check_source("192.0.2.1".parse().unwrap()).is_ok());
        let e = Config::load(None, vars(&[("SYNC__MESSAGEBURST", "lots")])).unwrap_err();
        assert!(e.to_string().starts_with("SYNC:MESSAGEBURST"), "{e}");
    }

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let limits = SyncLimits::new(10, 10, 5, 0);
        let t0 = Instant::now();
        let mut bucket = limits.bucket(t0).unwrap();
        assert!((0..5).all(|_| bucket.take(t0)));
        assert!(!bucket.take(t0));
        assert!(bucket.take(t0 + Duration::from_millis(100)));
    }
}
