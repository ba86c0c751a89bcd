//! What a channel's configuration allows a publisher, as signalling applies it and as a gateway
//! passes it to the media server with each publish request, and the canvas its mixer draws.

use switchyard_dataplane::media::Codec;
use switchyard_store::ChannelConfig;

use crate::canvas::Canvas;
use crate::error::Error;

/// Every codec we forward; a channel configuration may narrow it.
pub const ALL_CODECS: [Codec; 5] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Codecs an offer may publish with.
    pub codecs: Vec<Codec>,
    /// `maxBitrateKbps`: what a publisher is told it may send (REMB), and the most a
    /// subscriber is forwarded of one of its tracks (the simulcast or SVC layer chosen).
    pub max_bitrate_kbps: Option<u32>,
    /// The channel's MCU canvas where its configuration sets one, for the mixer it starts.
    pub canvas: Canvas,
    /// `recording`: the publication is recorded (where the server records).
    pub record: bool,
}

impl Rules {
    /// The rules of `config` (none: everything is allowed), or why publishing is refused.
    pub fn of(config: Option<&ChannelConfig>) -> Result<Rules, Error> {
        let Some(c) = config else {
            return Ok(Rules {
                codecs: ALL_CODECS.to_vec(),
                max_bitrate_kbps: None,
                canvas: Canvas::default(),
                record: false,
            });
        };
        if !c.sfu_allowed {
            return Err(Error::BadRequest(format!(
                "the configuration of channels {:?} does not allow SFU publishing",
                c.pattern
            )));
        }
        let codecs = if c.allowed_codecs.is_empty() {
            ALL_CODECS.to_vec()
        } else {
            c.allowed_codecs
                .iter()
                .filter_map(|n| Codec::from_name(n))
                .collect()
        };
        Ok(Rules {
            codecs,
            max_bitrate_kbps: c.max_bitrate_kbps,
            canvas: Canvas::of(c),
            record: c.recording,
        })
    }

    /// The rules of `config` for an MCU connection (`mcuAllowed`), whose codecs are further
    /// narrowed to what the mixer decodes.
    pub fn for_mix(config: Option<&ChannelConfig>) -> Result<Rules, Error> {
        if let Some(c) = config
            && !c.mcu_allowed
        {
            return Err(Error::BadRequest(format!(
                "the configuration of channels {:?} does not allow MCU connections",
                c.pattern
            )));
        }
        let sfu_allowed = config.map(|c| ChannelConfig {
            sfu_allowed: true,
            ..c.clone()
        });
        Rules::of(sfu_allowed.as_ref())
    }

    /// The cap in bits per second, as the media workers take it.
    pub fn max_bitrate_bps(&self) -> Option<u64> {
        self.max_bitrate_kbps.map(|k| u64::from(k) * 1000)
    }

    /// The codec names, as the cluster link carries them.
    pub fn codec_names(&self) -> Vec<String> {
        self.codecs.iter().map(ToString::to_string).collect()
    }

    /// Rules from codec names (unknown names are ignored; none at all means every codec) and
    /// the cap, as the cluster link carries them (the canvas, which only a mix needs, travels
    /// beside them; a cluster's media servers do not record yet, so `record` does not travel).
    pub fn from_link(names: &[String], max_bitrate_kbps: Option<u32>) -> Rules {
        let codecs: Vec<Codec> = names.iter().filter_map(|n| Codec::from_name(n)).collect();
        Rules {
            codecs: if names.is_empty() {
                ALL_CODECS.to_vec()
            } else {
                codecs
            },
            max_bitrate_kbps,
            canvas: Canvas::default(),
            record: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(codecs: &[&str], sfu: bool) -> ChannelConfig {
        ChannelConfig {
            application_id: "a".into(),
            pattern: "team-*".into(),
            position: 0,
            allowed_codecs: codecs.iter().map(|c| c.to_string()).collect(),
            max_bitrate_kbps: Some(1500),
            sfu_allowed: sfu,
            mcu_allowed: false,
            mcu_layout: None,
            mcu_canvas_width: None,
            mcu_canvas_height: None,
            mcu_frame_rate: None,
            recording: false,
        }
    }

    #[test]
    fn rules_follow_the_channel_configuration() {
        assert_eq!(Rules::of(None).unwrap().codecs, ALL_CODECS);
        assert_eq!(
            Rules::of(Some(&config(&[], true))).unwrap().codecs,
            ALL_CODECS
        );
        let r = Rules::of(Some(&config(&["opus", "vp8"], true))).unwrap();
        assert_eq!(r.codecs, [Codec::Opus, Codec::Vp8]);
        assert_eq!(r.max_bitrate_bps(), Some(1_500_000));
        assert_eq!(
            Rules::from_link(&r.codec_names(), r.max_bitrate_kbps),
            r,
            "the cluster link keeps them"
        );
        assert_eq!(Rules::from_link(&[], None).codecs, ALL_CODECS);
        assert_eq!(Rules::of(None).unwrap().max_bitrate_bps(), None);
        let refused = Rules::of(Some(&config(&[], false))).unwrap_err();
        assert!(
            refused.to_string().contains("does not allow SFU"),
            "{refused}"
        );
    }

    /// An MCU connection needs `mcuAllowed`, whatever `sfuAllowed` says, and keeps the
    /// configuration's codecs, cap and canvas.
    #[test]
    fn mixing_follows_mcu_allowed() {
        let refused = Rules::for_mix(Some(&config(&[], true))).unwrap_err();
        assert!(
            refused.to_string().contains("does not allow MCU"),
            "{refused}"
        );
        let mcu_only = ChannelConfig {
            mcu_allowed: true,
            mcu_canvas_width: Some(320),
            mcu_frame_rate: Some(10),
            ..config(&["opus", "h264"], false)
        };
        let r = Rules::for_mix(Some(&mcu_only)).unwrap();
        assert_eq!(r.codecs, [Codec::Opus, Codec::H264]);
        assert_eq!(r.max_bitrate_bps(), Some(1_500_000));
        assert_eq!(r.canvas, Canvas::of(&mcu_only));
        assert_eq!((r.canvas.width, r.canvas.fps), (Some(320), Some(10)));
        assert_eq!(Rules::for_mix(None).unwrap().codecs, ALL_CODECS);
    }
}
