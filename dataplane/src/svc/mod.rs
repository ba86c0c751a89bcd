//! Per-consumer layer selection for scalable (SVC) video, from the dependency descriptor alone
//! ([`crate::dd`]), so it works when the payload is end-to-end encrypted.
//!
//! A consumer wants at most some spatial and temporal layer ([`Layers`]). Its [`Selector`]
//! picks the producer's decode target that best fits (AV1 RTP specification A.1: "an SFM
//! would select one Decode target for each endpoint, and forward all frames associated with
//! that target") and decides per frame, on the frame's first packet to arrive, whether the
//! consumer gets it; every later packet of the frame gets the same answer.
//!
//! - A frame is forwarded when its DTI for the decode target is not "not present" and no
//!   frame it refers to was dropped for this consumer (A.1's instantaneous decodability: a
//!   frame whose reference the consumer never got is of no use to it).
//! - The selector moves to another decode target (up or down) only where the consumer can
//!   decode it (A.7): where the chain that protects the new target is intact for this consumer
//!   (every frame of the chain so far was forwarded to it, A.5), or at a frame with a Switch
//!   indication for it whose references the consumer all has. A keyframe is both. Until then
//!   it stays on the old target; [`Selector::keyframe_wanted`] says when only a keyframe is
//!   likely to help.
//!
//! Dropping packets makes gaps in the consumer's sequence numbers, which [`SeqRewriter`]
//! closes.

mod seq;

pub use seq::{SeqRewriter, WINDOW};

use crate::dd::{Descriptor, Dti, MAX_DECODE_TARGETS, Stream, Structure};

/// The highest layers a consumer wants (its screen size and bandwidth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    pub spatial: u8,
    pub temporal: u8,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward,
    Drop(DropReason),
}

/// Why a packet is dropped, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its frame is not part of the consumer's decode target: ordinary layer dropping.
    NotInTarget,
    /// Its frame refers to a frame the consumer did not get, so it could not be decoded.
    Undecodable,
    /// The consumer has no decode target yet (it waits for a keyframe or switch point).
    NoTarget,
    /// The producer's structure is not known yet.
    NoStructure,
}

/// Frames remembered per consumer: frame references of templates reach back 16 frames and
/// chain references 255 (custom chains have 8 bits), so 256 covers every chain.
const FRAMES: usize = 256;

/// What the selector decided for one frame.
#[derive(Debug, Clone, Copy)]
struct Frame {
    number: u16,
    decision: Option<Decision>,
    /// Bit c: chain c was intact, for this consumer, up to this frame.
    chains: u32,
}

const NO_FRAME: Frame = Frame {
    number: 0,
    decision: None,
    chains: 0,
};

/// One consumer's layer selection over one producer's [`Stream`].
#[derive(Debug, Clone)]
pub struct Selector {
    wanted: Layers,
    /// The structure generation `current` and `target` refer to.
    generation: Option<u32>,
    /// The decode target forwarded now.
    current: Option<usize>,
    /// The decode target that fits `wanted`, when the selector is waiting to move to it.
    pending: Option<usize>,
    keyframe_wanted: bool,
    /// The newest frame decided.
    newest: Option<u16>,
    frames: [Frame; FRAMES],
}

impl Selector {
    pub fn new(wanted: Layers) -> Selector {
        Selector {
            wanted,
            generation: None,
            current: None,
            pending: None,
            keyframe_wanted: false,
            newest: None,
            frames: [NO_FRAME; FRAMES],
        }
    }

    /// Changes the wanted layers; the move happens at the next frame where it can.
    pub fn set_wanted(&mut self, wanted: Layers) {
        self.wanted = wanted;
    }

    pub fn wanted(&self) -> Layers {
        self.wanted
    }

    /// The decode target forwarded now (an index into the producer's structure).
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The decode target the selector waits to move to, if any.
    pub fn pending(&self) -> Option<usize> {
        self.pending
    }

    /// True while the consumer has nothing to decode, or waits to change spatial layer: cases
    /// where, in the structures encoders use, only a keyframe (or a layer refresh) lets it
    /// move. Waits for a temporal layer end by themselves at the next base-layer frame. The
    /// caller asks the producer for a keyframe (PLI/FIR), rate-limited.
    pub fn keyframe_wanted(&self) -> bool {
        self.keyframe_wanted
    }

    /// The active decode targets to tell the consumer, when the forwarder rewrites the
    /// descriptor (A.4): only the one it gets, so that its receiver ignores the chains of
    /// targets it will never see (A.5: "Chains protecting no active Decode targets MUST be
    /// ignored"). `None` before the first target.
    pub fn active_decode_targets(&self) -> Option<u32> {
        self.current
            .filter(|&t| t < MAX_DECODE_TARGETS)
            .map(|t| 1 << t)
    }

    /// Whether the consumer's copy of this packet ends a temporal unit, and so should carry
    /// the RTP marker bit (AV1 RTP specification §4.2: set on the last packet of a temporal
    /// unit). The producer sets it after its highest spatial layer, which a consumer of a
    /// lower one never gets: here it ends with the last packet of the consumer's own highest
    /// spatial layer. Call it for forwarded packets; `marker` is the producer's bit.
    pub fn marker(&self, stream: &Stream, d: &Descriptor, marker: bool) -> bool {
        let top = self
            .current
            .zip(stream.structure())
            .and_then(|(t, s)| s.target_layers(t))
            .map(|l| l.0);
        marker || (d.end_of_frame && top.is_some_and(|top| d.spatial_id >= top))
    }

