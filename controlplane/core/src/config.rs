//! Settings with the names operators of the original product know (`CONNECTIONSTRINGS:DEFAULT`,
//! `EXTERNAL:PUBLICIPADDRESS`, `Deployments:0:...`), from a TOML file and the environment.
//!
//! Shells cannot export names with `:`, so `__` is accepted wherever `:` is, and names match
//! without regard to case. The environment overrides the file. Every known setting is checked
//! when loaded, so a bad value stops the process before it binds anything, with an error that
//! names the setting, where it came from and what was expected.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use switchyard_store::mask;

use crate::allowlist::{AllowList, BadEntry};

/// What a setting's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PostgresUri,
    RedisUri,
    HttpUrl,
    Name,
    IpAddress,
    /// Comma-separated IP addresses or CIDR ranges.
    IpList,
    Hostname,
    /// Comma-separated SHA-1 fingerprints (40 hex digits, colons allowed).
    Sha1List,
    /// A secret of at least 16 characters, never shown.
    Secret,
    /// A TCP/UDP port (0: any free port).
    Port,
    /// true/false (also 1/0, yes/no).
    Bool,
    /// A file path.
    Path,
    /// A whole number.
    Count,
    /// An object storage URL: s3://, az://, gs://, file://, ...
    StorageUrl,
    AmqpUri,
}

struct Spec {
    name: &'static str,
    kind: Kind,
    /// What it is for, shown by `config print`.
    about: &'static str,
}

