//! Cutting a byte stream (TCP or TLS) into messages.
//!
//! TURN over a stream carries STUN messages and ChannelData back to back, each framed by its
//! own length field (ChannelData padded to four bytes, RFC 8656 section 12.5); ICE-TCP carries
//! datagrams behind a two-byte length (RFC 4571). Both framers take whatever the socket gave
//! and hand out whole messages, keeping a partial one until the rest arrives.

use std::ops::Range;

use crate::wire::be_u16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream carries something else: close the connection.
    #[error("stream is not TURN (first bits of a message are neither STUN nor ChannelData)")]
    NotTurn,
    #[error("STUN message length is not a multiple of four")]
    BadLength,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Turn,
    Rfc4571,
}

/// Accumulates stream bytes and yields whole frames.
#[derive(Debug)]
pub struct Framer {
    kind: Kind,
    buf: Vec<u8>,
}

impl Framer {
    /// STUN and ChannelData (TURN over TCP or TLS).
    pub fn turn() -> Framer {
        Framer {
            kind: Kind::Turn,
            buf: Vec::new(),
        }
    }

    /// RFC 4571: a two-byte length, then the datagram.
    pub fn rfc4571() -> Framer {
        Framer {
            kind: Kind::Rfc4571,
            buf: Vec::new(),
        }
    }

    /// Bytes waiting for the rest of their message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The length of the frame at the start of `data`, counting header and padding, and the
    /// range within it handed on; `None` while its header is incomplete.
    fn frame_len(&self, data: &[u8]) -> Result<Option<(usize, Range<usize>)>, FrameError> {
        Ok(Some(match self.kind {
            Kind::Rfc4571 => {
                let Some(len) = be_u16(data, 0) else {
                    return Ok(None);
                };
                let len = usize::from(len);
                (2 + len, 2..2 + len)
            }
            Kind::Turn => {
                let (Some(first), Some(len)) = (data.first(), be_u16(data, 2)) else {
                    return Ok(None);
                };
                let len = usize::from(len);
                match first >> 6 {
                    0 if len % 4 == 0 => (20 + len, 0..20 + len),
                    0 => return Err(FrameError::BadLength),
                    1 => ((4 + len + 3) & !3, 0..4 + len),
                    _ => return Err(FrameError::NotTurn),
                }
            }
        }))
    }

    /// Feeds received bytes; calls `on_frame` with each whole message (the datagram for
    /// RFC 4571, the message without stream padding for TURN), which it may rewrite in place.
    /// An error means the stream cannot be framed any further: close the connection.
    ///
    /// What stays buffered is at most one partial message (under 64 KiB plus padding).
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&mut [u8]),
    ) -> Result<(), FrameError> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        let result = loop {
            match self.frame_len(&self.buf[at..]) {
                Ok(Some((total, range))) if self.buf.len() - at >= total => {
                    on_frame(&mut self.buf[at + range.start..at + range.end]);
                    at += total;
                }
                Ok(_) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..at);
        result
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |m| out.push(m.to_vec()))?;
        }
        Ok(out)
    }

    #[test]
    fn rfc4571_in_any_split() {
        let stream: Vec<u8> = [&[0u8, 3, 1, 2, 3][..], &[0, 0], &[0, 1, 9]].concat();
        for split in 0..=stream.len() {
            let mut f = Framer::rfc4571();
            let got = frames(&mut f, &[&stream[..split], &stream[split..]]).unwrap();
            assert_eq!(
                got,
                vec![vec![1, 2, 3], vec![], vec![9]],
                "split at {split}"
            );
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn turn_stun_and_padded_channel_data() {
        let mut stun = vec![0u8, 1, 0, 4, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0, 0x80, 0, 0]);
        // ChannelData of 5 bytes, padded to 8 on the stream.
        let cd = [0x40u8, 0x00, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0];
        let stream = [&stun[..], &cd[..], &stun[..]].concat();
        for split in 0..=stream.len() {
            let mut f = Framer::turn();
            let got = frames(&mut f, &[&stream[..split], &stream[split..]]).unwrap();
            assert_eq!(got, vec![stun.clone(), cd[..9].to_vec(), stun.clone()]);
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut f = Framer::turn();
        assert_eq!(f.feed(&[0xC0, 0, 0, 0], |_| {}), Err(FrameError::NotTurn));
        let mut f = Framer::turn();
        assert_eq!(f.feed(&[0, 1, 0, 3], |_| {}), Err(FrameError::BadLength));
        // Frames before the bad one are still delivered.
        let mut f = Framer::turn();
        let mut n = 0;
        let r = f.feed(&[0x40, 0, 0, 0, 0xFF, 0, 0, 0], |_| n += 1);
        assert_eq!((r, n), (Err(FrameError::NotTurn), 1));
    }
}
