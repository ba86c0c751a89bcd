//! Switchyard's media data plane.
//!
//! The protocol modules (`stun`, `ice`, `dtls`, `srtp`, `rtp`, `rtcp`, `sdp`) are sans-IO: they
//! are fed bytes and time and return bytes and events, and are tested without sockets. The
//! forwarding engine (`engine`, `router`, `transport`, `timers`, with the vocabulary the control
//! plane speaks in `spec`) is also sans-IO; `worker` runs one engine per pinned core under an
//! `io` backend (io_uring or recvmmsg/sendmmsg), and is the only place threads and channels
//! meet the engine.

pub mod bwe;
pub mod client;
pub mod data_routes;
pub mod datachannel;
pub mod dd;
pub mod demux;
pub mod dtls;
pub mod engine;
pub mod handoff;
pub mod ice;
pub mod io;
pub mod lane;
pub mod mcu;
pub mod media;
pub mod pacer;
pub mod red;
pub mod remote;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod sim;
pub mod speaker;
pub mod spec;
pub mod srtp;
pub mod stats;
pub mod stun;
pub mod svc;
pub mod timers;
pub mod transport;
pub mod turn;
pub mod twcc;
pub mod wire;
pub mod worker;