/// Every setting this version reads. `DEPLOYMENTS:<n>:...` are accepted too (see `is_deployment`).
const SETTINGS: &[Spec] = &[
    Spec {
        name: "CONNECTIONSTRINGS:DEFAULT",
        kind: Kind::PostgresUri,
        about: "PostgreSQL for configuration and records (unset: embedded SQLite)",
    },
    Spec {
        name: "CONNECTIONSTRINGS:CACHE",
        kind: Kind::RedisUri,
        about: "Redis for shared ephemeral state (unset: in memory)",
    },
    Spec {
        name: "SERVICEBASEURL",
        kind: Kind::HttpUrl,
        about: "the gateway URL media servers register with",
    },
    Spec {
        name: "REGION",
        kind: Kind::Name,
        about: "this media server's region tag",
    },
    Spec {
        name: "INTERNAL:IPADDRESSES",
        kind: Kind::IpList,
        about: "addresses or CIDRs for cluster traffic",
    },
    Spec {
        name: "EXTERNAL:IPADDRESSES",
        kind: Kind::IpList,
        about: "addresses or CIDRs clients reach",
    },
    Spec {
        name: "EXTERNAL:PUBLICIPADDRESS",
        kind: Kind::IpAddress,
        about: "the public IP announced in ICE candidates",
    },
    Spec {
        name: "EXTERNAL:PUBLICHOSTNAME",
        kind: Kind::Hostname,
        about: "the public DNS name (TURNS)",
    },
    Spec {
        name: "ADMIN:IPADDRESSES",
        kind: Kind::IpList,
        about: "who may use the admin API",
    },
    Spec {
        name: "ADMIN:APIKEY",
        kind: Kind::Secret,
        about: "the admin API's X-API-Key (unset: generated into the data directory)",
    },
    Spec {
        name: "SYNC:IPADDRESSES",
        kind: Kind::IpList,
        about: "addresses the signalling listener serves",
    },
    Spec {
        name: "SYNC:JOINTIMEOUT",
        kind: Kind::Count,
        about: "seconds a signalling socket may stay open before it joins (default 10; 0: no limit)",
    },
    Spec {
        name: "SYNC:MESSAGERATE",
        kind: Kind::Count,
        about: "frames per second one signalling socket may send before it is closed (default 100; 0: no limit)",
    },
    Spec {
        name: "SYNC:MESSAGEBURST",
        kind: Kind::Count,
        about: "frames one signalling socket may send at once after a quiet spell (default 200)",
    },
    Spec {
        name: "SYNC:MAXCONNECTIONSPERADDRESS",
        kind: Kind::Count,
        about: "signalling sockets one source address may hold (default 50; 0: no limit)",
    },
    Spec {
        name: "MEDIA:SHARDAFTER",
        kind: Kind::Count,
        about: "transports a media worker carries before a channel's new subscribers go to a less loaded worker, linked in-process (default 250; 0: a channel stays on one worker)",
    },
    Spec {
        name: "MCU:WORKERS",
        kind: Kind::Count,
        about: "MCU threads for mixing, pinned after the media workers (default 1; 0: no MCU)",
    },
    Spec {
        name: "MCU:CANVASWIDTH",
        kind: Kind::Count,
        about: "width of the mixers' composite picture (default 640)",
    },
    Spec {
        name: "MCU:CANVASHEIGHT",
        kind: Kind::Count,
        about: "height of the mixers' composite picture (default 360)",
    },
    Spec {
        name: "MCU:FRAMERATE",
        kind: Kind::Count,
        about: "frames per second of the composite (default 30)",
    },
    Spec {
        name: "MCU:LAYOUT",
        kind: Kind::Name,
        about: "grid (default) or speaker: the active speaker large, the rest in a strip",
    },
    Spec {
        name: "MCU:LOWERRUNG",
        kind: Kind::Bool,
        about: "also encode each composite at half size for viewers on weak links (default false; costs about a third more encoding)",
    },
    Spec {
        name: "RECORDING:LAYOUT",
        kind: Kind::Name,
        about: "how all-in-one muxes a recorded session: grid (default; tiles change as people come and go), hstack or vstack",
    },
    Spec {
        name: "DEPLOYMENTS:0:RECORDINGMANAGEMENT:AMQPURI",
        kind: Kind::AmqpUri,
        about: "RabbitMQ for the recording pipeline: the monitor queues sessions there for `switchyard recording-muxer` processes instead of muxing them itself (default: none, all-in-one muxes in-process)",
    },
    Spec {
        name: "DEPLOYMENTS:0:RECORDINGMANAGEMENT:POSTGRESURI",
        kind: Kind::PostgresUri,
        about: "PostgreSQL for the recording database the recording monitor keeps (recordings and sessions); default: CONNECTIONSTRINGS:DEFAULT, else SQLite in the data directory",
    },
    Spec {
        name: "RECORDING:STORAGE",
        kind: Kind::StorageUrl,
        about: "object storage for recordings (s3://bucket/prefix, az://, gs://, file:///dir; credentials and endpoint from the usual AWS_*, AZURE_*, GOOGLE_* variables): all-in-one's mover uploads muxed sessions with their recordings; in a cluster, media servers upload each recording as it finishes, the monitor reads the logs there, muxers fetch the files and store the sessions. Local copies are deleted once verified. Default: none, files stay in the data directory",
    },
    Spec {
        name: "RECORDING:WIDTH",
        kind: Kind::Count,
        about: "muxed recordings' canvas width (default 1280)",
    },
    Spec {
        name: "RECORDING:HEIGHT",
        kind: Kind::Count,
        about: "muxed recordings' canvas height (default 720)",
    },
    Spec {
        name: "RECORDING:FRAMERATE",
        kind: Kind::Count,
        about: "muxed recordings' frame rate (default 30)",
    },
    Spec {
        name: "RECORDING:VIDEOBITRATE",
        kind: Kind::Count,
        about: "muxed recordings' VP8 bitrate in bit/s (default 2000000)",
    },
    Spec {
        name: "SIP:ENABLED",
        kind: Kind::Bool,
        about: "all-in-one: run the embedded SIP connector (default true)",
    },
    Spec {
        name: "SIP:PORT",
        kind: Kind::Port,
        about: "SIP over UDP and TCP (default 5060; 0: any free port)",
    },
    Spec {
        name: "SIP:TLSPORT",
        kind: Kind::Port,
        about: "SIP over TLS, with SIP:CERTIFICATEPATH (default 5061)",
    },
    Spec {
        name: "SIP:CERTIFICATEPATH",
        kind: Kind::Path,
        about: "PEM certificate chain for SIP over TLS (unset: no TLS listener)",
    },
    Spec {
        name: "SIP:PRIVATEKEYPATH",
        kind: Kind::Path,
        about: "PEM private key for SIP:CERTIFICATEPATH",
    },
    Spec {
        name: "SIP:RTPPORTMIN",
        kind: Kind::Port,
        about: "the lowest RTP port of phone calls (default 30000; one even port per call)",
    },
    Spec {
        name: "SIP:RTPPORTMAX",
        kind: Kind::Port,
        about: "the highest RTP port of phone calls (default 39999)",
    },
    Spec {
        name: "SIP:RTPTIMEOUT",
        kind: Kind::Count,
        about: "seconds without RTP from a phone that should be sending before its call is hung up (default 30)",
    },
    Spec {
        name: "SIP:CALLSPERSECOND",
        kind: Kind::Count,
        about: "new calls one source address may make per second, with bursts of twice that (default 10)",
    },
    Spec {
        name: "TURN:ENABLED",
        kind: Kind::Bool,
        about: "run the embedded TURN server (default true)",
    },
    Spec {
        name: "TURN:PORT",
        kind: Kind::Port,
        about: "TURN over UDP and TCP (default 3478; 0: any free port)",
    },
    Spec {
        name: "TURN:TLSPORT",
        kind: Kind::Port,
        about: "TURN over TLS, with TURN:CERTIFICATEPATH (default 5349; 443 needs CAP_NET_BIND_SERVICE)",
    },
    Spec {
        name: "TURN:ADVERTISEDPORT",
        kind: Kind::Port,
        about: "the UDP/TCP port clients are told, when a load balancer maps it (default TURN:PORT)",
    },
    Spec {
        name: "TURN:ADVERTISEDTLSPORT",
        kind: Kind::Port,
        about: "the TLS port clients are told (default TURN:TLSPORT)",
    },
    Spec {
        name: "TURN:CERTIFICATEPATH",
        kind: Kind::Path,
        about: "PEM certificate chain for TURN over TLS (unset: no TLS listener)",
    },
    Spec {
        name: "TURN:PRIVATEKEYPATH",
        kind: Kind::Path,
        about: "PEM private key for TURN:CERTIFICATEPATH",
    },
    Spec {
        name: "CLUSTER:SECRET",
        kind: Kind::Secret,
        about: "the key gateways and media servers sign cluster API requests and seal pipe keys with (unset: INTERNAL:IPADDRESSES alone guards that API)",
    },
    Spec {
        name: "TURN:SECRET",
        kind: Kind::Secret,
        about: "the TURN REST shared key clients' credentials are signed with (unset: the deployment's turnSecret, else generated into the data directory by all-in-one)",
    },
    Spec {
        name: "TURN:PREVIOUSSECRET",
        kind: Kind::Secret,
        about: "the key before a rotation, still accepted",
    },
    Spec {
        name: "TURN:ALLOWLOOPBACKPEERS",
        kind: Kind::Bool,
        about: "let allocations reach 127.0.0.0/8 and ::1 (tests only; default false)",
    },
    Spec {
        name: "TURN:ALLOWPEERS",
        kind: Kind::IpList,
        about: "special-purpose ranges allocations may reach anyway (e.g. 10.0.0.0/8)",
    },
    Spec {
        name: "TURN:DENYPEERS",
        kind: Kind::IpList,
        about: "ranges allocations may never reach",
    },
    Spec {
        name: "TURN:RELAYPORTMIN",
        kind: Kind::Port,
        about: "first UDP port for relayed addresses (default 40000)",
    },
    Spec {
        name: "TURN:RELAYPORTMAX",
        kind: Kind::Port,
        about: "last UDP port for relayed addresses (default 49151)",
    },
    Spec {
        name: "TURN:USERQUOTA",
        kind: Kind::Count,
        about: "allocations one user may hold (default 10)",
    },
    Spec {
        name: "TURN:MAXLIFETIME",
        kind: Kind::Count,
        about: "the longest allocation lifetime in seconds (default 3600)",
    },
    Spec {
        name: "TURN:BANDWIDTH",
        kind: Kind::Count,
        about: "bytes per second one allocation may relay (default: no cap)",
    },
    Spec {
        name: "TRUSTEDSERVERCERTIFICATESHA1FINGERPRINTS",
        kind: Kind::Sha1List,
        about: "self-signed certificates to trust (Redis TLS)",
    },
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// The environment variable, as it was spelled.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
        }
    }
}

