//! The TURN server as a state machine (RFC 8656): fed client messages, peer datagrams and time;
//! it answers through an [`Output`] the driver implements (send to a client, send from a relay
//! socket, bind or close a relay socket).
//!
//! Hand-written because relaying is the hot path: a ChannelData packet from a client costs one
//! map lookup and a scan of the allocation's few channels, and nothing allocates per packet.
//! Allocations, permissions and channels are created on the slow path (authenticated requests).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::auth::{self, NonceCheck, Nonces, Secrets};
use super::counters::{Counter, Counters};
use super::policy::{self, PeerPolicy};
use super::{CHANNEL_HEADER, CHANNELS, attr, is_channel_data, method, write_channel_data};
use crate::stun::{self, Class, Message, Writer};
use crate::wire::be_u16;

/// How long a permission lives without a refresh (RFC 8656 section 9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a channel binding lives without a refresh (RFC 8656 section 12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions and channels per allocation: a WebRTC client needs a handful; the limit keeps
/// the per-packet scans short and one client from growing the server without bound.
const MAX_PERMISSIONS: usize = 64;
const MAX_CHANNELS: usize = 64;
/// Expired state is swept this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// REQUESTED-TRANSPORT's value for UDP, the only relay transport offered.
const UDP: u8 = 17;

/// The settings a server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    pub secrets: Secrets,
    pub policy: PeerPolicy,
    /// The lifetime given when a client asks for less or nothing (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// The most a client may ask for.
    pub max_lifetime: Duration,
    /// Allocations one user (the part after `expiry:`) may hold at once.
    pub user_quota: usize,
    /// Allocations this server holds at most.
    pub total_quota: usize,
    /// Bytes per second each allocation may relay (both directions together); `None`: no cap.
    pub bandwidth: Option<u64>,
    /// Where relay sockets are bound: a peer at one of these addresses and ports is (or could
    /// be) another allocation's relayed address, which clients may always reach.
    pub relay_ips: Vec<IpAddr>,
    pub relay_ports: RangeInclusive<u16>,
}

impl Config {
    pub fn new(realm: impl Into<String>, secrets: Secrets) -> Config {
        Config {
            realm: realm.into(),
            secrets,
            policy: PeerPolicy::default(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            user_quota: 10,
            total_quota: 10_000,
            bandwidth: None,
            relay_ips: Vec::new(),
            relay_ports: 0..=0,
        }
    }
}

/// Where a client message came from: a UDP source address, or the driver's id for a TCP or
/// TLS connection (the 5-tuple an allocation belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAddr {
    Udp(SocketAddr),
    Stream(u64),
}

impl ClientAddr {
    /// ChannelData sent over a stream is padded to four bytes (RFC 8656 section 12.5).
    fn pads(self) -> bool {
        matches!(self, ClientAddr::Stream(_))
    }
}

/// The driver's handle for a relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: SocketAddr) -> Family {
        if policy::canonical(addr.ip()).is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// What the server asks of its driver.
pub trait Output {
    /// Sends a message to a client over the transport it came in on; `fill` writes it into
    /// the buffer and returns its length (`None`: it does not fit). False when nothing was
    /// queued.
    fn to_client(
        &mut self,
        client: ClientAddr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool;
    /// Sends `data` from a relay socket to a peer.
    fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]);
    /// Binds a relay socket; `None` when no port is free.
    fn bind_relay(&mut self, family: Family) -> Option<(RelayId, SocketAddr)>;
    fn close_relay(&mut self, relay: RelayId);
}

