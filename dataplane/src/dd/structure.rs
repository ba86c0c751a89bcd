//! The template dependency structure (AV1 RTP specification A.8.2 `template_dependency_structure`,
//! semantics in A.8.3): the decode targets, the frame dependency templates, the chains and the
//! render resolutions of a coded video sequence.
//!
//! The sender attaches it to the first packet of each coded video sequence (a keyframe); every
//! other descriptor names one of its templates and is meaningless without it, so the receiver
//! keeps the latest one ([`super::Stream`]). Everything is in fixed-size arrays sized by the
//! syntax's own limits (6-bit template ids, 5-bit decode target count), so a structure is one
//! allocation when it arrives and none after.

use super::bits::{Reader, Writer};
use super::{Dti, Dtis, Error};

/// Templates a structure can hold: `frame_dependency_template_id` has 6 bits.
pub const MAX_TEMPLATES: usize = 64;
/// Decode targets: `dt_cnt_minus_one` has 5 bits.
pub const MAX_DECODE_TARGETS: usize = 32;
/// Chains: at most one per decode target (`chain_cnt` is `ns(DtCnt + 1)`).
pub const MAX_CHAINS: usize = MAX_DECODE_TARGETS;
/// Frame differences kept per template or frame. The syntax does not bound them; an AV1 frame
/// refers to at most 7 reference frames (AV1 `REFS_PER_FRAME`) plus, with spatial layers, the
/// frame below it, so 16 is generous. More is [`Error::TooManyFdiffs`].
pub const MAX_FDIFFS: usize = 16;
/// Spatial layers: each `next_layer_idc` of 2 adds one, and there are at most 64 templates.
pub const MAX_SPATIAL_LAYERS: usize = MAX_TEMPLATES;

/// The frame differences of a template or a frame: how far back, in `frame_number`s, each
/// frame it refers to is (A.8.3 `fdiff_minus_one` + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fdiffs {
    len: u8,
    values: [u16; MAX_FDIFFS],
}

impl Fdiffs {
    pub const EMPTY: Fdiffs = Fdiffs {
        len: 0,
        values: [0; MAX_FDIFFS],
    };

    /// From a list: values must be 1..=4096 (12 bits of `fdiff_minus_one`), at most
    /// [`MAX_FDIFFS`] of them.
    pub fn new(values: &[u16]) -> Result<Fdiffs, Error> {
        let mut f = Fdiffs::EMPTY;
        for &v in values {
            if !(1..=4096).contains(&v) {
                return Err(Error::Invalid);
            }
            f.push(v)?;
        }
        Ok(f)
    }

