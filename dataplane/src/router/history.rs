//! Recent packets of a video producer, kept to answer NACKs.

/// Packets a video producer keeps for NACKs: ~1.5 s of 720p at 1.5 Mbps.
const HISTORY_PACKETS: usize = 256;
/// The largest packet kept; larger ones are forwarded but not kept.
const HISTORY_SLOT: usize = 1500;

/// Recent decrypted packets of a video producer, indexed by sequence number, in one
/// preallocated block (no allocation per packet).
pub struct History {
    seqs: Box<[Option<u16>]>,
    lens: Box<[u16]>,
    data: Box<[u8]>,
}

impl History {
    pub fn new() -> History {
        History {
            seqs: vec![None; HISTORY_PACKETS].into_boxed_slice(),
            lens: vec![0; HISTORY_PACKETS].into_boxed_slice(),
            data: vec![0; HISTORY_PACKETS * HISTORY_SLOT].into_boxed_slice(),
        }
    }

    fn slot(seq: u16) -> usize {
        usize::from(seq) % HISTORY_PACKETS
    }

    pub fn insert(&mut self, seq: u16, packet: &[u8]) {
        let i = Self::slot(seq);
        let (Some(s), Some(l), Some(d)) = (
            self.seqs.get_mut(i),
            self.lens.get_mut(i),
            self.data.get_mut(i * HISTORY_SLOT..(i + 1) * HISTORY_SLOT),
        ) else {
            return;
        };
        match d.get_mut(..packet.len()) {
            Some(dst) => {
                dst.copy_from_slice(packet);
                *s = Some(seq);
                *l = packet.len() as u16;
            }
            None => *s = None,
        }
    }

    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let i = Self::slot(seq);
        if *self.seqs.get(i)? != Some(seq) {
            return None;
        }
        let len = usize::from(*self.lens.get(i)?);
        self.data.get(i * HISTORY_SLOT..i * HISTORY_SLOT + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_recent_packets_by_sequence() {
        let mut h = History::new();
        h.insert(10, &[1, 2, 3]);
        h.insert(65535, &[9]);
        assert_eq!(h.get(10), Some(&[1, 2, 3][..]));
        assert_eq!(h.get(65535), Some(&[9][..]));
        assert_eq!(h.get(11), None);
        // A newer packet in the same slot replaces the old one.
        h.insert(10 + HISTORY_PACKETS as u16, &[4]);
        assert_eq!(h.get(10), None);
        // Oversized packets are not kept.
        h.insert(5, &[0; HISTORY_SLOT + 1]);
        assert_eq!(h.get(5), None);
    }
}
