//! One dependency descriptor: `dependency_descriptor(sz)` of the AV1 RTP specification A.8.2,
//! read and written.
//!
//! Three bytes carry the mandatory fields (start and end of frame, the template id, the frame
//! number); a longer descriptor adds five flags and, as they say, the structure, the active
//! decode targets and custom DTIs, frame differences and chain differences that override the
//! template's. A [`Descriptor`] always holds the frame's own values, resolved against the
//! structure, so a forwarder never looks at the template again; [`Descriptor::write`] works out
//! which of them need the custom fields.

use super::bits::{Reader, Writer};
use super::structure::{ChainDiffs, Fdiffs, MAX_CHAINS, Structure};
use super::{Dti, Dtis, Error};

/// What one packet's descriptor says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The packet's payload begins a frame.
    pub start_of_frame: bool,
    /// The packet is the last of its frame.
    pub end_of_frame: bool,
    /// `frame_dependency_template_id` (6 bits).
    pub template_id: u8,
    /// Increases by one per frame in decode order and wraps; the same on every packet of a frame.
    pub frame_number: u16,
    /// The packet carried a template dependency structure (returned beside the descriptor by
    /// [`Descriptor::parse`]; [`Descriptor::write`] then writes one).
    pub has_structure: bool,
    /// `active_decode_targets_bitmask`, when this packet signals it (bit i: decode target i).
    /// A packet with a structure and no bitmask makes every decode target active (A.4); that is
    /// [`super::Stream`]'s business, this stays `None`.
    pub active_decode_targets: Option<u32>,
    /// From the template.
    pub spatial_id: u8,
    /// From the template.
    pub temporal_id: u8,
    /// One per decode target, from the template or custom.
    pub dtis: Dtis,
    /// From the template or custom.
    pub fdiffs: Fdiffs,
    /// One per chain, from the template or custom.
    pub chain_diffs: ChainDiffs,
}

impl Descriptor {
    /// A descriptor that follows template `template_id` of `structure` for frame
    /// `frame_number`, with no flags set: the starting point to send one.
    pub fn from_template(
        structure: &Structure,
        template_id: u8,
        frame_number: u16,
    ) -> Result<Descriptor, Error> {
        let t = structure
            .template(template_id)
            .ok_or(Error::UnknownTemplate)?;
        Ok(Descriptor {
            start_of_frame: false,
            end_of_frame: false,
            template_id,
            frame_number,
            has_structure: false,
            active_decode_targets: None,
            spatial_id: t.spatial_id,
            temporal_id: t.temporal_id,
            dtis: t.dtis,
            fdiffs: t.fdiffs,
            chain_diffs: t.chain_diffs,
        })
    }

    /// Reads the extension's bytes. `latest` is the structure in force (the last one received);
    /// a packet that carries its own uses that one instead and returns it, boxed (once per
    /// coded video sequence), for the caller to keep. Errors: [`Error::Truncated`] for short
    /// input, [`Error::NoStructure`] when neither the packet nor `latest` has one,
    /// [`Error::UnknownTemplate`] when the template id is not one of the structure's (its
    /// packet was lost, A.8.3), and the limits of [`Structure`].
    pub fn parse(
        data: &[u8],
        latest: Option<&Structure>,
    ) -> Result<(Descriptor, Option<Box<Structure>>), Error> {
        if data.len() < 3 {
            return Err(Error::Truncated);
        }
        let mut r = Reader::new(data);
        // mandatory_descriptor_fields()
        let start_of_frame = r.flag()?;
        let end_of_frame = r.flag()?;
        let template_id = r.u8(6)?;
        let frame_number = r.f(16)? as u16;
        let (mut custom_dtis, mut custom_fdiffs, mut custom_chains) = (false, false, false);
        let mut attached = None;
        let mut active_decode_targets = None;
        if data.len() > 3 {
            // extended_descriptor_fields()
            let structure_present = r.flag()?;
            let active_present = r.flag()?;
            custom_dtis = r.flag()?;
            custom_fdiffs = r.flag()?;
            custom_chains = r.flag()?;
            if structure_present {
                attached = Some(Box::new(Structure::read(&mut r)?));
            }
            if active_present {
                let s = attached.as_deref().or(latest).ok_or(Error::NoStructure)?;
                active_decode_targets = Some(r.f(s.decode_targets() as u32)?);
            }
        }
        // frame_dependency_definition()
        let s = attached.as_deref().or(latest).ok_or(Error::NoStructure)?;
        let t = s.template(template_id).ok_or(Error::UnknownTemplate)?;
        let mut d = Descriptor {
            start_of_frame,
            end_of_frame,
            template_id,
            frame_number,
            has_structure: attached.is_some(),
            active_decode_targets,
            spatial_id: t.spatial_id,
            temporal_id: t.temporal_id,
            dtis: t.dtis,
            fdiffs: t.fdiffs,
            chain_diffs: t.chain_diffs,
        };
        if custom_dtis {
            let mut dtis = Dtis(0);
            for dt in 0..s.decode_targets() {
                dtis.set(dt, Dti::from_bits(r.u8(2)?));
            }
            d.dtis = dtis;
        }
        if custom_fdiffs {
            let mut fdiffs = Fdiffs::EMPTY;
            loop {
                let size = r.f(2)?;
                if size == 0 {
                    break;
                }
                fdiffs.push(r.f(4 * size)? as u16 + 1)?;
            }
            d.fdiffs = fdiffs;
        }
        if custom_chains {
            let mut diffs = [0u8; MAX_CHAINS];
            for v in diffs.iter_mut().take(s.chains()) {
                *v = r.u8(8)?;
            }
            d.chain_diffs = ChainDiffs::new(diffs.get(..s.chains()).unwrap_or(&[]))?;
        }
        // zero_padding is ignored (A.8.3).
        Ok((d, attached))
    }