    pub(super) fn push(&mut self, v: u16) -> Result<(), Error> {
        let slot = self
            .values
            .get_mut(usize::from(self.len))
            .ok_or(Error::TooManyFdiffs)?;
        *slot = v;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[u16] {
        self.values.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// For each chain, how far back the previous frame in that chain is (A.8.3
/// `frame_chain_fdiff`); 0 when no earlier frame is needed (the chain starts here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainDiffs {
    len: u8,
    values: [u8; MAX_CHAINS],
}

impl ChainDiffs {
    pub const EMPTY: ChainDiffs = ChainDiffs {
        len: 0,
        values: [0; MAX_CHAINS],
    };

    /// From a list, one value per chain, at most [`MAX_CHAINS`].
    pub fn new(values: &[u8]) -> Result<ChainDiffs, Error> {
        let mut c = ChainDiffs::EMPTY;
        let dst = c.values.get_mut(..values.len()).ok_or(Error::Invalid)?;
        dst.copy_from_slice(values);
        c.len = values.len() as u8;
        Ok(c)
    }

    pub fn as_slice(&self) -> &[u8] {
        self.values.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The difference for `chain`, if there is such a chain.
    pub fn get(&self, chain: usize) -> Option<u8> {
        self.as_slice().get(chain).copied()
    }
}

/// One frame dependency template (A.8.1): what many frames of a layer have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub spatial_id: u8,
    pub temporal_id: u8,
    pub dtis: Dtis,
    pub fdiffs: Fdiffs,
    /// In a template each is 0..=15 (4 bits).
    pub chain_diffs: ChainDiffs,
}

impl Template {
    const EMPTY: Template = Template {
        spatial_id: 0,
        temporal_id: 0,
        dtis: Dtis(0),
        fdiffs: Fdiffs::EMPTY,
        chain_diffs: ChainDiffs::EMPTY,
    };
}

/// A render resolution (A.8.3 `max_render_width_minus_1` + 1, and the height).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

/// A template dependency structure. Built by [`Structure::new`] or read from a descriptor;
/// either way it has been checked: 1..=32 decode targets, 1..=64 templates whose layers step
/// as `next_layer_idc` can say, every chain index in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    template_id_offset: u8,
    decode_targets: u8,
    chains: u8,
    template_count: u8,
    templates: [Template; MAX_TEMPLATES],
    /// `decode_target_protected_by`, meaningful when `chains > 0`.
    protected_by: [u8; MAX_DECODE_TARGETS],
    /// Derived (`decode_target_layers()`): the highest spatial and temporal id of each decode
    /// target's frames.
    target_layers: [(u8, u8); MAX_DECODE_TARGETS],
    /// One per spatial layer `0..=max spatial id` when present.
    resolutions: Option<[Resolution; MAX_SPATIAL_LAYERS]>,
}

impl Structure {
    /// Builds a structure to send (or to test with). `protected_by` has one chain index per
    /// decode target, or is empty when `chains` is 0. Templates must be ordered by spatial then
    /// temporal id, stepping by at most one layer at a time (A.8.3 Table A.2), start at layer
    /// (0, 0), and carry one DTI per decode target and one chain diff (0..=15) per chain.
    /// `resolutions`, when not empty, has one entry per spatial layer.
    pub fn new(
        template_id_offset: u8,
        decode_targets: usize,
        chains: usize,
        protected_by: &[u8],
        templates: &[Template],
        resolutions: &[Resolution],
    ) -> Result<Structure, Error> {
        let mut s = Structure::empty();
        if template_id_offset >= 64
            || !(1..=MAX_DECODE_TARGETS).contains(&decode_targets)
            || chains > decode_targets
            || templates.is_empty()
            || templates.len() > MAX_TEMPLATES
        {
            return Err(Error::Invalid);
        }
        s.template_id_offset = template_id_offset;
        s.decode_targets = decode_targets as u8;
        s.chains = chains as u8;
        s.template_count = templates.len() as u8;
        if chains > 0 {
            if protected_by.len() != decode_targets {
                return Err(Error::Invalid);
            }
            for (dst, &c) in s.protected_by.iter_mut().zip(protected_by) {
                if usize::from(c) >= chains {
                    return Err(Error::Invalid);
                }
                *dst = c;
            }
        } else if !protected_by.is_empty() {
            return Err(Error::Invalid);
        }
        let mut prev: Option<(u8, u8)> = None;
        for (dst, t) in s.templates.iter_mut().zip(templates) {
            let layer = (t.spatial_id, t.temporal_id);
            let ok = match prev {
                None => layer == (0, 0),
                Some(p) => next_layer_idc(p, layer).is_some(),
            };
            // No DTI beyond the last decode target.
            let dtis_ok = t.dtis.0.checked_shr(2 * decode_targets as u32).unwrap_or(0) == 0;
            let chains_ok = t.chain_diffs.as_slice().len() == chains
                && t.chain_diffs.as_slice().iter().all(|&d| d <= 15);
            let fdiffs_ok = t.fdiffs.as_slice().iter().all(|&d| (1..=16).contains(&d));
            if !(ok && dtis_ok && chains_ok && fdiffs_ok) {
                return Err(Error::Invalid);
            }
            *dst = *t;
            prev = Some(layer);
        }
        if !resolutions.is_empty() {
            if resolutions.len() != usize::from(s.max_spatial_id()) + 1 {
                return Err(Error::Invalid);
            }
            let mut all = [Resolution::default(); MAX_SPATIAL_LAYERS];
            for (dst, r) in all.iter_mut().zip(resolutions) {
                if !(1..=65536).contains(&r.width) || !(1..=65536).contains(&r.height) {
                    return Err(Error::Invalid);
                }
                *dst = *r;
            }
            s.resolutions = Some(all);
        }
        s.derive_target_layers();
        Ok(s)
    }

