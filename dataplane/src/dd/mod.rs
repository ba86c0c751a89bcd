//! The Dependency Descriptor RTP header extension (AV1 RTP specification, appendix A): what a
//! selective forwarder needs to drop spatial and temporal layers of a scalable (SVC) video
//! stream without reading its payload, so that it works on end-to-end encrypted media.
//!
//! Each packet says which frame it belongs to (`frame_number`), where the frame begins and
//! ends, and, through a template of the [`Structure`] sent on keyframes, the frame's spatial and
//! temporal id, its relation to every decode target (a [`Dti`]), the frames it refers to and
//! the previous frame of every chain (A.5). [`Descriptor::parse`] reads one, [`Descriptor::write`]
//! writes one; [`Stream`] is the per-producer state a receiver keeps between packets (the
//! structure in force and the active decode targets, A.4). Layer selection from these is
//! [`crate::svc`].
//!
//! Nothing here allocates per packet: a descriptor is a few fixed arrays on the stack; a
//! structure is one boxed allocation when a keyframe's first packet carries one.

mod bits;
mod descriptor;
mod structure;

pub use descriptor::Descriptor;
pub use structure::{
    ChainDiffs, Fdiffs, MAX_CHAINS, MAX_DECODE_TARGETS, MAX_FDIFFS, MAX_SPATIAL_LAYERS,
    MAX_TEMPLATES, Resolution, Structure, Template,
};

/// The extension's URI in `a=extmap` (A.9).
pub const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("dependency descriptor is truncated")]
    Truncated,
    #[error("dependency descriptor needs a template dependency structure and none has arrived")]
    NoStructure,
    #[error("dependency descriptor names a template the structure does not have")]
    UnknownTemplate,
    #[error("template dependency structure has more than 64 templates")]
    TooManyTemplates,
    #[error("more frame differences than this implementation keeps")]
    TooManyFdiffs,
    #[error("value cannot be written as a dependency descriptor")]
    Invalid,
    #[error("the buffer is too small for the dependency descriptor")]
    BufferTooSmall,
}

/// A decode target indication (A.8.3 Table A.1): how a frame relates to one decode target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dti {
    /// '-': the frame is not part of the decode target.
    NotPresent = 0,
    /// 'D': part of it, and no later frame of it refers to this one.
    Discardable = 1,
    /// 'S': part of it, and if this frame is decodable every later frame of the decode target
    /// is: a receiver can start (switch to) the decode target here.
    Switch = 2,
    /// 'R': part of it, and neither discardable nor a switch point.
    Required = 3,
}

impl Dti {
    fn from_bits(v: u8) -> Dti {
        match v & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }

    /// From the symbol the specification's tables use ('-', 'D', 'S', 'R').
    pub fn from_symbol(c: char) -> Option<Dti> {
        match c {
            '-' => Some(Dti::NotPresent),
            'D' => Some(Dti::Discardable),
            'S' => Some(Dti::Switch),
            'R' => Some(Dti::Required),
            _ => None,
        }
    }
}

/// The DTIs of a frame or template, two bits per decode target (decode target i in bits
/// 2i..2i+2), so up to 32 fit in a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dtis(pub u64);

impl Dtis {
    /// The indication for decode target `target` (`NotPresent` beyond the last).
    pub fn get(&self, target: usize) -> Dti {
        Dti::from_bits(self.0.checked_shr(2 * target as u32).unwrap_or(0) as u8)
    }

    pub fn set(&mut self, target: usize, dti: Dti) {
        let shift = 2 * target as u32;
        if shift < 64 {
            self.0 = (self.0 & !(3u64 << shift)) | ((dti as u64) << shift);
        }
    }

    /// From the specification's notation, decode target 0 first: "SSD-" (None on any other
    /// character or more than 32).
    pub fn from_symbols(symbols: &str) -> Option<Dtis> {
        let mut d = Dtis(0);
        for (i, c) in symbols.chars().enumerate() {
            if i >= MAX_DECODE_TARGETS {
                return None;
            }
            d.set(i, Dti::from_symbol(c)?);
        }
        Some(d)
    }
}

/// What a receiver keeps between one producer's packets (one per SSRC that carries the
/// extension): the structure in force and the active decode targets. Updates obey RTP
/// sequence order (A.4: "valid until the next update in RTP packet sequence number order"), so
/// a late packet cannot bring back an old structure or bitmask.
#[derive(Debug, Default)]
pub struct Stream {
    structure: Option<Box<Structure>>,
    /// Bumped each time a different structure arrives; decode target indices of one
    /// generation mean nothing in another.
    generation: u32,
    active: u32,
    /// The newest sequence number seen and the one whose update is in force, extended past
    /// 16 bits so that order survives wrapping.
    highest: Option<u64>,
    updated: Option<u64>,
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    /// Reads the descriptor `ext` of the packet with RTP sequence number `seq`, keeping any
    /// structure or active decode targets it brings. On error the packet cannot be forwarded
    /// by layer: [`Error::NoStructure`] and [`Error::UnknownTemplate`] mean the structure's
    /// packet was lost (ask for a keyframe), the rest that the extension is malformed.
    pub fn receive(&mut self, seq: u16, ext: &[u8]) -> Result<Descriptor, Error> {
        let ext_seq = extend(self.highest, seq);
        if self.highest.is_none_or(|h| ext_seq > h) {
            self.highest = Some(ext_seq);
        }
        let (desc, attached) = Descriptor::parse(ext, self.structure.as_deref())?;
        let in_order = self.updated.is_none_or(|u| ext_seq >= u);
        if let Some(new) = attached
            && in_order
        {
            if self.structure.as_deref() != Some(&new) {
                self.structure = Some(new);
                self.generation = self.generation.wrapping_add(1);
            }
            self.active = self.structure.as_deref().map_or(0, Structure::all_targets);
            self.updated = Some(ext_seq);
        }
        if let Some(mask) = desc.active_decode_targets
            && in_order
            && self.structure.is_some()
        {
            self.active = mask;
            self.updated = Some(ext_seq);
        }
        Ok(desc)
    }

    /// The structure in force.
    pub fn structure(&self) -> Option<&Structure> {
        self.structure.as_deref()
    }

    /// Changes whenever a different structure comes into force.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The decode targets the sender produces now (bit i: decode target i).
    pub fn active_decode_targets(&self) -> u32 {
        self.active
    }
}

/// `seq` extended to 64 bits next to `highest` (the nearest value with those low 16 bits).
/// The first one starts high enough that earlier packets stay positive.
pub(crate) fn extend(highest: Option<u64>, seq: u16) -> u64 {
    match highest {
        None => (1u64 << 32) + u64::from(seq),
        Some(h) => {
            let delta = seq.wrapping_sub(h as u16) as i16;
            h.wrapping_add_signed(i64::from(delta))
        }
    }
}

// ok: the unwrap()/expect() calls of dd/examples.rs are test-only, on values the tests built
#[cfg(test)]
pub(crate) mod examples;
// ok: the unwrap()/expect() calls of dd/tests.rs are test-only, on values the tests built
#[cfg(test)]
mod tests;