struct Permission {
    ip: IpAddr,
    expires: Instant,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

/// A token bucket over relayed bytes, one second deep.
struct Bucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, n: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let refill = (u128::from(self.rate) * elapsed.as_micros() / 1_000_000) as u64;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(self.rate);
            self.last = now;
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

struct Allocation {
    relay: RelayId,
    relayed: SocketAddr,
    username: Box<str>,
    /// The long-term key the client authenticated with, so its refreshes cost one HMAC.
    key: [u8; 16],
    /// The Allocate transaction, to answer its retransmissions with the same success.
    transaction: [u8; 12],
    expires: Instant,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    bucket: Option<Bucket>,
}

impl Allocation {
    fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = policy::canonical(ip);
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    fn within_bandwidth(&mut self, now: Instant, n: usize) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take(now, n))
    }

    /// Whether `n` bytes may pass between this allocation and `peer` now, either way: a
    /// permission for the peer's address and room in the bandwidth cap; else the drop's counter.
    fn admit(&mut self, now: Instant, peer: IpAddr, n: usize) -> Result<(), Counter> {
        if !self.permits(peer, now) {
            return Err(Counter::DropNoPermission);
        }
        if !self.within_bandwidth(now, n) {
            return Err(Counter::DropBandwidth);
        }
        Ok(())
    }
}

/// Sends `data` from the allocation's relay socket to `peer` if [`Allocation::admit`] lets it.
fn relay_to_peer(
    counters: &mut Counters,
    a: &mut Allocation,
    now: Instant,
    peer: SocketAddr,
    data: &[u8],
    out: &mut impl Output,
) {
    match a.admit(now, peer.ip(), data.len()) {
        Ok(()) => {
            out.to_peer(a.relay, peer, data);
            counters.bump(Counter::ToPeerPackets);
            counters.add(Counter::ToPeerBytes, data.len() as u64);
        }
        Err(drop) => counters.bump(drop),
    }
}

/// Why an authenticated request was refused: the error code and reason sent back.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    code: u16,
    counter: Counter,
    reason: &'static str,
}

/// A refusal and, once the client authenticated, the key to sign the error response with.
type Refused = (Refusal, Option<[u8; 16]>);

const fn refusal(code: u16, counter: Counter, reason: &'static str) -> Refusal {
    Refusal {
        code,
        counter,
        reason,
    }
}

const BAD_REQUEST: Refusal = refusal(400, Counter::BadRequest, "Bad Request");
const UNAUTHORIZED: Refusal = refusal(401, Counter::Unauthorized, "Unauthorized");
const FORBIDDEN: Refusal = refusal(403, Counter::Forbidden, "Forbidden");
const MISMATCH: Refusal = refusal(437, Counter::AllocationMismatch, "Allocation Mismatch");
const STALE_NONCE: Refusal = refusal(438, Counter::StaleNonce, "Stale Nonce");
const FAMILY: Refusal = refusal(
    440,
    Counter::FamilyNotSupported,
    "Address Family not Supported",
);
const WRONG_CREDENTIALS: Refusal = refusal(441, Counter::WrongCredentials, "Wrong Credentials");
const TRANSPORT: Refusal = refusal(
    442,
    Counter::UnsupportedTransport,
    "Unsupported Transport Protocol",
);
const PEER_FAMILY: Refusal = refusal(
    443,
    Counter::PeerFamilyMismatch,
    "Peer Address Family Mismatch",
);
const QUOTA: Refusal = refusal(486, Counter::QuotaReached, "Allocation Quota Reached");
const CAPACITY: Refusal = refusal(508, Counter::InsufficientCapacity, "Insufficient Capacity");

/// Comprehension-required attributes (below 0x8000) this server understands in requests;
/// any other gets 420 with UNKNOWN-ATTRIBUTES.
const KNOWN: &[u16] = &[
    stun::attr::MAPPED_ADDRESS,
    stun::attr::USERNAME,
    stun::attr::MESSAGE_INTEGRITY,
    stun::attr::ERROR_CODE,
    stun::attr::XOR_MAPPED_ADDRESS,
    stun::attr::PRIORITY,
    stun::attr::USE_CANDIDATE,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::RESERVATION_TOKEN,
];

/// The TURN server of one thread: its allocations and counters.
pub struct Server {
    config: Config,
    nonces: Nonces,
    /// The Unix time at `epoch`, so REST expiries (wall-clock) compare with `Instant`s.
    epoch: (Instant, u64),
    allocations: HashMap<ClientAddr, Allocation>,
    by_relay: HashMap<RelayId, ClientAddr>,
    per_user: HashMap<Box<str>, usize>,
    counters: Counters,
    next_sweep: Instant,
    /// Transaction ids of Data indications: unique enough, never read back.
    indication: u64,
}