/// A setting that could not be used. (Named apart from the store's `ConfigError`, which is
/// about stored records.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{setting} (from {origin}): {problem}")]
    Invalid {
        setting: String,
        origin: Source,
        problem: Invalid,
    },
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: FileProblem },
}

/// Why a value does not fit its setting; each says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The value is shown masked: a connection string may hold a password.
    #[error("{masked:?} is not a {scheme} URI; expected e.g. {example}")]
    Uri {
        masked: String,
        scheme: &'static str,
        example: &'static str,
    },
    #[error("{0:?} is not a name; expected letters, digits, '.', '_' or '-' (e.g. eu-west)")]
    Name(String),
    #[error("{0:?} is not an IP address; expected e.g. 203.0.113.7")]
    IpAddress(String),
    #[error(transparent)]
    IpList(#[from] BadEntry),
    #[error("the secret must be at least 16 characters with no spaces")]
    Secret,
    #[error("{0:?} is not a host name; expected e.g. media.example.com")]
    Hostname(String),
    #[error("{0:?} is not a SHA-1 fingerprint; expected 40 hex digits")]
    Sha1(String),
    #[error("{0:?} is not a port; expected 0 to 65535")]
    Port(String),
    #[error("{0:?} is not true or false")]
    Bool(String),
    #[error("the path is empty")]
    Path,
    #[error("{0:?} is not a whole number")]
    Count(String),
}

