//! Switchyard's recording: each connection's media written as it arrived, without
//! transcoding, into Matroska files that survive a crash (`mkv`).
#![forbid(unsafe_code)]

mod ebml;
pub mod h264;
pub mod mkv;