impl Server {
    /// `now_unix` is the wall-clock time at `now`; `seed` keys the nonces (random in
    /// production, fixed in tests).
    pub fn new(config: Config, now: Instant, now_unix: u64, seed: &[u8]) -> Server {
        Server {
            config,
            nonces: Nonces::new(seed),
            epoch: (now, now_unix),
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            counters: Counters::default(),
            next_sweep: now + SWEEP_INTERVAL,
            indication: u64::from_be_bytes(
                seed.get(..8)
                    .and_then(|s| s.try_into().ok())
                    .unwrap_or_default(),
            ),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counts what the driver did on the server's behalf (in-process hand-off to the SFU).
    pub fn count(&mut self, counter: Counter, n: u64) {
        self.counters.add(counter, n);
    }

    /// The relayed address of the allocation made over `client`, if any.
    pub fn relayed_address(&self, client: ClientAddr) -> Option<SocketAddr> {
        self.allocations.get(&client).map(|a| a.relayed)
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    /// One message from a client: STUN (Binding, TURN requests, Send indications) or
    /// ChannelData. `src` is the client's address (for XOR-MAPPED-ADDRESS and nonces).
    pub fn handle_client(
        &mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        data: &[u8],
        out: &mut impl Output,
    ) {
        if is_channel_data(data) {
            self.channel_data(now, client, data, out);
            return;
        }
        let Ok(msg) = Message::parse(data) else {
            self.counters.bump(Counter::DropMalformed);
            return;
        };
        if msg.fingerprint_ok() == Some(false) {
            self.counters.bump(Counter::DropMalformed);
            return;
        }
        match (msg.class(), msg.method()) {
            (Class::Indication, method::SEND) => self.send(now, client, &msg, out),
            (Class::Request, m) => {
                if let Some(unknown) = first_unknown(&msg) {
                    self.counters.bump(Counter::UnknownAttribute);
                    respond(out, client, &msg, Class::Error, None, |w| {
                        w.error_code(420, "Unknown Attribute")?;
                        w.attribute(attr::UNKNOWN_ATTRIBUTES, &unknown.to_be_bytes())
                    });
                    return;
                }
                let result = match m {
                    stun::method::BINDING => {
                        self.counters.bump(Counter::Bindings);
                        respond(out, client, &msg, Class::Success, None, |w| {
                            w.xor_mapped_address(src)
                        });
                        Ok(())
                    }
                    method::ALLOCATE => self.allocate(now, client, src, &msg, out),
                    method::REFRESH => self.refresh(now, client, src, &msg, out),
                    method::CREATE_PERMISSION => {
                        self.create_permission(now, client, src, &msg, out)
                    }
                    method::CHANNEL_BIND => self.channel_bind(now, client, src, &msg, out),
                    _ => Err((BAD_REQUEST, None)),
                };
                if let Err((refusal, key)) = result {
                    self.refuse(now, client, src, &msg, refusal, key, out);
                }
            }
            _ => self.counters.bump(Counter::DropUnexpected),
        }
    }

    /// Sends an error response; 401 and 438 carry a fresh nonce and the realm.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'_>,
        refusal: Refusal,
        key: Option<[u8; 16]>,
        out: &mut impl Output,
    ) {
        self.counters.bump(refusal.counter);
        // Only a challenge carries a fresh nonce (an HMAC): other refusals skip minting one.
        let challenge =
            matches!(refusal.code, 401 | 438).then(|| self.nonces.mint(self.unix(now), src.ip()));
        let realm = self.config.realm.as_bytes();
        respond(out, client, msg, Class::Error, key.as_ref(), |w| {
            w.error_code(refusal.code, refusal.reason)?;
            if let Some(nonce) = &challenge {
                w.attribute(attr::REALM, realm)?;
                w.attribute(attr::NONCE, nonce)?;
            }
            Ok(())
        });
    }

    /// Long-term authentication (RFC 8489 section 9.2.4) with REST usernames: returns the
    /// username and key, or the refusal. An allocation's own key is tried first.
    fn authenticate<'m>(
        &self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'m>,
    ) -> Result<(&'m str, [u8; 16]), Refused> {
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.username(),
            msg.attribute(attr::REALM),
            msg.attribute(attr::NONCE),
        ) else {
            // No credentials at all: the first request of every client, answered with a
            // challenge. Partial credentials are a malformed request.
            let bare =
                msg.username().is_none() && msg.attribute(stun::attr::MESSAGE_INTEGRITY).is_none();
            return Err((if bare { UNAUTHORIZED } else { BAD_REQUEST }, None));
        };
        let now_unix = self.unix(now);
        match self.nonces.check(nonce, now_unix, src.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Err((STALE_NONCE, None)),
            NonceCheck::Invalid => return Err((UNAUTHORIZED, None)),
        }
        let Ok(username) = std::str::from_utf8(username) else {
            return Err((UNAUTHORIZED, None));
        };
        if realm != self.config.realm.as_bytes() {
            return Err((UNAUTHORIZED, None));
        }
        match auth::parse_username(username) {
            Some((expiry, _)) if expiry >= now_unix => {}
            _ => return Err((UNAUTHORIZED, None)),
        }
        if let Some(a) = self.allocations.get(&client)
            && *a.username == *username
            && msg.integrity_ok(&a.key)
        {
            return Ok((username, a.key));
        }
        self.config
            .secrets
            .keys_for(username, &self.config.realm)
            .find(|key| msg.integrity_ok(key))
            .map(|key| (username, key))
            .ok_or((UNAUTHORIZED, None))
    }

