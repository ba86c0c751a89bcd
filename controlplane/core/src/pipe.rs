//! What a pipe between two media servers carries, as both ends and the gateway between them
//! describe it: the receiving end makes a producer of each track with the same payload type,
//! clock rate and SSRC the sending end writes.

use serde::{Deserialize, Serialize};

/// A track as a pipe carries it between media servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeTrack {
    pub kind: String,
    pub codec: String,
    #[serde(default)]
    pub fmtp: Option<String>,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// The SSRC the sending end writes.
    pub ssrc: u32,
}
