//! What the configuration store holds, as the admin API serves it (camelCase JSON), and the
//! checks each record passes before it is written.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use switchyard_dataplane::mcu::Layout;
use switchyard_dataplane::media::Codec;

use super::channel_match::is_catch_all;
use super::secret::Secret;

/// A deployment: settings shared by the gateways and media servers that run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Optional in a request body: the admin API takes it from the path.
    #[serde(default)]
    pub id: String,
    pub name: Option<String>,
    /// STUN servers (`stun:host:port`) media servers ask for their public address.
    pub stun_servers: Vec<String>,
    /// SFU connections per CPU core below which a media server takes new channels freely.
    pub sfu_connections_per_cpu_safe: u32,
    /// SFU connections per CPU core above which a media server is over capacity.
    pub sfu_connections_per_cpu_unsafe: u32,
    pub mcu_connections_per_cpu_safe: u32,
    pub mcu_connections_per_cpu_unsafe: u32,
    pub clustering_strategy: ClusteringStrategy,
    /// The TURN REST secret of the deployment's TURN servers, for gateways and media servers
    /// without `TURN:SECRET`: set once here, the whole cluster agrees on it. The admin API shows
    /// it masked; the cluster API hands it to media servers in full.
    #[serde(default)]
    pub turn_secret: Option<Secret>,
    /// A second TURN secret still accepted (not signed with) while clients holding credentials
    /// of the previous one finish: a rotation without refusals.
    #[serde(default)]
    pub turn_previous_secret: Option<Secret>,
}

/// How a gateway picks the media server for a new channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusteringStrategy {
    /// The client's region first, then the least loaded server there.
    Region,
    /// The least loaded server anywhere.
    LeastLoaded,
}

impl ClusteringStrategy {
    /// The name stored in the database, the same as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusteringStrategy::Region => "region",
            ClusteringStrategy::LeastLoaded => "leastLoaded",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [ClusteringStrategy::Region, ClusteringStrategy::LeastLoaded]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// An application: who may get client tokens, and the shared secrets they are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub id: String,
    /// Oldest first, one or two. Tokens signed with either are valid, so a secret can be rotated
    /// without a moment in which clients holding the old one are refused: add the new one, move
    /// the token issuers over, then retire the old one. The last is the one to sign with.
    pub secrets: Vec<String>,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

/// The most secrets an application holds at once: the current one and the one before.
pub const MAX_SECRETS: usize = 2;

/// What an application allows on the channels whose name matches `pattern`. An application's
/// configurations are tried in `position` order; the first match applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConfig {
    /// Optional in a request body: the admin API takes it from the path.
    #[serde(default)]
    pub application_id: String,
    /// A channel name where `*` stands for any run of characters, empty included; `*` alone
    /// matches every channel and must come last.
    pub pattern: String,
    pub position: i64,
    /// Encoding names as in SDP (`opus`, `VP8`, `VP9`, `H264`, `AV1`); empty allows all.
    pub allowed_codecs: Vec<String>,
    pub max_bitrate_kbps: Option<u32>,
    pub sfu_allowed: bool,
    pub mcu_allowed: bool,
    /// The mixer's layout for these channels, `grid` or `speaker`; none: the deployment's
    /// `MCU:LAYOUT`. A name rather than a type of its own so that a wrong one is refused with
    /// the names that are known (400), not as malformed JSON.
    pub mcu_layout: Option<String>,
    /// The composite's width in pixels; none: the deployment's `MCU:CANVASWIDTH`.
    pub mcu_canvas_width: Option<u32>,
    /// The composite's height in pixels; none: the deployment's `MCU:CANVASHEIGHT`.
    pub mcu_canvas_height: Option<u32>,
    /// Composites per second; none: the deployment's `MCU:FRAMERATE`.
    pub mcu_frame_rate: Option<u32>,
    /// Every publication in these channels is recorded (default false; the admin API's
    /// recording endpoints also turn it on and off for one channel).
    #[serde(default)]
    pub recording: bool,
}

