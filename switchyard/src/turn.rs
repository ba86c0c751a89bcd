//! The embedded TURN server of a process that runs media (all-in-one, media-server): its
//! settings (`TURN:*`), its secret, and the ICE server URLs clients are handed.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_controlplane::config::Config;
use switchyard_controlplane::ice_servers::Turn;
use switchyard_dataplane::handoff::Hub;
use switchyard_dataplane::turn::auth::Secrets;
use switchyard_dataplane::turn::policy::PeerPolicy;
use switchyard_dataplane::turn::service::{ServiceConfig, TurnService};
use switchyard_dataplane::turn::{self};

use crate::Fatal;

/// The realm in every challenge; clients take it from the 401, so its value is cosmetic.
const REALM: &str = "switchyard";
/// Relay ports when TURN:RELAYPORTMIN/MAX are not set: below the media range (49152-65535).
const RELAY_PORTS: (u16, u16) = (40000, 49151);

/// Where the media server's sockets are, which allocations may always reach.
pub struct Media<'a> {
    pub bind_ip: IpAddr,
    pub announced: &'a [IpAddr],
    pub ports: &'a [u16],
    pub workers: usize,
    /// Where allocations whose peer is one of these sockets cross in-process.
    pub handoff: Option<Arc<Hub>>,
}

/// Starts TURN unless `TURN:ENABLED=false`. Every listener is bound before this returns, so
/// a taken port stops the process at start with the setting to change.
///
/// Without `TURN:SECRET`, a process with a data directory (all-in-one) generates one there; a
/// cluster media server has none and runs no TURN, since the gateways that hand out
/// credentials must share the secret.
pub fn start(
    config: &Config,
    data_dir: Option<&Path>,
    media: Media<'_>,
) -> Result<Option<Turn>, Fatal> {
    if !config.flag("TURN:ENABLED", true) {
        tracing::info!("TURN: disabled (TURN:ENABLED=false)");
        return Ok(None);
    }
    let secrets = match configured_secrets(config) {
        Some(s) => s,
        None => {
            let Some(data_dir) = data_dir else {
                tracing::warn!(
                    "TURN: off, since TURN:SECRET is not set (set the same TURN:SECRET on gateways and media servers)"
                );
                return Ok(None);
            };
            let (secret, path) =
                switchyard_controlplane::dev::turn_secret(data_dir).map_err(|source| {
                    Fatal::DataDir {
                        what: "TURN secret",
                        dir: data_dir.to_path_buf(),
                        source,
                    }
                })?;
            tracing::info!(
                "TURN secret (TURN:SECRET is not set) is in {}",
                path.display()
            );
            with_previous(config, secret)
        }
    };

    let own_media: Vec<SocketAddr> = media
        .announced
        .iter()
        .chain(std::iter::once(&media.bind_ip).filter(|ip| !ip.is_unspecified()))
        .flat_map(|ip| media.ports.iter().map(|p| SocketAddr::new(*ip, *p)))
        .collect();
    let nets = |name: &'static str| -> Result<Vec<ipnet::IpNet>, Fatal> {
        let Some(list) = config.get(name) else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| Fatal::TurnSetting {
                        setting: name,
                        problem: format!("{s:?} is not an address or CIDR range"),
                    })
            })
            .collect()
    };
    let mut server = turn::Config::new(REALM, secrets.clone());
    server.policy = PeerPolicy::new(
        config.flag("TURN:ALLOWLOOPBACKPEERS", false),
        nets("TURN:ALLOWPEERS")?,
        nets("TURN:DENYPEERS")?,
        own_media,
    );
    if let Some(n) = config.count("TURN:USERQUOTA") {
        server.user_quota = n as usize;
    }
    if let Some(s) = config.count("TURN:MAXLIFETIME") {
        server.max_lifetime = Duration::from_secs(s);
    }
    server.bandwidth = config.count("TURN:BANDWIDTH");

    let relay_ports = (
        config.port("TURN:RELAYPORTMIN", RELAY_PORTS.0),
        config.port("TURN:RELAYPORTMAX", RELAY_PORTS.1),
    );
    if relay_ports.0 > relay_ports.1 {
        return Err(Fatal::TurnSetting {
            setting: "TURN:RELAYPORTMIN",
            problem: format!(
                "{} is above TURN:RELAYPORTMAX {}",
                relay_ports.0, relay_ports.1
            ),
        });
    }
    let public_ip = media
        .announced
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(media.announced.first())
        .copied()
        .unwrap_or(media.bind_ip);
    let tls = tls_config(config)?;
    let port = config.port("TURN:PORT", 3478);
    let tls_port = config.port("TURN:TLSPORT", 5349);
    let service = TurnService::start(ServiceConfig {
        threads: media.workers,
        bind_ip: media.bind_ip,
        port,
        tls: tls.map(|t| (tls_port, t)),
        relay_bind_ip: media.bind_ip,
        relay_public_ip: public_ip,
        relay_ports: relay_ports.0..=relay_ports.1,
        pin: Some(0),
        server,
        handoff: media.handoff,
    })
    .map_err(|source| Fatal::Turn { port, source })?;

    let advertised = config.port("TURN:ADVERTISEDPORT", service.udp_addr().port());
    let mut urls = vec![
        format!("turn:{}:{advertised}?transport=udp", host(public_ip)),
        format!("turn:{}:{advertised}?transport=tcp", host(public_ip)),
    ];
    if let Some(tls) = service.tls_addr() {
        let advertised = config.port("TURN:ADVERTISEDTLSPORT", tls.port());
        // TLS clients check the certificate against the name, so turns: needs the hostname.
        let name = config
            .get("EXTERNAL:PUBLICHOSTNAME")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|| host(public_ip));
        urls.push(format!("turns:{name}:{advertised}?transport=tcp"));
    }
    tracing::info!(
        "TURN: UDP+TCP {}{}, relay ports {}-{} on {public_ip}; clients get {urls:?}",
        service.udp_addr(),
        service
            .tls_addr()
            .map(|a| format!(", TLS {a}"))
            .unwrap_or_default(),
        relay_ports.0,
        relay_ports.1,
    );
    Ok(Some(Turn::new(Arc::new(service), secrets, urls)))
}