    /// Decides for the packet whose descriptor is `d`, read by `stream` (the producer's).
    pub fn decide(&mut self, stream: &Stream, d: &Descriptor) -> Decision {
        let Some(structure) = stream.structure() else {
            return Decision::Drop(DropReason::NoStructure);
        };
        if self.generation != Some(stream.generation()) {
            // Decode target indices of another structure mean nothing here.
            self.generation = Some(stream.generation());
            self.current = None;
        }
        let number = d.frame_number;
        if let Some(decision) = self.frame(number).and_then(|f| f.decision) {
            return decision;
        }

        // Which chains reach this frame unbroken for this consumer (A.5, A.6).
        let mut chains = 0u32;
        for (c, &diff) in d.chain_diffs.as_slice().iter().enumerate() {
            let intact = diff == 0
                || self
                    .frame(number.wrapping_sub(u16::from(diff)))
                    .is_some_and(|f| {
                        f.decision == Some(Decision::Forward) && f.chains & (1 << c) != 0
                    });
            if intact {
                chains |= 1 << c;
            }
        }
        // Whether the consumer has every frame this one refers to, or lacks one for certain.
        let (mut has_all, mut lacks_one) = (true, false);
        for &diff in d.fdiffs.as_slice() {
            match self
                .frame(number.wrapping_sub(diff))
                .and_then(|f| f.decision)
            {
                Some(Decision::Forward) => {}
                Some(Decision::Drop(_)) => (has_all, lacks_one) = (false, true),
                // Never seen (lost on the way in, or long ago): it may still come.
                None => has_all = false,
            }
        }

        let newer = self
            .newest
            .is_none_or(|n| number.wrapping_sub(n) as i16 > 0);
        if newer {
            self.newest = Some(number);
            self.choose(
                structure,
                stream.active_decode_targets(),
                d,
                chains,
                has_all,
            );
        }

        let decision = match self.current {
            None => Decision::Drop(DropReason::NoTarget),
            Some(t) if d.dtis.get(t) == Dti::NotPresent => Decision::Drop(DropReason::NotInTarget),
            Some(_) if lacks_one => Decision::Drop(DropReason::Undecodable),
            Some(_) => Decision::Forward,
        };
        // A late frame does not overwrite a newer one's record.
        let slot = usize::from(number) % FRAMES;
        if let Some(f) = self.frames.get_mut(slot)
            && (newer || f.decision.is_none() || number.wrapping_sub(f.number) as i16 > 0)
        {
            *f = Frame {
                number,
                decision: Some(decision),
                chains,
            };
        }
        decision
    }

    /// At the first packet of a new frame: moves to the decode target that fits the wanted
    /// layers if this frame allows it (A.7).
    fn choose(
        &mut self,
        structure: &Structure,
        active: u32,
        d: &Descriptor,
        chains: u32,
        has_all: bool,
    ) {
        let Some(target) = fitting_target(structure, active, self.wanted) else {
            return;
        };
        if self.current == Some(target) {
            self.pending = None;
            self.keyframe_wanted = false;
            return;
        }
        let chain_intact = structure
            .protected_by(target)
            .is_some_and(|c| chains & 1u32.checked_shl(c as u32).unwrap_or(0) != 0);
        let switch_point = d.dtis.get(target) == Dti::Switch && has_all;
        if chain_intact || switch_point {
            self.current = Some(target);
            self.pending = None;
            self.keyframe_wanted = false;
            return;
        }
        self.pending = Some(target);
        let spatial = |t: usize| structure.target_layers(t).map(|l| l.0);
        self.keyframe_wanted = match self.current {
            None => true,
            Some(c) => spatial(c) != spatial(target),
        };
    }

    fn frame(&self, number: u16) -> Option<&Frame> {
        self.frames
            .get(usize::from(number) % FRAMES)
            .filter(|f| f.number == number && f.decision.is_some())
    }
}

/// The active decode target with the highest (spatial, temporal) layers within `wanted`, or,
/// when none is within it, the lowest active one.
pub fn fitting_target(structure: &Structure, active: u32, wanted: Layers) -> Option<usize> {
    let mut best: Option<(usize, (u8, u8))> = None;
    let mut lowest: Option<(usize, (u8, u8))> = None;
    for t in 0..structure.decode_targets().min(MAX_DECODE_TARGETS) {
        if active & (1 << t) == 0 {
            continue;
        }
        let Some(layers) = structure.target_layers(t) else {
            continue;
        };
        if layers.0 <= wanted.spatial
            && layers.1 <= wanted.temporal
            && best.is_none_or(|(_, b)| layers > b)
        {
            best = Some((t, layers));
        }
        if lowest.is_none_or(|(_, l)| layers < l) {
            lowest = Some((t, layers));
        }
    }
    best.or(lowest).map(|(t, _)| t)
}

// ok: the unwrap()/expect() calls of svc/tests.rs are test-only, on values the tests built
#[cfg(test)]
mod tests;