/// The canvas widths a mixer takes, here and in `MCU:CANVASWIDTH`: a 1080p canvas at most,
/// as the encoders' levels and the MCU threads' time allow.
pub const MCU_CANVAS_WIDTHS: RangeInclusive<u32> = 64..=1920;
/// The canvas heights a mixer takes, here and in `MCU:CANVASHEIGHT`.
pub const MCU_CANVAS_HEIGHTS: RangeInclusive<u32> = 64..=1080;
/// The composite frame rates a mixer takes, here and in `MCU:FRAMERATE`.
pub const MCU_FRAME_RATES: RangeInclusive<u32> = 1..=60;

/// One administrative change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    /// Unix time in milliseconds.
    pub at: i64,
    pub actor: String,
    /// What was done, e.g. `application.put`.
    pub action: String,
    /// What it was done to, e.g. the application's id.
    pub target: String,
    /// The change itself; never a secret.
    pub detail: serde_json::Value,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error(
        "deployment {deployment:?}: {kind} connections per CPU: the safe threshold ({safe}) must be \
         above zero and not above the unsafe one ({unsafe_})"
    )]
    Thresholds {
        deployment: String,
        kind: &'static str,
        safe: u32,
        unsafe_: u32,
    },
    #[error("application {application:?} must have 1 or {MAX_SECRETS} secrets, not {count}")]
    SecretCount { application: String, count: usize },
    #[error("application {application:?}: its secrets must differ")]
    DuplicateSecret { application: String },
    #[error("application {application:?} has no such secret")]
    NoSuchSecret { application: String },
    #[error(
        "unknown codec {codec:?} in channel configuration {pattern:?}; known: opus, VP8, VP9, \
         H264, AV1"
    )]
    UnknownCodec { pattern: String, codec: String },
    #[error("channel configuration {pattern:?}: a maximum bitrate of 0 kbps allows nothing")]
    ZeroBitrate { pattern: String },
    #[error(
        "unknown MCU layout {layout:?} in channel configuration {pattern:?}; known: grid, speaker"
    )]
    UnknownLayout { pattern: String, layout: String },
    #[error("channel configuration {pattern:?}: {setting} must be {allowed}, not {value}")]
    McuSetting {
        pattern: String,
        setting: &'static str,
        allowed: String,
        value: u32,
    },
    #[error(
        "application {application:?}: the catch-all channel configuration {pattern:?} (position \
         {position}) must come last, but {after:?} comes after it"
    )]
    CatchAllNotLast {
        application: String,
        pattern: String,
        position: i64,
        after: String,
    },
    #[error(
        "application {application:?}: channel configurations {first:?} and {second:?} share \
         position {position}"
    )]
    SamePosition {
        application: String,
        first: String,
        second: String,
        position: i64,
    },
    #[error(
        "deployment {deployment:?}: {which} must have at least {min} characters and no spaces",
        min = super::secret::MIN_SECRET_LEN
    )]
    TurnSecret {
        deployment: String,
        which: &'static str,
    },
    #[error(
        "deployment {deployment:?}: turnPreviousSecret needs turnSecret, and must differ from it"
    )]
    TurnPreviousSecret { deployment: String },
    #[error("unknown event {event:?} in webhook {webhook:?}; known: {}", super::WEBHOOK_EVENTS.join(", "))]
    UnknownEvent { webhook: String, event: String },
    #[error("webhook URL {url:?}: {why}")]
    WebhookUrl { url: String, why: &'static str },
    #[error("SIP trunk {trunk:?}: {why}")]
    SipTrunk { trunk: String, why: String },
    #[error("SIP mapping {mapping:?}: {why}")]
    SipMapping { mapping: String, why: String },
    #[error("no application {application:?} for channel configuration {pattern:?}")]
    NoSuchApplication {
        application: String,
        pattern: String,
    },
}

