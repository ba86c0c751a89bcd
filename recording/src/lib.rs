//! Switchyard's recording: each connection's media written as it arrived, without
//! transcoding, into Matroska files that survive a crash: a published track's RTP becomes
//! frames (`track`), frames a Matroska file (`mkv`), written to disk by `file`; each
//! connection's JSON log (`log`). Afterwards, files are read back (`read`) and a session's
//! files composed into one (`mux`), sessions found and muxed
//! once by the `monitor`; files and sessions go to object storage (`objects`) through the
//! `mover`.
#![forbid(unsafe_code)]

pub mod activity;
mod ebml;
pub mod file;
pub mod h264;
pub mod log;
#[cfg(feature = "mover")]
pub mod mirror;
pub mod mkv;
pub mod monitor;
#[cfg(feature = "mover")]
pub mod mover;
pub mod mux;
#[cfg(feature = "mover")]
pub mod objects;
pub mod read;
pub mod track;
