//! A channel's MCU canvas: what its configuration sets (`mcuLayout`, `mcuCanvasWidth`,
//! `mcuCanvasHeight`, `mcuFrameRate`) over the deployment's `MCU:*` settings, so that one
//! server mixes a lecture hall's 1080p speaker view and a phone call's small grid side by side.

use serde::{Deserialize, Serialize};
use switchyard_dataplane::mcu::{Layout, MixerConfig};
use switchyard_store::ChannelConfig;

/// A channel configuration's own canvas settings; each one it leaves out is the deployment's.
/// A gateway sends them to the media server that mixes (camelCase JSON, the layout by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Canvas {
    #[serde(default, with = "layout_name")]
    pub layout: Option<Layout>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub fps: Option<u32>,
}

/// A layout as its name (`grid`, `speaker`), which the codec crate's `Layout` parses and
/// prints; an unknown name is refused.
mod layout_name {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use switchyard_dataplane::mcu::Layout;

    pub fn serialize<S: Serializer>(layout: &Option<Layout>, s: S) -> Result<S::Ok, S::Error> {
        match layout {
            Some(l) => s.collect_str(l),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Layout>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| name.parse().map_err(D::Error::custom))
            .transpose()
    }
}

impl Canvas {
    /// The settings of `config`. The store checked them when they were written; a layout it
    /// does not know (written by hand) is left to the deployment, as unknown codecs are ignored.
    pub fn of(config: &ChannelConfig) -> Canvas {
        Canvas {
            layout: config.mcu_layout.as_deref().and_then(|l| l.parse().ok()),
            width: config.mcu_canvas_width,
            height: config.mcu_canvas_height,
            fps: config.mcu_frame_rate,
        }
    }

    /// The mixer's configuration: these settings over the deployment's `base`; its bitrates
    /// stay the deployment's.
    pub fn over(self, base: MixerConfig) -> MixerConfig {
        MixerConfig {
            width: self.width.unwrap_or(base.width),
            height: self.height.unwrap_or(base.height),
            fps: self.fps.unwrap_or(base.fps),
            layout: self.layout.unwrap_or(base.layout),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ChannelConfig {
        ChannelConfig {
            application_id: "a".into(),
            pattern: "small-*".into(),
            position: 0,
            allowed_codecs: vec![],
            max_bitrate_kbps: None,
            sfu_allowed: true,
            mcu_allowed: true,
            mcu_layout: None,
            mcu_canvas_width: None,
            mcu_canvas_height: None,
            mcu_frame_rate: None,
            recording: false,
        }
    }

    #[test]
    fn the_channel_overrides_what_it_sets_and_keeps_the_rest() {
        let base = MixerConfig {
            width: 640,
            height: 360,
            fps: 30,
            layout: Layout::Grid,
            ..MixerConfig::default()
        };
        assert_eq!(Canvas::of(&config()), Canvas::default());
        assert_eq!(Canvas::default().over(base), base);

        let all = ChannelConfig {
            mcu_layout: Some("speaker".into()),
            mcu_canvas_width: Some(320),
            mcu_canvas_height: Some(180),
            mcu_frame_rate: Some(10),
            ..config()
        };
        let mixer = Canvas::of(&all).over(base);
        assert_eq!(
            (mixer.width, mixer.height, mixer.fps, mixer.layout),
            (320, 180, 10, Layout::Speaker)
        );
        assert_eq!(mixer.video_bitrate_bps, base.video_bitrate_bps);

        let some = ChannelConfig {
            mcu_frame_rate: Some(15),
            ..config()
        };
        let mixer = Canvas::of(&some).over(base);
        assert_eq!(
            (mixer.width, mixer.height, mixer.fps, mixer.layout),
            (640, 360, 15, Layout::Grid)
        );

        let unknown = ChannelConfig {
            mcu_layout: Some("mosaic".into()),
            ..config()
        };
        assert_eq!(Canvas::of(&unknown).over(base).layout, Layout::Grid);
    }

    /// As the cluster link carries it: the layout by name, what is left out absent.
    #[test]
    fn json_round_trip() {
        let canvas = Canvas {
            layout: Some(Layout::Speaker),
            width: Some(320),
            height: None,
            fps: Some(10),
        };
        let json = serde_json::to_value(canvas).unwrap();
        assert_eq!(json["layout"], "speaker");
        assert_eq!(serde_json::from_value::<Canvas>(json).unwrap(), canvas);
        let empty: Canvas = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Canvas::default());
        assert!(serde_json::from_str::<Canvas>(r#"{"layout":"mosaic"}"#).is_err());
    }
}