    /// Authenticates a request on an existing allocation (Refresh, CreatePermission,
    /// ChannelBind) and returns the allocation and the key to sign the answer with.
    fn allocation<'s>(
        &'s mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'_>,
    ) -> Result<(&'s mut Allocation, [u8; 16]), Refused> {
        let (username, key) = self.authenticate(now, client, src, msg)?;
        let a = self
            .allocations
            .get_mut(&client)
            .ok_or((MISMATCH, Some(key)))?;
        if *a.username != *username {
            return Err((WRONG_CREDENTIALS, Some(key)));
        }
        Ok((a, key))
    }

    fn allocate(
        &mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'_>,
        out: &mut impl Output,
    ) -> Result<(), Refused> {
        let (username, key) = self.authenticate(now, client, src, msg)?;
        let k = Some(key);
        if let Some(a) = self.allocations.get(&client) {
            // A retransmitted Allocate gets the same success; any other is a mismatch.
            if a.transaction != *msg.transaction_id() || *a.username != *username {
                return Err((MISMATCH, k));
            }
            let (relayed, left) = (a.relayed, a.expires.saturating_duration_since(now));
            respond(out, client, msg, Class::Success, Some(&key), |w| {
                allocate_success(w, relayed, left, src)
            });
            return Ok(());
        }
        match msg.attribute(attr::REQUESTED_TRANSPORT) {
            Some([UDP, ..]) => {}
            Some(_) => return Err((TRANSPORT, k)),
            None => return Err((BAD_REQUEST, k)),
        }
        if msg.attribute(attr::RESERVATION_TOKEN).is_some() {
            // Reserved ports (RTP/RTCP pairs) are not offered; WebRTC never asks.
            return Err((CAPACITY, k));
        }
        let family = match msg.attribute(attr::REQUESTED_ADDRESS_FAMILY) {
            None | Some([0x01, ..]) => Family::V4,
            Some([0x02, ..]) => Family::V6,
            Some(_) => return Err((FAMILY, k)),
        };
        let user = auth::parse_username(username)
            .map(|(_, u)| u)
            .unwrap_or(username);
        let held = self.per_user.get(user).copied().unwrap_or(0);
        if held >= self.config.user_quota || self.allocations.len() >= self.config.total_quota {
            return Err((QUOTA, k));
        }
        let lifetime = self.lifetime(msg);
        let Some((relay, relayed)) = out.bind_relay(family) else {
            return Err((CAPACITY, k));
        };
        let bucket = self.config.bandwidth.map(|rate| Bucket {
            rate,
            tokens: rate,
            last: now,
        });
        self.allocations.insert(
            client,
            Allocation {
                relay,
                relayed,
                username: username.into(),
                key,
                transaction: *msg.transaction_id(),
                expires: now + lifetime,
                permissions: Vec::new(),
                channels: Vec::new(),
                bucket,
            },
        );
        self.by_relay.insert(relay, client);
        *self.per_user.entry(user.into()).or_default() += 1;
        self.counters.bump(Counter::AllocationsTotal);
        self.counters.allocations = self.allocations.len() as u64;
        self.next_sweep = self.next_sweep.min(now + SWEEP_INTERVAL);
        respond(out, client, msg, Class::Success, Some(&key), |w| {
            allocate_success(w, relayed, lifetime, src)
        });
        Ok(())
    }

    /// The lifetime a request gets: at least the default, at most the maximum.
    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let asked = msg
            .attribute(attr::LIFETIME)
            .and_then(|v| crate::wire::be_u32(v, 0))
            .map(|s| Duration::from_secs(u64::from(s)));
        asked.unwrap_or(self.config.default_lifetime).clamp(
            self.config.default_lifetime,
            self.config.max_lifetime.max(self.config.default_lifetime),
        )
    }

    fn refresh(
        &mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'_>,
        out: &mut impl Output,
    ) -> Result<(), Refused> {
        let asked_zero = msg
            .attribute(attr::LIFETIME)
            .and_then(|v| crate::wire::be_u32(v, 0))
            == Some(0);
        let lifetime = if asked_zero {
            Duration::ZERO
        } else {
            self.lifetime(msg)
        };
        let (a, key) = self.allocation(now, client, src, msg)?;
        if asked_zero {
            self.remove(client, out);
        } else {
            a.expires = now + lifetime;
        }
        respond(out, client, msg, Class::Success, Some(&key), |w| {
            w.attribute(attr::LIFETIME, &(lifetime.as_secs() as u32).to_be_bytes())
        });
        Ok(())
    }

    /// Whether a peer passes the policy: the media server's own sockets and this server's
    /// relayed addresses always do.
    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        let ip = policy::canonical(peer.ip());
        let own_relay =
            self.config.relay_ips.contains(&ip) && self.config.relay_ports.contains(&peer.port());
        self.config.policy.check(peer, own_relay).is_ok()
    }

    fn create_permission(
        &mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'_>,
        out: &mut impl Output,
    ) -> Result<(), Refused> {
        let (relayed, key) = {
            let (a, key) = self.allocation(now, client, src, msg)?;
            (a.relayed, key)
        };
        let k = Some(key);
        // Every peer is checked before any permission is installed: all or nothing.
        let mut peers = 0;
        for (t, v) in msg.attributes() {
            if t != attr::XOR_PEER_ADDRESS {
                continue;
            }
            let peer = msg.xor_address_value(v).ok_or((BAD_REQUEST, k))?;
            if Family::of(peer) != Family::of(relayed) {
                return Err((PEER_FAMILY, k));
            }
            if !self.peer_allowed(peer) {
                return Err((FORBIDDEN, k));
            }
            peers += 1;
        }
        if peers == 0 {
            return Err((BAD_REQUEST, k));
        }
        let a = self.allocations.get_mut(&client).ok_or((MISMATCH, k))?;
        for (t, v) in msg.attributes() {
            if t == attr::XOR_PEER_ADDRESS
                && let Some(peer) = msg.xor_address_value(v)
                && !permit(a, peer.ip(), now)
            {
                return Err((CAPACITY, k));
            }
        }
        respond(out, client, msg, Class::Success, Some(&key), |_| Ok(()));
        Ok(())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        client: ClientAddr,
        src: SocketAddr,
        msg: &Message<'_>,
        out: &mut impl Output,
    ) -> Result<(), Refused> {
        let (relayed, key) = {
            let (a, key) = self.allocation(now, client, src, msg)?;
            (a.relayed, key)
        };
        let k = Some(key);
        let number = msg
            .attribute(attr::CHANNEL_NUMBER)
            .and_then(|v| be_u16(v, 0))
            .filter(|n| CHANNELS.contains(n))
            .ok_or((BAD_REQUEST, k))?;
        let peer = msg
            .xor_address(attr::XOR_PEER_ADDRESS)
            .ok_or((BAD_REQUEST, k))?;
        if Family::of(peer) != Family::of(relayed) {
            return Err((PEER_FAMILY, k));
        }
        if !self.peer_allowed(peer) {
            return Err((FORBIDDEN, k));
        }
        let a = self.allocations.get_mut(&client).ok_or((MISMATCH, k))?;
        // A number stays with its peer and a peer with its number until the binding expires.
        if a.channels
            .iter()
            .any(|c| c.expires > now && ((c.number == number) != (c.peer == peer)))
        {
            return Err((BAD_REQUEST, k));
        }
        let full = a.channels.len() >= MAX_CHANNELS;
        match a.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => {
                c.peer = peer;
                c.expires = now + CHANNEL_LIFETIME;
            }
            None if full => return Err((CAPACITY, k)),
            None => a.channels.push(Channel {
                number,
                peer,
                expires: now + CHANNEL_LIFETIME,
            }),
        }
        if !permit(a, peer.ip(), now) {
            return Err((CAPACITY, k));
        }
        respond(out, client, msg, Class::Success, Some(&key), |_| Ok(()));
        Ok(())
    }

    /// A Send indication: relay DATA to XOR-PEER-ADDRESS if a permission allows it.
    fn send(&mut self, now: Instant, client: ClientAddr, msg: &Message<'_>, out: &mut impl Output) {
        let Some(a) = self.allocations.get_mut(&client) else {
            self.counters.bump(Counter::DropNoAllocation);
            return;
        };
        let (Some(peer), Some(data)) = (
            msg.xor_address(attr::XOR_PEER_ADDRESS),
            msg.attribute(attr::DATA),
        ) else {
            self.counters.bump(Counter::DropMalformed);
            return;
        };
        relay_to_peer(&mut self.counters, a, now, peer, data, out);
    }

    fn channel_data(
        &mut self,
        now: Instant,
        client: ClientAddr,
        data: &[u8],
        out: &mut impl Output,
    ) {
        let (Some(number), Some(len)) = (be_u16(data, 0), be_u16(data, 2)) else {
            self.counters.bump(Counter::DropMalformed);
            return;
        };
        let Some(payload) = data.get(CHANNEL_HEADER..CHANNEL_HEADER + usize::from(len)) else {
            self.counters.bump(Counter::DropMalformed);
            return;
        };
        let Some(a) = self.allocations.get_mut(&client) else {
            self.counters.bump(Counter::DropNoAllocation);
            return;
        };
        let Some(peer) = a
            .channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
        else {
            self.counters.bump(Counter::DropUnboundChannel);
            return;
        };
        relay_to_peer(&mut self.counters, a, now, peer, payload, out);
    }

    /// A datagram a relay socket received from `peer`: to the client as ChannelData when a
    /// channel is bound to the peer, else in a Data indication; dropped without a permission.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
        out: &mut impl Output,
    ) {
        let Some(a) = self
            .by_relay
            .get(&relay)
            .and_then(|c| Some((*c, self.allocations.get_mut(c)?)))
        else {
            self.counters.bump(Counter::DropNoAllocation);
            return;
        };
        let (client, a) = a;
        if let Err(drop) = a.admit(now, peer.ip(), data.len()) {
            self.counters.bump(drop);
            return;
        }
        let channel = a
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number);
        let sent = match channel {
            Some(number) => out.to_client(client, |buf| {
                write_channel_data(buf, number, data, client.pads())
            }),
            None => {
                self.indication = self.indication.wrapping_add(1);
                let mut id = [0u8; 12];
                id[4..].copy_from_slice(&self.indication.to_be_bytes());
                out.to_client(client, |buf| {
                    let mut w = Writer::new(buf, method::DATA, Class::Indication, &id).ok()?;
                    w.xor_address(attr::XOR_PEER_ADDRESS, peer).ok()?;
                    w.attribute(attr::DATA, data).ok()?;
                    Some(w.finish())
                })
            }
        };
        if sent {
            self.counters.bump(Counter::ToClientPackets);
            self.counters.add(Counter::ToClientBytes, data.len() as u64);
        } else {
            // Too big for a send buffer once framed, or no buffer free.
            self.counters.bump(Counter::DropSendFailed);
        }
    }

    /// A stream client sent bytes that are neither STUN nor ChannelData (its connection is
    /// closed).
    pub fn malformed_stream(&mut self) {
        self.counters.bump(Counter::DropMalformed);
    }

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 section 3.1).
    pub fn client_closed(&mut self, client: ClientAddr, out: &mut impl Output) {
        self.remove(client, out);
    }

    fn remove(&mut self, client: ClientAddr, out: &mut impl Output) {
        let Some(a) = self.allocations.remove(&client) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        out.close_relay(a.relay);
        let user = auth::parse_username(&a.username)
            .map(|(_, u)| u)
            .unwrap_or(&a.username);
        if let Some(n) = self.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
        self.counters.allocations = self.allocations.len() as u64;
    }

    /// When [`Server::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.allocations.is_empty()).then_some(self.next_sweep)
    }

    /// Expires allocations, permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Output) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let expired: Vec<ClientAddr> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(c, _)| *c)
            .collect();
        for client in expired {
            self.remove(client, out);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|p| p.expires > now);
            a.channels.retain(|c| c.expires > now);
        }
    }

    /// Removes every allocation (shutdown).
    pub fn close_all(&mut self, out: &mut impl Output) {
        let clients: Vec<ClientAddr> = self.allocations.keys().copied().collect();
        for client in clients {
            self.remove(client, out);
        }
    }
}