impl Deployment {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "a deployment id",
            });
        }
        if self.stun_servers.iter().any(|s| s.trim().is_empty()) {
            return Err(ConfigError::Empty {
                what: "a STUN server",
            });
        }
        for (kind, safe, unsafe_) in [
            (
                "SFU",
                self.sfu_connections_per_cpu_safe,
                self.sfu_connections_per_cpu_unsafe,
            ),
            (
                "MCU",
                self.mcu_connections_per_cpu_safe,
                self.mcu_connections_per_cpu_unsafe,
            ),
        ] {
            if safe == 0 || safe > unsafe_ {
                return Err(ConfigError::Thresholds {
                    deployment: self.id.clone(),
                    kind,
                    safe,
                    unsafe_,
                });
            }
        }
        for (which, secret) in [
            ("turnSecret", &self.turn_secret),
            ("turnPreviousSecret", &self.turn_previous_secret),
        ] {
            if secret.as_ref().is_some_and(|s| !s.is_valid()) {
                return Err(ConfigError::TurnSecret {
                    deployment: self.id.clone(),
                    which,
                });
            }
        }
        if let Some(previous) = &self.turn_previous_secret
            && self.turn_secret.as_ref().is_none_or(|s| s == previous)
        {
            return Err(ConfigError::TurnPreviousSecret {
                deployment: self.id.clone(),
            });
        }
        Ok(())
    }

    /// This deployment as the admin API shows it and the audit log records it: its TURN
    /// secrets, when set, as the placeholder.
    pub fn masked(&self) -> Deployment {
        let mask = |s: &Option<Secret>| s.as_ref().map(|_| Secret::masked());
        Deployment {
            turn_secret: mask(&self.turn_secret),
            turn_previous_secret: mask(&self.turn_previous_secret),
            ..self.clone()
        }
    }

    /// Puts back the stored secrets where a request carries the placeholder, so that a
    /// deployment read from the admin API, changed and written back keeps its secrets; with
    /// none stored, the placeholder means none.
    pub fn unmask(&mut self, stored: Option<&Deployment>) {
        let keep = |new: &mut Option<Secret>, old: Option<&Secret>| {
            if new.as_ref().is_some_and(Secret::is_masked) {
                *new = old.cloned();
            }
        };
        keep(
            &mut self.turn_secret,
            stored.and_then(|d| d.turn_secret.as_ref()),
        );
        keep(
            &mut self.turn_previous_secret,
            stored.and_then(|d| d.turn_previous_secret.as_ref()),
        );
    }
}

impl Application {
    /// A new application with one secret, created now.
    pub fn new(id: &str, secret: &str) -> Self {
        Application {
            id: id.to_string(),
            secrets: vec![secret.to_string()],
            created_at: super::now_millis(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "an application id",
            });
        }
        if self.secrets.is_empty() || self.secrets.len() > MAX_SECRETS {
            return Err(ConfigError::SecretCount {
                application: self.id.clone(),
                count: self.secrets.len(),
            });
        }
        if self.secrets.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::Empty { what: "a secret" });
        }
        if self.secrets.len() == 2 && self.secrets[0] == self.secrets[1] {
            return Err(ConfigError::DuplicateSecret {
                application: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Adds `secret` as the newest, dropping the oldest if there would be more than
    /// [`MAX_SECRETS`]. Adding the newest again changes nothing.
    pub fn rotate(&mut self, secret: &str) {
        if self.secrets.last().map(String::as_str) == Some(secret) {
            return;
        }
        self.secrets.retain(|s| s != secret);
        self.secrets.push(secret.to_string());
        let excess = self.secrets.len().saturating_sub(MAX_SECRETS);
        self.secrets.drain(..excess);
    }

    /// Removes `secret`; the last one cannot go (the application would accept no token).
    pub fn retire(&mut self, secret: &str) -> Result<(), ConfigError> {
        if !self.secrets.iter().any(|s| s == secret) {
            return Err(ConfigError::NoSuchSecret {
                application: self.id.clone(),
            });
        }
        if self.secrets.len() == 1 {
            return Err(ConfigError::SecretCount {
                application: self.id.clone(),
                count: 0,
            });
        }
        self.secrets.retain(|s| s != secret);
        Ok(())
    }
}

impl ChannelConfig {
    /// Checks this configuration alone, and writes its codecs the way SDP does (`vp8` → `VP8`).
    pub fn normalize(&mut self) -> Result<(), ConfigError> {
        if self.application_id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "a channel configuration's application id",
            });
        }
        if self.pattern.is_empty() {
            return Err(ConfigError::Empty {
                what: "a channel pattern",
            });
        }
        for codec in &mut self.allowed_codecs {
            match Codec::from_name(codec) {
                Some(c) => *codec = c.name().to_string(),
                None => {
                    return Err(ConfigError::UnknownCodec {
                        pattern: self.pattern.clone(),
                        codec: codec.clone(),
                    });
                }
            }
        }
        if self.max_bitrate_kbps == Some(0) {
            return Err(ConfigError::ZeroBitrate {
                pattern: self.pattern.clone(),
            });
        }
        if let Some(layout) = &mut self.mcu_layout {
            match layout.trim().to_ascii_lowercase().parse::<Layout>() {
                Ok(known) => *layout = known.to_string(),
                Err(_) => {
                    return Err(ConfigError::UnknownLayout {
                        pattern: self.pattern.clone(),
                        layout: layout.clone(),
                    });
                }
            }
        }
        // Sizes are even: the canvas is I420, whose chroma is subsampled 2x2.
        for (setting, value, range, even) in [
            (
                "mcuCanvasWidth",
                self.mcu_canvas_width,
                MCU_CANVAS_WIDTHS,
                true,
            ),
            (
                "mcuCanvasHeight",
                self.mcu_canvas_height,
                MCU_CANVAS_HEIGHTS,
                true,
            ),
            ("mcuFrameRate", self.mcu_frame_rate, MCU_FRAME_RATES, false),
        ] {
            let Some(value) = value else { continue };
            if !range.contains(&value) || (even && value % 2 == 1) {
                let (min, max) = range.into_inner();
                return Err(ConfigError::McuSetting {
                    pattern: self.pattern.clone(),
                    setting,
                    allowed: if even {
                        format!("an even number from {min} to {max}")
                    } else {
                        format!("from {min} to {max}")
                    },
                    value,
                });
            }
        }
        Ok(())
    }
}