/// Why a settings file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// The I/O error's text (`std::io::Error` is neither `Clone` nor `Eq`).
    #[error("{0}")]
    Read(String),
    #[error("{0}")]
    Toml(String),
    #[error("{0}: a list may hold only values")]
    ListOfTables(String),
    #[error("{0}: unsupported value")]
    Unsupported(String),
    #[error("unknown setting {0:?}; known: {known}, DEPLOYMENTS:<n>:<key>", known = known_settings())]
    Unknown(String),
}

fn known_settings() -> String {
    SETTINGS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The effective configuration: canonical name → (value, source).
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<String, (String, Source)>,
}

/// Normalises a setting name: upper case, `__` read as `:`.
fn normalise(name: &str) -> String {
    name.replace("__", ":").to_ascii_uppercase()
}

/// `DEPLOYMENTS:<index>:<key>[:...]`.
fn is_deployment(name: &str) -> bool {
    let mut parts = name.split(':');
    parts.next() == Some("DEPLOYMENTS")
        && parts.next().is_some_and(|i| i.parse::<u32>().is_ok())
        && parts.next().is_some_and(|k| !k.is_empty())
}

fn spec(name: &str) -> Option<&'static Spec> {
    SETTINGS.iter().find(|s| s.name == name)
}

impl Config {
    /// Reads `file` (if any), then the environment `vars` over it, and checks every value.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, SettingError> {
        let mut config = Config::default();
        if let Some(path) = file {
            config.read_file(path)?;
        }
        for (k, v) in vars {
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
                continue;
            };
            let name = normalise(k);
            if spec(&name).is_some() || is_deployment(&name) {
                config
                    .values
                    .insert(name, (v.to_string(), Source::Env(k.to_string())));
            }
        }
        for (name, (value, source)) in &config.values {
            if let Some(spec) = spec(name) {
                check(spec.kind, value).map_err(|problem| SettingError::Invalid {
                    setting: name.clone(),
                    origin: source.clone(),
                    problem,
                })?;
            }
        }
        Ok(config)
    }

    /// The file's keys are the settings' names as TOML: `[connectionstrings] default = "..."`
    /// or `"CONNECTIONSTRINGS:DEFAULT" = "..."`, `[[deployments]]` tables for the indexed
    /// deployment settings; lists of addresses may be arrays.
    fn read_file(&mut self, path: &Path) -> Result<(), SettingError> {
        let fail = |problem: FileProblem| SettingError::File {
            path: path.to_path_buf(),
            problem,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(FileProblem::Read(e.to_string())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(FileProblem::Toml(e.to_string())))?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat).map_err(fail)?;
        for (key, value) in flat {
            let name = normalise(&key);
            if spec(&name).is_none() && !is_deployment(&name) {
                return Err(fail(FileProblem::Unknown(key)));
            }
            self.values
                .insert(name, (value, Source::File(path.to_path_buf())));
        }
        Ok(())
    }

    /// The value of `name` (canonical, e.g. `CONNECTIONSTRINGS:CACHE`), if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&normalise(name))
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// `EXTERNAL:PUBLICIPADDRESS`, already checked by `load`.
    pub fn public_ip(&self) -> Option<IpAddr> {
        self.get("EXTERNAL:PUBLICIPADDRESS")
            .and_then(|v| v.trim().parse().ok())
    }

    /// A port setting (checked by `load`), else `default`.
    pub fn port(&self, name: &str, default: u16) -> u16 {
        self.get(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }

    /// A true/false setting (checked by `load`), else `default`.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.get(name).and_then(parse_bool).unwrap_or(default)
    }

    /// A whole-number setting (checked by `load`).
    pub fn count(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// Every known setting with its value (secrets masked) and source, then any deployment
    /// settings: what `switchyard config print` shows.
    pub fn describe(&self) -> String {
        let width = SETTINGS.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for s in SETTINGS {
            let line = match self.values.get(s.name) {
                Some((_, source)) if s.kind == Kind::Secret => {
                    format!("{:width$} = ****  ({source})", s.name)
                }
                Some((v, source)) => format!("{:width$} = {}  ({source})", s.name, mask(v)),
                None => format!("{:width$}   not set: {}", s.name, s.about),
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for (name, (v, source)) in self.values.iter().filter(|(n, _)| is_deployment(n)) {
            out.push_str(&format!("{name} = {}  ({source})\n", mask(v)));
        }
        out
    }
}

/// Flattens TOML into `A:B` keys; arrays of tables get indices, arrays of scalars are joined
/// with commas.
fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), FileProblem> {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}:{k}")
        }
    };
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&join(k), v, out)?;
            }
        }
        toml::Value::Array(items) if items.iter().all(|v| v.is_table()) && !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out)?;
            }
        }
        toml::Value::Array(items) => {
            let scalars: Option<Vec<String>> = items.iter().map(scalar).collect();
            let joined = scalars.ok_or_else(|| FileProblem::ListOfTables(prefix.to_string()))?;
            out.push((prefix.to_string(), joined.join(",")));
        }
        v => out.push((
            prefix.to_string(),
            scalar(v).ok_or_else(|| FileProblem::Unsupported(prefix.to_string()))?,
        )),
    }
    Ok(())
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks `value` against `kind`; the error says what was expected.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn check(kind: Kind, value: &str) -> Result<(), Invalid> {
    let v = value.trim();
    let uri = |schemes: &[&'static str], example: &'static str| {
        let ok = v.split_once("://").is_some_and(|(s, rest)| {
            schemes.iter().any(|x| s.eq_ignore_ascii_case(x))
                && !rest.trim_start_matches('/').is_empty()
        });
        if ok {
            Ok(())
        } else {
            Err(Invalid::Uri {
                masked: mask(v),
                scheme: schemes[0],
                example,
            })
        }
    };
    match kind {
        Kind::PostgresUri => uri(
            &["postgres", "postgresql"],
            "postgres://user:password@host:5432/database",
        ),
        Kind::RedisUri => uri(&["redis", "rediss"], "redis://host:6379"),
        Kind::HttpUrl => uri(&["http", "https"], "https://gateway.example.com"),
        Kind::AmqpUri => uri(&["amqp", "amqps"], "amqp://guest:guest@rabbitmq:5672"),
        Kind::StorageUrl => uri(
            &[
                "s3", "s3a", "az", "azure", "abfs", "abfss", "gs", "file", "http", "https",
            ],
            "s3://bucket/prefix",
        ),
        Kind::Name => {
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                Ok(())
            } else {
                Err(Invalid::Name(v.to_string()))
            }
        }
        Kind::IpAddress => v
            .parse::<IpAddr>()
            .map(drop)
            .map_err(|_| Invalid::IpAddress(v.to_string())),
        Kind::IpList => AllowList::parse(v).map(drop).map_err(Invalid::from),
        Kind::Port => v
            .parse::<u16>()
            .map(drop)
            .map_err(|_| Invalid::Port(v.to_string())),
        Kind::Bool => parse_bool(v)
            .map(drop)
            .ok_or_else(|| Invalid::Bool(v.to_string())),
        Kind::Path if v.is_empty() => Err(Invalid::Path),
        Kind::Path => Ok(()),
        Kind::Count => v
            .parse::<u64>()
            .map(drop)
            .map_err(|_| Invalid::Count(v.to_string())),
        Kind::Secret => {
            if v.chars().count() >= 16 && !v.chars().any(char::is_whitespace) {
                Ok(())
            } else {
                Err(Invalid::Secret)
            }
        }
        Kind::Hostname => {
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if ok {
                Ok(())
            } else {
                Err(Invalid::Hostname(v.to_string()))
            }
        }
        Kind::Sha1List => {
            for item in v.split([',', ' ']).filter(|s| !s.is_empty()) {
                let hex: String = item.chars().filter(|c| *c != ':').collect();
                if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Invalid::Sha1(item.to_string()));
                }
            }
            Ok(())
        }
    }
}

