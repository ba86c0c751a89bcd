//! What the media server would do with the same settings: the ports it binds, what it
//! announces, which TURN listeners it opens. Doctor checks this plan, not a guess of its own.

use std::net::IpAddr;
use std::path::PathBuf;

use switchyard_controlplane::config::Config;

use crate::MediaArgs;

/// The settings' names, used in fixes so an operator can paste them.
pub const PUBLIC_IP: &str = "EXTERNAL:PUBLICIPADDRESS";
pub const PUBLIC_HOSTNAME: &str = "EXTERNAL:PUBLICHOSTNAME";

/// Relay ports when TURN:RELAYPORTMIN/MAX are not set (the same defaults as `turn.rs`).
const RELAY_PORTS: (u16, u16) = (40000, 49151);

#[derive(Debug, Clone)]
pub struct Plan {
    pub bind_ip: IpAddr,
    /// The media port range; worker i takes the i-th free port from its start.
    pub media_ports: (u16, u16),
    pub workers: usize,
    /// Whether the workers also listen on TCP at their ports (ICE-TCP; off with --no-ice-tcp).
    pub ice_tcp: bool,
    /// `--public-ip` or EXTERNAL:PUBLICIPADDRESS.
    pub configured_public: Option<IpAddr>,
    pub hostname: Option<String>,
    pub stun_servers: Vec<String>,
    pub turn: Option<TurnPlan>,
}

#[derive(Debug, Clone)]
pub struct TurnPlan {
    /// UDP and TCP (TURN:PORT).
    pub port: u16,
    /// What clients are told (TURN:ADVERTISEDPORT, default TURN:PORT).
    pub advertised: u16,
    pub relay_ports: (u16, u16),
    pub tls: Option<TlsPlan>,
}

#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub port: u16,
    pub advertised: u16,
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
}

impl Plan {
    pub fn new(config: &Config, media: &MediaArgs, stun_flags: &[String]) -> Plan {
        let mut stun_servers = stun_flags.to_vec();
        // As the media server does: flags first, then the deployment's list.
        if stun_servers.is_empty()
            && let Some(list) = config.get("DEPLOYMENTS:0:STUNSERVERS")
        {
            stun_servers.extend(
                list.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
        }
        let turn = config.flag("TURN:ENABLED", true).then(|| {
            let port = config.port("TURN:PORT", 3478);
            let tls = config.get("TURN:CERTIFICATEPATH").map(|cert| {
                let port = config.port("TURN:TLSPORT", 5349);
                TlsPlan {
                    port,
                    advertised: config.port("TURN:ADVERTISEDTLSPORT", port),
                    cert: PathBuf::from(cert.trim()),
                    key: config
                        .get("TURN:PRIVATEKEYPATH")
                        .map(|k| PathBuf::from(k.trim())),
                }
            });
            TurnPlan {
                port,
                advertised: config.port("TURN:ADVERTISEDPORT", port),
                relay_ports: (
                    config.port("TURN:RELAYPORTMIN", RELAY_PORTS.0),
                    config.port("TURN:RELAYPORTMAX", RELAY_PORTS.1),
                ),
                tls,
            }
        });
        Plan {
            bind_ip: media.media_bind,
            media_ports: media.media_ports,
            workers: media
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1),
            ice_tcp: !media.no_ice_tcp,
            configured_public: media.public_ip.or_else(|| config.public_ip()),
            hostname: config
                .get("EXTERNAL:PUBLICHOSTNAME")
                .map(|h| h.trim().to_string()),
            stun_servers,
            turn,
        }
    }
}
