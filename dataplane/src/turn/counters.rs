//! What the TURN server counts: relayed traffic, every refusal by its error code and every
//! dropped message by reason, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        /// One TURN counter; its name is the `/metrics` series (refusals carry the code).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter {
            $($variant,)*
        }

        impl Counter {
            pub const ALL: &[Counter] = &[$(Counter::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }
        }
    };
}

counters! {
    AllocationsTotal => "allocations_total",
    Bindings => "binding_requests_total",
    ToPeerPackets => "relayed_to_peer_packets_total",
    ToPeerBytes => "relayed_to_peer_bytes_total",
    ToClientPackets => "relayed_to_client_packets_total",
    ToClientBytes => "relayed_to_client_bytes_total",
    ToSfuInProcess => "sfu_in_process_packets_total{direction=\"to_sfu\"}",
    FromSfuInProcess => "sfu_in_process_packets_total{direction=\"from_sfu\"}",
    BadRequest => "refused_total{code=\"400\"}",
    Unauthorized => "refused_total{code=\"401\"}",
    Forbidden => "refused_total{code=\"403\"}",
    UnknownAttribute => "refused_total{code=\"420\"}",
    AllocationMismatch => "refused_total{code=\"437\"}",
    StaleNonce => "refused_total{code=\"438\"}",
    FamilyNotSupported => "refused_total{code=\"440\"}",
    WrongCredentials => "refused_total{code=\"441\"}",
    UnsupportedTransport => "refused_total{code=\"442\"}",
    PeerFamilyMismatch => "refused_total{code=\"443\"}",
    QuotaReached => "refused_total{code=\"486\"}",
    InsufficientCapacity => "refused_total{code=\"508\"}",
    DropMalformed => "dropped_total{reason=\"malformed\"}",
    DropNoAllocation => "dropped_total{reason=\"no_allocation\"}",
    DropNoPermission => "dropped_total{reason=\"no_permission\"}",
    DropUnboundChannel => "dropped_total{reason=\"unbound_channel\"}",
    DropBandwidth => "dropped_total{reason=\"bandwidth\"}",
    DropUnexpected => "dropped_total{reason=\"unexpected_message\"}",
    DropSendFailed => "dropped_total{reason=\"send_failed\"}",
}

const N: usize = Counter::ALL.len();

/// Plain counters, bumped by one server without atomics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    values: [u64; N],
    /// Allocations alive now (a gauge, not a counter).
    pub allocations: u64,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            values: [0; N],
            allocations: 0,
        }
    }
}

impl Counters {
    pub fn bump(&mut self, c: Counter) {
        self.add(c, 1);
    }

    pub fn add(&mut self, c: Counter, n: u64) {
        self.values[c as usize] += n;
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Sums another server's counters into these (one per service thread).
    pub fn merge(&mut self, other: &Counters) {
        for (a, b) in self.values.iter_mut().zip(other.values) {
            *a += b;
        }
        self.allocations += other.allocations;
    }
}

/// The counters of one server thread as the control plane reads them.
#[derive(Debug, Default)]
pub struct Shared {
    values: [AtomicU64; N],
    allocations: AtomicU64,
}

impl Shared {
    pub fn publish(&self, c: &Counters) {
        for (a, v) in self.values.iter().zip(c.values) {
            a.store(v, Ordering::Relaxed);
        }
        self.allocations.store(c.allocations, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counters {
        let mut c = Counters::default();
        for (v, a) in c.values.iter_mut().zip(&self.values) {
            *v = a.load(Ordering::Relaxed);
        }
        c.allocations = self.allocations.load(Ordering::Relaxed);
        c
    }
}
