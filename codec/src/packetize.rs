//! Splitting frames into RTP payloads, shared by every payload format.
//!
//! A [`Packetizer`] writes a frame's payloads into a [`Payloads`], which the caller keeps and
//! reuses: it holds one byte buffer and one list of ends, cleared (not freed) for each frame, so
//! an encoder's output is packetized without allocating once the buffers have grown to the
//! largest frame. The RTP header (sequence number, timestamp, SSRC) is the caller's; for video
//! the marker bit goes on the last payload of a frame.

/// Why a frame could not be packetized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    #[error("empty frame")]
    EmptyFrame,
    #[error("MTU {0} too small for the payload format's headers")]
    MtuTooSmall(usize),
    #[error("H264 frame is not in Annex B form (no start code before the first NAL unit)")]
    NotAnnexB,
}

/// The payloads of one frame, in sending order.
#[derive(Debug, Clone, Default)]
pub struct Payloads {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Payloads {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The payloads in order; the last one carries the marker bit (video).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.buf[start..end]
        })
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// Appends bytes to the payload being written.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Ends the payload being written.
    pub(crate) fn finish(&mut self) {
        self.ends.push(self.buf.len());
    }
}

/// Splits frames of one payload format into payloads no longer than an MTU.
pub trait Packetizer {
    /// Replaces `out`'s contents with `frame`'s payloads, each at most `mtu` bytes (the RTP
    /// payload, not the datagram). On error `out` is left empty.
    fn packetize(
        &mut self,
        frame: &[u8],
        mtu: usize,
        out: &mut Payloads,
    ) -> Result<(), PacketizeError>;
}
