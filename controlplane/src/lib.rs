//! Switchyard's control plane: WebSocket signalling, WHIP/WHEP, client tokens, channel state
//! and metrics, on axum. It tells the data plane what to do through `MediaServer` and never
//! touches a packet.

pub mod admin;
pub mod allowlist;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session;
pub mod signalling;
pub mod state;
pub mod store;
pub mod token;
pub mod web;
pub mod whip;