/// `TURN:SECRET` (with `TURN:PREVIOUSSECRET`), as media servers and gateways read it.
pub fn configured_secrets(config: &Config) -> Option<Secrets> {
    config
        .get("TURN:SECRET")
        .map(|s| with_previous(config, s.trim().to_string()))
}

/// `secret` and, during a rotation, `TURN:PREVIOUSSECRET`.
fn with_previous(config: &Config, secret: String) -> Secrets {
    let previous = config
        .get("TURN:PREVIOUSSECRET")
        .map(|s| s.trim().to_string());
    Secrets::new(std::iter::once(secret).chain(previous))
}

/// An IP as it goes in a URL (IPv6 in brackets).
fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The TLS listener's configuration when TURN:CERTIFICATEPATH is set.
fn tls_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, Fatal> {
    let Some(cert_path) = config.get("TURN:CERTIFICATEPATH") else {
        return Ok(None);
    };
    let bad = |setting: &'static str, problem: String| Fatal::TurnSetting { setting, problem };
    let key_path = config.get("TURN:PRIVATEKEYPATH").ok_or_else(|| {
        bad(
            "TURN:PRIVATEKEYPATH",
            "must be set with TURN:CERTIFICATEPATH".into(),
        )
    })?;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path.trim())
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("TURN:CERTIFICATEPATH", format!("{cert_path}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key_path.trim())
        .map_err(|e| bad("TURN:PRIVATEKEYPATH", format!("{key_path}: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| bad("TURN:CERTIFICATEPATH", e.to_string()))?;
    Ok(Some(Arc::new(tls)))
}
