//! A bounded queue of 48 kHz samples between two framings: the phone's packets (10-60 ms of
//! one codec) in, the other side's frames (Opus's 20 ms, or the phone's ptime) out.

use std::collections::VecDeque;

/// Samples in flight, at most: 200 ms. More means one side stalled; the oldest go, so the
/// delay through the call stays bounded.
const CAPACITY: usize = 48 * 200;

pub struct Fifo {
    samples: VecDeque<i16>,
    /// Samples dropped because the queue was full.
    pub dropped: u64,
}

impl Default for Fifo {
    fn default() -> Fifo {
        Fifo {
            samples: VecDeque::with_capacity(CAPACITY),
            dropped: 0,
        }
    }
}

impl Fifo {
    pub fn push(&mut self, pcm: &[i16]) {
        let over = (self.samples.len() + pcm.len()).saturating_sub(CAPACITY);
        if over > 0 {
            let gone = over.min(self.samples.len());
            self.samples.drain(..gone);
            self.dropped += over as u64;
        }
        let keep = pcm.len().min(CAPACITY);
        self.samples
            .extend(pcm.get(pcm.len() - keep..).unwrap_or_default());
    }

    /// Fills `frame` from the front if that many samples are queued.
    pub fn pop(&mut self, frame: &mut [i16]) -> bool {
        if self.samples.len() < frame.len() {
            return false;
        }
        let n = frame.len();
        for (slot, sample) in frame.iter_mut().zip(self.samples.drain(..n)) {
            *slot = sample;
        }
        true
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_across_pushes() {
        let mut f = Fifo::default();
        f.push(&[1, 2, 3]);
        let mut frame = [0i16; 4];
        assert!(!f.pop(&mut frame));
        f.push(&[4, 5]);
        assert!(f.pop(&mut frame));
        assert_eq!(frame, [1, 2, 3, 4]);
        assert!(!f.pop(&mut frame));
    }

    #[test]
    fn a_stalled_reader_loses_the_oldest() {
        let mut f = Fifo::default();
        let big: Vec<i16> = (0..CAPACITY as i32 + 10).map(|i| i as i16).collect();
        f.push(&big);
        assert_eq!(f.dropped, 10);
        let mut frame = [0i16; 1];
        assert!(f.pop(&mut frame));
        assert_eq!(frame[0], 10);
    }
}