    fn empty() -> Structure {
        Structure {
            template_id_offset: 0,
            decode_targets: 0,
            chains: 0,
            template_count: 0,
            templates: [Template::EMPTY; MAX_TEMPLATES],
            protected_by: [0; MAX_DECODE_TARGETS],
            target_layers: [(0, 0); MAX_DECODE_TARGETS],
            resolutions: None,
        }
    }

    /// `template_id_offset`: the template id of the first template.
    pub fn template_id_offset(&self) -> u8 {
        self.template_id_offset
    }

    /// `DtCnt`: the number of decode targets.
    pub fn decode_targets(&self) -> usize {
        usize::from(self.decode_targets)
    }

    /// `chain_cnt`: the number of chains (0 when the stream uses none).
    pub fn chains(&self) -> usize {
        usize::from(self.chains)
    }

    pub fn templates(&self) -> &[Template] {
        self.templates
            .get(..usize::from(self.template_count))
            .unwrap_or(&[])
    }

    /// The template a descriptor's `frame_dependency_template_id` names (A.8.2
    /// `frame_dependency_definition`), if it is one of this structure's.
    pub fn template(&self, template_id: u8) -> Option<&Template> {
        let index = (usize::from(template_id) + 64 - usize::from(self.template_id_offset)) % 64;
        self.templates().get(index)
    }

    /// The chain that protects `target` (`decode_target_protected_by`), when there are chains.
    pub fn protected_by(&self, target: usize) -> Option<usize> {
        if self.chains == 0 || target >= self.decode_targets() {
            return None;
        }
        self.protected_by.get(target).map(|&c| usize::from(c))
    }

    /// The highest (spatial, temporal) id among the frames of decode target `target`
    /// (A.8.2 `decode_target_layers`).
    pub fn target_layers(&self, target: usize) -> Option<(u8, u8)> {
        if target >= self.decode_targets() {
            return None;
        }
        self.target_layers.get(target).copied()
    }

    /// The highest spatial id of any template (`MaxSpatialId`).
    pub fn max_spatial_id(&self) -> u8 {
        self.templates()
            .iter()
            .map(|t| t.spatial_id)
            .max()
            .unwrap_or(0)
    }

    /// The render resolution of spatial layer `spatial_id`, when the structure has them.
    pub fn resolution(&self, spatial_id: u8) -> Option<Resolution> {
        if spatial_id > self.max_spatial_id() {
            return None;
        }
        self.resolutions?.get(usize::from(spatial_id)).copied()
    }

    /// A bitmask with a bit for each decode target (the active set right after a structure).
    pub fn all_targets(&self) -> u32 {
        all_targets(self.decode_targets())
    }

