//! `switchyard loadtest`: emulated WebRTC clients that really do ICE, DTLS and SRTP against a
//! media server (Switchyard through its signalling or WHIP/WHEP, or Janus through its HTTP API),
//! send media shaped like a camera and a microphone, and measure what comes back.
pub mod janus;
