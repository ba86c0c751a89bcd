//! The ids the control plane gives the data plane's routers, transports, producers and
//! consumers: one counter for the process, so no two are ever alike, whatever worker they go
//! to. Each kind is its own type (`switchyard_dataplane::spec`), so one cannot be passed for
//! another.

use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_dataplane::spec::{ConsumerId, ProducerId, RouterId, TransportId};

static NEXT: AtomicU64 = AtomicU64::new(1);

fn next() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn router() -> RouterId {
    RouterId(next())
}

pub fn transport() -> TransportId {
    TransportId(next())
}

pub fn producer() -> ProducerId {
    ProducerId(next())
}

pub fn consumer() -> ConsumerId {
    ConsumerId(next())
}