    /// Reads `template_dependency_structure()`.
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Structure, Error> {
        let mut s = Structure::empty();
        s.template_id_offset = r.u8(6)?;
        s.decode_targets = r.u8(5)? + 1;
        let dt_count = s.decode_targets();
        // template_layers()
        let (mut spatial, mut temporal) = (0u8, 0u8);
        loop {
            let t = s
                .templates
                .get_mut(usize::from(s.template_count))
                .ok_or(Error::TooManyTemplates)?;
            t.spatial_id = spatial;
            t.temporal_id = temporal;
            s.template_count += 1;
            match r.u8(2)? {
                0 => {}
                1 => temporal = temporal.checked_add(1).ok_or(Error::Invalid)?,
                2 => {
                    temporal = 0;
                    spatial = spatial.checked_add(1).ok_or(Error::Invalid)?;
                }
                _ => break,
            }
        }
        let count = usize::from(s.template_count);
        let templates = s.templates.get_mut(..count).ok_or(Error::Invalid)?;
        // template_dtis()
        for t in templates.iter_mut() {
            for dt in 0..dt_count {
                t.dtis.set(dt, Dti::from_bits(r.u8(2)?));
            }
        }
        // template_fdiffs()
        for t in templates.iter_mut() {
            while r.flag()? {
                t.fdiffs.push(u16::from(r.u8(4)?) + 1)?;
            }
        }
        // template_chains()
        s.chains = r.ns(dt_count as u32 + 1)? as u8;
        if s.chains > 0 {
            for p in s.protected_by.iter_mut().take(dt_count) {
                *p = r.ns(u32::from(s.chains))? as u8;
            }
            for t in templates.iter_mut() {
                let mut diffs = [0u8; MAX_CHAINS];
                for d in diffs.iter_mut().take(usize::from(s.chains)) {
                    *d = r.u8(4)?;
                }
                t.chain_diffs = ChainDiffs::new(diffs.get(..usize::from(s.chains)).unwrap_or(&[]))?;
            }
        }
        s.derive_target_layers();
        // render_resolutions()
        if r.flag()? {
            let mut all = [Resolution::default(); MAX_SPATIAL_LAYERS];
            for res in all.iter_mut().take(usize::from(s.max_spatial_id()) + 1) {
                res.width = r.f(16)? + 1;
                res.height = r.f(16)? + 1;
            }
            s.resolutions = Some(all);
        }
        Ok(s)
    }

    /// Writes `template_dependency_structure()`.
    pub(super) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.f(6, u32::from(self.template_id_offset))?;
        w.f(5, u32::from(self.decode_targets) - 1)?;
        let templates = self.templates();
        for (i, t) in templates.iter().enumerate() {
            let idc = match templates.get(i + 1) {
                None => 3,
                Some(next) => next_layer_idc(
                    (t.spatial_id, t.temporal_id),
                    (next.spatial_id, next.temporal_id),
                )
                .ok_or(Error::Invalid)?,
            };
            w.f(2, idc)?;
        }
        for t in templates {
            for dt in 0..self.decode_targets() {
                w.f(2, t.dtis.get(dt) as u32)?;
            }
        }
        for t in templates {
            for &d in t.fdiffs.as_slice() {
                w.flag(true)?;
                w.f(4, u32::from(d) - 1)?;
            }
            w.flag(false)?;
        }
        w.ns(u32::from(self.decode_targets) + 1, u32::from(self.chains))?;
        if self.chains > 0 {
            for &p in self.protected_by.iter().take(self.decode_targets()) {
                w.ns(u32::from(self.chains), u32::from(p))?;
            }
            for t in templates {
                for &d in t.chain_diffs.as_slice() {
                    w.f(4, u32::from(d))?;
                }
            }
        }
        w.flag(self.resolutions.is_some())?;
        if let Some(all) = &self.resolutions {
            for r in all.iter().take(usize::from(self.max_spatial_id()) + 1) {
                w.f(16, r.width - 1)?;
                w.f(16, r.height - 1)?;
            }
        }
        Ok(())
    }

    /// `decode_target_layers()` (A.8.2).
    fn derive_target_layers(&mut self) {
        let count = usize::from(self.template_count);
        for (dt, layers) in self
            .target_layers
            .iter_mut()
            .enumerate()
            .take(usize::from(self.decode_targets))
        {
            *layers = (0, 0);
            for t in self.templates.iter().take(count) {
                if t.dtis.get(dt) != Dti::NotPresent {
                    layers.0 = layers.0.max(t.spatial_id);
                    layers.1 = layers.1.max(t.temporal_id);
                }
            }
        }
    }
}

/// `next_layer_idc` (A.8.3 Table A.2) for a template at layer `to` after one at `from`, if one
/// can say it.
fn next_layer_idc(from: (u8, u8), to: (u8, u8)) -> Option<u32> {
    if to == from {
        Some(0)
    } else if to.0 == from.0 && Some(to.1) == from.1.checked_add(1) {
        Some(1)
    } else if Some(to.0) == from.0.checked_add(1) && to.1 == 0 {
        Some(2)
    } else {
        None
    }
}

/// A bitmask with the low `n` bits set (n <= 32).
pub(super) fn all_targets(n: usize) -> u32 {
    if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
}
