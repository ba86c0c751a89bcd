//! Switchyard's recording: each connection's media written as it arrived, without
//! transcoding, into Matroska files that survive a crash: a published track's RTP becomes
//! frames (`track`), frames a Matroska file (`mkv`), written to disk by `file`; each
//! connection's JSON log (`log`).
#![forbid(unsafe_code)]

mod ebml;
pub mod file;
pub mod h264;
pub mod log;
pub mod mkv;
pub mod track;