/// Checks one application's configurations as a list: distinct positions, and a catch-all (`*`)
/// only in the last one, since nothing after it could ever match.
pub fn validate_order(configs: &[ChannelConfig]) -> Result<(), ConfigError> {
    let mut sorted: Vec<&ChannelConfig> = configs.iter().collect();
    sorted.sort_by_key(|c| c.position);
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.position == b.position {
            return Err(ConfigError::SamePosition {
                application: a.application_id.clone(),
                first: a.pattern.clone(),
                second: b.pattern.clone(),
                position: a.position,
            });
        }
        if is_catch_all(&a.pattern) {
            return Err(ConfigError::CatchAllNotLast {
                application: a.application_id.clone(),
                pattern: a.pattern.clone(),
                position: a.position,
                after: b.pattern.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pattern: &str, position: i64) -> ChannelConfig {
        ChannelConfig {
            application_id: "app".into(),
            pattern: pattern.into(),
            position,
            allowed_codecs: vec![],
            max_bitrate_kbps: None,
            sfu_allowed: true,
            mcu_allowed: false,
            mcu_layout: None,
            mcu_canvas_width: None,
            mcu_canvas_height: None,
            mcu_frame_rate: None,
            recording: false,
        }
    }

    #[test]
    fn rotation_keeps_the_newest_two() {
        let mut app = Application::new("app", "a");
        app.rotate("b");
        assert_eq!(app.secrets, ["a", "b"]);
        app.rotate("c");
        assert_eq!(app.secrets, ["b", "c"]);
        app.rotate("c");
        assert_eq!(app.secrets, ["b", "c"]);
        app.rotate("b");
        assert_eq!(app.secrets, ["c", "b"]);
        app.retire("c").unwrap();
        assert_eq!(app.secrets, ["b"]);
        assert!(matches!(
            app.retire("b"),
            Err(ConfigError::SecretCount { count: 0, .. })
        ));
        assert!(matches!(
            app.retire("x"),
            Err(ConfigError::NoSuchSecret { .. })
        ));
        app.validate().unwrap();
    }

    #[test]
    fn applications_need_one_or_two_distinct_secrets() {
        let mut app = Application::new("app", "a");
        app.secrets = vec![];
        assert!(app.validate().is_err());
        app.secrets = vec!["a".into(), "b".into(), "c".into()];
        assert!(app.validate().is_err());
        app.secrets = vec!["a".into(), "a".into()];
        assert!(app.validate().is_err());
        app.secrets = vec!["".into()];
        assert!(app.validate().is_err());
        app.secrets = vec!["a".into()];
        app.id = " ".into();
        assert!(app.validate().is_err());
    }

    #[test]
    fn codecs_are_checked_and_written_as_sdp_does() {
        let mut c = config("room-*", 1);
        c.allowed_codecs = vec!["vp8".into(), "OPUS".into(), "h264".into()];
        c.normalize().unwrap();
        assert_eq!(c.allowed_codecs, ["VP8", "opus", "H264"]);
        c.allowed_codecs = vec!["G711".into()];
        let e = c.normalize().unwrap_err();
        assert!(e.to_string().contains("\"G711\""), "{e}");
        let mut c = config("", 1);
        assert!(matches!(c.normalize(), Err(ConfigError::Empty { .. })));
        let mut c = config("x", 1);
        c.max_bitrate_kbps = Some(0);
        assert!(matches!(
            c.normalize(),
            Err(ConfigError::ZeroBitrate { .. })
        ));
    }

    #[test]
    fn mcu_canvas_settings_are_checked() {
        let mut c = config("small-*", 1);
        c.normalize().unwrap();
        c.mcu_layout = Some(" Speaker".into());
        c.mcu_canvas_width = Some(320);
        c.mcu_canvas_height = Some(180);
        c.mcu_frame_rate = Some(10);
        c.normalize().unwrap();
        assert_eq!(c.mcu_layout.as_deref(), Some("speaker"));
        let ends = [(64, 1920), (64, 1080), (1, 60)];
        for (i, (min, max)) in ends.into_iter().enumerate() {
            let set = |c: &mut ChannelConfig, v| match i {
                0 => c.mcu_canvas_width = Some(v),
                1 => c.mcu_canvas_height = Some(v),
                _ => c.mcu_frame_rate = Some(v),
            };
            let mut ok = c.clone();
            for v in [min, max] {
                set(&mut ok, v);
                ok.normalize().unwrap();
            }
            for v in [min - 1, max + 2, 0] {
                let mut bad = c.clone();
                set(&mut bad, v);
                assert!(
                    matches!(bad.normalize(), Err(ConfigError::McuSetting { .. })),
                    "{i}: {v}"
                );
            }
        }
        let mut odd = c.clone();
        odd.mcu_canvas_width = Some(321);
        let e = odd.normalize().unwrap_err();
        assert_eq!(
            e.to_string(),
            "channel configuration \"small-*\": mcuCanvasWidth must be an even number from 64 \
             to 1920, not 321"
        );
        // An odd frame rate is fine.
        let mut fps = c.clone();
        fps.mcu_frame_rate = Some(15);
        fps.normalize().unwrap();
        let mut layout = c.clone();
        layout.mcu_layout = Some("mosaic".into());
        let e = layout.normalize().unwrap_err();
        assert!(matches!(e, ConfigError::UnknownLayout { .. }), "{e}");
        assert!(e.to_string().ends_with("known: grid, speaker"), "{e}");
    }

    #[test]
    fn catch_all_must_be_last() {
        validate_order(&[config("a*", 1), config("*", 2)]).unwrap();
        validate_order(&[config("*", 9), config("a*", 1)]).unwrap();
        validate_order(&[config("*", 1)]).unwrap();
        let e = validate_order(&[config("*", 1), config("a*", 2)]).unwrap_err();
        assert!(matches!(e, ConfigError::CatchAllNotLast { .. }));
        assert!(e.to_string().contains("must come last"), "{e}");
        // `**` matches everything too.
        assert!(validate_order(&[config("**", 1), config("a", 2)]).is_err());
        // A pattern that merely contains `*` may come anywhere.
        validate_order(&[config("*-live", 1), config("a", 2)]).unwrap();
        assert!(matches!(
            validate_order(&[config("a", 1), config("b", 1)]),
            Err(ConfigError::SamePosition { .. })
        ));
    }

    #[test]
    fn deployment_thresholds() {
        let mut d = Deployment {
            id: "Default".into(),
            name: None,
            stun_servers: vec!["stun:stun.example.org:3478".into()],
            sfu_connections_per_cpu_safe: 100,
            sfu_connections_per_cpu_unsafe: 150,
            mcu_connections_per_cpu_safe: 10,
            mcu_connections_per_cpu_unsafe: 10,
            clustering_strategy: ClusteringStrategy::Region,
            turn_secret: None,
            turn_previous_secret: None,
        };
        d.validate().unwrap();
        d.sfu_connections_per_cpu_safe = 200;
        let e = d.validate().unwrap_err();
        assert!(e.to_string().contains("SFU"), "{e}");
        d.sfu_connections_per_cpu_safe = 0;
        assert!(d.validate().is_err());
    }

    fn deployment_with(secret: Option<&str>, previous: Option<&str>) -> Deployment {
        Deployment {
            id: "default".into(),
            name: None,
            stun_servers: vec![],
            sfu_connections_per_cpu_safe: 1,
            sfu_connections_per_cpu_unsafe: 2,
            mcu_connections_per_cpu_safe: 1,
            mcu_connections_per_cpu_unsafe: 2,
            clustering_strategy: ClusteringStrategy::Region,
            turn_secret: secret.map(Secret::new),
            turn_previous_secret: previous.map(Secret::new),
        }
    }

    #[test]
    fn turn_secrets_are_checked() {
        let (a, b) = ("deployment-secret-aaaa", "deployment-secret-bbbb");
        deployment_with(None, None).validate().unwrap();
        deployment_with(Some(a), Some(b)).validate().unwrap();
        let short = deployment_with(Some("short"), None).validate().unwrap_err();
        assert!(short.to_string().contains("turnSecret"), "{short}");
        for (secret, previous) in [(None, Some(b)), (Some(a), Some(a))] {
            assert!(matches!(
                deployment_with(secret, previous).validate(),
                Err(ConfigError::TurnPreviousSecret { .. })
            ));
        }
    }

    #[test]
    fn turn_secrets_are_masked_and_written_back_unchanged() {
        let stored = deployment_with(Some("deployment-secret-aaaa"), None);
        let shown = stored.masked();
        let json = serde_json::to_value(&shown).unwrap();
        assert_eq!(json["turnSecret"], "****");
        assert_eq!(json["turnPreviousSecret"], serde_json::Value::Null);
        // Read, changed, written back: the stored secret stays.
        let mut back = shown.clone();
        back.sfu_connections_per_cpu_unsafe = 3;
        back.unmask(Some(&stored));
        assert_eq!(back.turn_secret, stored.turn_secret);
        // The placeholder with nothing stored means none; a new value replaces.
        let mut fresh = shown;
        fresh.unmask(None);
        assert_eq!(fresh.turn_secret, None);
        let mut replaced = deployment_with(Some("deployment-secret-cccc"), None);
        replaced.unmask(Some(&stored));
        assert_eq!(
            replaced.turn_secret,
            Some(Secret::new("deployment-secret-cccc"))
        );
        // Older media servers and clients send no such fields.
        let old: Deployment = serde_json::from_str(
            r#"{"stunServers":[],"sfuConnectionsPerCpuSafe":1,"sfuConnectionsPerCpuUnsafe":2,"mcuConnectionsPerCpuSafe":1,"mcuConnectionsPerCpuUnsafe":2,"clusteringStrategy":"region"}"#,
        )
        .unwrap();
        assert_eq!(old.turn_secret, None);
    }

    #[test]
    fn json_is_camel_case() {
        let json = serde_json::to_value(config("a*", 3)).unwrap();
        assert_eq!(json["applicationId"], "app");
        assert_eq!(json["maxBitrateKbps"], serde_json::Value::Null);
        assert_eq!(json["mcuCanvasWidth"], serde_json::Value::Null);
        // Written before the MCU settings existed: none of them, the deployment's canvas.
        let old: ChannelConfig = serde_json::from_str(
            r#"{"pattern":"*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true}"#,
        )
        .unwrap();
        assert_eq!(old.mcu_layout, None);
        assert_eq!(old.mcu_frame_rate, None);
        let new: ChannelConfig = serde_json::from_str(
            r#"{"pattern":"*","position":0,"allowedCodecs":[],"sfuAllowed":true,"mcuAllowed":true,"mcuLayout":"grid","mcuCanvasWidth":320,"mcuCanvasHeight":180,"mcuFrameRate":10}"#,
        )
        .unwrap();
        assert_eq!(
            (new.mcu_canvas_width, new.mcu_canvas_height),
            (Some(320), Some(180))
        );
        assert_eq!(
            serde_json::to_value(ClusteringStrategy::LeastLoaded).unwrap(),
            ClusteringStrategy::LeastLoaded.as_str()
        );
        for s in [ClusteringStrategy::Region, ClusteringStrategy::LeastLoaded] {
            assert_eq!(ClusteringStrategy::from_name(s.as_str()), Some(s));
        }
    }
}
