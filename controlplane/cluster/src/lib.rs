//! The cluster roles: `switchyard media-server` (media workers behind an internal control API)
//! and `switchyard gateway` (signalling that places media on media servers and shares presence
//! with the other gateways through Redis), with what they share: the media server registry,
//! presence, the cluster API's messages, and the gateway's admin API. See
//! docs/architecture.md, "Cluster".

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod capacity;
pub mod gateway;
pub mod listen;
pub mod node;
pub mod presence;
pub mod registry;
pub mod signing;
pub mod sip_connectors;
pub mod stun_probe;
#[cfg(test)]
mod testing;
