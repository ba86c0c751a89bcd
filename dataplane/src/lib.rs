//! Switchyard's media data plane.
//!
//! The protocol modules (`stun`, `ice`, `dtls`, `srtp`, `rtp`, `rtcp`, `sdp`) are sans-IO: they
//! are fed bytes and time and return bytes and events, and are tested without sockets. The
//! forwarding engine (`engine`, `router`, `transport`) is also sans-IO; `worker` runs one engine
//! per pinned core under an `io` backend (io_uring or recvmmsg/sendmmsg).

pub mod client;
pub mod demux;
pub mod dtls;
pub mod engine;
pub mod ice;
pub mod io;
pub mod media;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod srtp;
pub mod stats;
pub mod stun;
pub mod transport;
pub mod wire;
pub mod worker;