/// Installs or refreshes a permission for `ip`; false when the allocation has too many.
fn permit(a: &mut Allocation, ip: IpAddr, now: Instant) -> bool {
    let ip = policy::canonical(ip);
    if let Some(p) = a.permissions.iter_mut().find(|p| p.ip == ip) {
        p.expires = now + PERMISSION_LIFETIME;
        return true;
    }
    a.permissions.retain(|p| p.expires > now);
    if a.permissions.len() >= MAX_PERMISSIONS {
        return false;
    }
    a.permissions.push(Permission {
        ip,
        expires: now + PERMISSION_LIFETIME,
    });
    true
}

fn allocate_success(
    w: &mut Writer<'_>,
    relayed: SocketAddr,
    lifetime: Duration,
    src: SocketAddr,
) -> Result<(), stun::Error> {
    w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed)?;
    w.attribute(attr::LIFETIME, &(lifetime.as_secs() as u32).to_be_bytes())?;
    w.xor_mapped_address(src)
}

/// The first comprehension-required attribute of a request this server does not know.
fn first_unknown(msg: &Message<'_>) -> Option<u16> {
    msg.attributes()
        .map(|(t, _)| t)
        .find(|t| *t < 0x8000 && !KNOWN.contains(t))
}

/// Answers `msg` with a response of `class` whose attributes `body` writes, signed with `key`
/// when given, with FINGERPRINT when the request had one.
fn respond(
    out: &mut impl Output,
    client: ClientAddr,
    msg: &Message<'_>,
    class: Class,
    key: Option<&[u8; 16]>,
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), stun::Error>,
) {
    let fingerprint = msg.has_fingerprint();
    let method = msg.method();
    let id = *msg.transaction_id();
    // An answer that does not fit is dropped; the client retransmits.
    let _ = out.to_client(client, |buf| {
        let mut w = Writer::new(buf, method, class, &id).ok()?;
        body(&mut w).ok()?;
        if let Some(key) = key {
            w.message_integrity(key).ok()?;
        }
        if fingerprint {
            w.fingerprint().ok()?;
        }
        Some(w.finish())
    });
}
