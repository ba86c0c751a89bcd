//! Switchyard's control plane: WebSocket signalling, WHIP/WHEP, client tokens, channel state
//! and metrics, on axum. It tells the data plane what to do through `MediaServer` and never
//! touches a packet. The cluster roles built on it are in `switchyard-cluster`, the
//! configuration store under it in `switchyard-store`.

#![forbid(unsafe_code)]

pub mod allowlist;
pub mod canvas;
pub mod channel_messages;
pub mod channels;
pub mod checks;
pub mod config;
pub mod data_channels;
pub mod dev;
pub mod dial;
pub mod error;
pub mod follow;
pub mod ice_servers;
mod ids;
mod layers;
pub mod listeners;
pub mod metrics;
pub mod mix;
pub mod p2p;
pub mod phones;
pub mod pipe;
pub mod protocol;
pub mod recording;
pub mod resume;
mod rooms;
pub mod rules;
pub mod server;
pub mod session;
pub mod shards;
pub mod signalling;
mod speaking;
pub mod sync_limits;
pub mod token;
pub mod web;
pub mod webhooks;
pub mod whip;