/// The value of setting `name` in `vars`, trying `name` as given, with `__` for `:`, and any case.
pub fn lookup(vars: impl IntoIterator<Item = (OsString, OsString)>, name: &str) -> Option<String> {
    let wanted = normalise(name);
    vars.into_iter().find_map(|(k, v)| {
        let k = k.to_str()?;
        (normalise(k) == wanted).then(|| v.to_string_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn colon_double_underscore_and_case() {
        let name = "EXTERNAL:PUBLICIPADDRESS";
        assert_eq!(
            lookup(vars(&[("EXTERNAL:PUBLICIPADDRESS", "1.2.3.4")]), name).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            lookup(vars(&[("EXTERNAL__PUBLICIPADDRESS", "5.6.7.8")]), name).as_deref(),
            Some("5.6.7.8")
        );
        assert_eq!(
            lookup(vars(&[("external__publicIpAddress", "9.9.9.9")]), name).as_deref(),
            Some("9.9.9.9")
        );
        assert_eq!(
            lookup(vars(&[("EXTERNAL_PUBLICIPADDRESS", "x")]), name),
            None
        );
        assert_eq!(lookup(vars(&[]), name), None);
    }

    fn file(text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "switchyard-config-{:x}.toml",
            rand::random::<u64>()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn file_then_environment_with_sources() {
        let path = file(
            "servicebaseurl = \"http://gw:8080\"\nregion = \"eu\"\n\
             [connectionstrings]\ndefault = \"postgres://sy:secret@db:5432/sy\"\n\
             [external]\nipaddresses = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\
             [[deployments]]\ndeploymentid = \"Default\"\n",
        );
        let c = Config::load(
            Some(&path),
            vars(&[
                ("REGION", "us"),
                ("CONNECTIONSTRINGS__CACHE", "redis://cache"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.get("region"), Some("us"));
        assert_eq!(c.get("EXTERNAL:IPADDRESSES"), Some("10.0.0.0/8,192.0.2.7"));
        assert_eq!(c.get("DEPLOYMENTS:0:DEPLOYMENTID"), Some("Default"));
        let d = c.describe();
        assert!(d.contains("postgres://sy:****@db:5432/sy"), "{d}");
        assert!(!d.contains("secret"), "{d}");
        assert!(d.contains("(environment CONNECTIONSTRINGS__CACHE)"), "{d}");
        assert!(d.contains(&format!("(file {})", path.display())), "{d}");
        assert!(
            d.contains("EXTERNAL:PUBLICIPADDRESS") && d.contains("not set"),
            "{d}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bad_values_name_the_setting_source_and_what_was_expected() {
        let e = Config::load(None, vars(&[("EXTERNAL__PUBLICIPADDRESS", "nope")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "EXTERNAL:PUBLICIPADDRESS (from environment EXTERNAL__PUBLICIPADDRESS): \"nope\" is not an IP address; expected e.g. 203.0.113.7"
        );
        for (k, v) in [
            ("CONNECTIONSTRINGS:DEFAULT", "mysql://u:p@h/db"),
            ("CONNECTIONSTRINGS:CACHE", "localhost:6379"),
            ("SERVICEBASEURL", "gw:8080"),
            ("REGION", "eu west"),
            ("ADMIN:IPADDRESSES", "10.0.0.0/33"),
            ("EXTERNAL:PUBLICHOSTNAME", "bad_host!"),
            ("TRUSTEDSERVERCERTIFICATESHA1FINGERPRINTS", "abcd"),
        ] {
            let e = Config::load(None, vars(&[(k, v)])).unwrap_err().to_string();
            assert!(e.starts_with(k) && e.contains("expected"), "{e}");
        }
        let e = Config::load(
            None,
            vars(&[("CONNECTIONSTRINGS:DEFAULT", "mysql://u:pw@h/db")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("pw@"), "secrets stay masked in errors: {e}");
    }

    #[test]
    fn unknown_or_malformed_file_settings_are_refused() {
        let path = file("regoin = \"eu\"\n");
        let e = Config::load(Some(&path), vars(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting \"regoin\""), "{e}");
        std::fs::write(&path, "region = [\n").unwrap();
        assert!(Config::load(Some(&path), vars(&[])).is_err());
        let _ = std::fs::remove_file(path);
        assert!(Config::load(Some(Path::new("/nonexistent.toml")), vars(&[])).is_err());
    }
}
