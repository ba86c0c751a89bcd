//! The ids the control plane gives the data plane's routers, transports and producers: one
//! counter for the process, so no two are ever alike, whatever worker they go to. Each kind
//! has its own function so that when the data plane's ids become distinct types only these
//! bodies change, not their callers.

use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_dataplane::worker::{ProducerId, RouterId, TransportId};

static NEXT: AtomicU64 = AtomicU64::new(1);

fn next() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn router() -> RouterId {
    next()
}

pub fn transport() -> TransportId {
    next()
}

pub fn producer() -> ProducerId {
    next()
}