    /// Writes the descriptor into `buf` against `structure` (the one this descriptor's packet
    /// carries when `has_structure`, else the one in force), and returns its length: 3 bytes
    /// when the frame follows its template and nothing else is signalled. DTIs, frame
    /// differences and chain differences that differ from the template's go out as custom
    /// fields. [`Error::Invalid`] when the descriptor cannot be said against `structure`
    /// (layers that are not the template's, a DTI beyond the last decode target, a chain count
    /// that is not the structure's, a frame difference outside 1..=4096).
    pub fn write(&self, structure: &Structure, buf: &mut [u8]) -> Result<usize, Error> {
        let t = structure
            .template(self.template_id)
            .ok_or(Error::UnknownTemplate)?;
        let dt_count = structure.decode_targets();
        let in_range = self.dtis.0.checked_shr(2 * dt_count as u32).unwrap_or(0) == 0;
        if (self.spatial_id, self.temporal_id) != (t.spatial_id, t.temporal_id)
            || !in_range
            || self.chain_diffs.as_slice().len() != structure.chains()
            || self
                .fdiffs
                .as_slice()
                .iter()
                .any(|&f| !(1..=4096).contains(&f))
            || self.template_id >= 64
            || self
                .active_decode_targets
                .is_some_and(|m| m & !structure.all_targets() != 0)
        {
            return Err(Error::Invalid);
        }
        let custom_dtis = self.dtis != t.dtis;
        let custom_fdiffs = self.fdiffs != t.fdiffs;
        let custom_chains = self.chain_diffs != t.chain_diffs;
        let extended = self.has_structure
            || self.active_decode_targets.is_some()
            || custom_dtis
            || custom_fdiffs
            || custom_chains;

        let mut w = Writer::new(buf);
        w.flag(self.start_of_frame)?;
        w.flag(self.end_of_frame)?;
        w.f(6, u32::from(self.template_id))?;
        w.f(16, u32::from(self.frame_number))?;
        if extended {
            w.flag(self.has_structure)?;
            w.flag(self.active_decode_targets.is_some())?;
            w.flag(custom_dtis)?;
            w.flag(custom_fdiffs)?;
            w.flag(custom_chains)?;
            if self.has_structure {
                structure.write(&mut w)?;
            }
            if let Some(mask) = self.active_decode_targets {
                w.f(dt_count as u32, mask)?;
            }
        }
        if custom_dtis {
            for dt in 0..dt_count {
                w.f(2, self.dtis.get(dt) as u32)?;
            }
        }
        if custom_fdiffs {
            for &f in self.fdiffs.as_slice() {
                let minus_one = u32::from(f) - 1;
                // next_fdiff_size, in 4-bit units: the fewest that hold the value.
                let size = match minus_one {
                    0..=0xf => 1,
                    0x10..=0xff => 2,
                    _ => 3,
                };
                w.f(2, size)?;
                w.f(4 * size, minus_one)?;
            }
            w.f(2, 0)?;
        }
        if custom_chains {
            for &c in self.chain_diffs.as_slice() {
                w.f(8, u32::from(c))?;
            }
        }
        Ok(w.finish())
    }
}
