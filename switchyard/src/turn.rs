//! The embedded TURN server of a process that runs media (all-in-one, media-server): its
//! settings (`TURN:*`), its secret, and the ICE server URLs clients are handed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_controlplane::config::Config;
use switchyard_controlplane::ice_servers::Turn;
use switchyard_dataplane::handoff::Hub;
use switchyard_dataplane::turn::auth::Secrets;
use switchyard_dataplane::turn::policy::PeerPolicy;
use switchyard_dataplane::turn::service::{ServiceConfig, TurnService};
use switchyard_dataplane::turn::{self};
use switchyard_store::Deployment;

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
/// The secret is found as [`secrets`] says; a cluster media server that finds none runs no
/// TURN, since the gateways that hand out credentials must share it.
pub fn start(
    config: &Config,
    deployment: Option<&Deployment>,
    data_dir: Option<&Path>,
    media: Media<'_>,
) -> Result<Option<Turn>, Fatal> {
    if !config.flag("TURN:ENABLED", true) {
        tracing::info!("TURN: disabled (TURN:ENABLED=false)");
        return Ok(None);
    }
    let Some(secrets) = secrets(config, deployment, data_dir)? else {
        tracing::warn!(
            "TURN: off, since neither TURN:SECRET nor the deployment's turnSecret is set (set one; gateways and media servers must share it)"
        );
        return Ok(None);
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
    // turn: URLs carry the announced address: they need no name, and a name would put a DNS
    // lookup before the first relay candidate (Chromium in the tests' namespace does not even
    // try a UDP TURN server given by name, although it resolves it for TLS).
    let mut urls = vec![
        format!("turn:{}:{advertised}?transport=udp", host(public_ip)),
        format!("turn:{}:{advertised}?transport=tcp", host(public_ip)),
    ];
    if let Some(tls) = service.tls_addr() {
        let advertised = config.port("TURN:ADVERTISEDTLSPORT", tls.port());
        // TLS clients check the certificate against the name: turns: needs
        // EXTERNAL:PUBLICHOSTNAME (else the address, which only an IP certificate matches).
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

/// Where the TURN secret came from, which the log says so that an operator rotating it knows
/// which place to change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Setting,
    Deployment(String),
    DataDir(PathBuf),
}

/// The TURN secrets, by precedence: `TURN:SECRET` (with `TURN:PREVIOUSSECRET`), else the
/// deployment's `turnSecret` (with its `turnPreviousSecret`), else, for a process with a data
/// directory (all-in-one), one generated there (with `TURN:PREVIOUSSECRET`). `None` when
/// there is none; the source used is logged. Gateways, media servers and all-in-one all call
/// this, so they agree on the precedence.
pub fn secrets(
    config: &Config,
    deployment: Option<&Deployment>,
    data_dir: Option<&Path>,
) -> Result<Option<Secrets>, Fatal> {
    let Some((secrets, source)) = find_secrets(config, deployment, data_dir)? else {
        return Ok(None);
    };
    match source {
        Source::Setting => tracing::info!("TURN secret from TURN:SECRET"),
        Source::Deployment(id) => tracing::info!(
            "TURN secret from deployment {id:?} in the configuration store (TURN:SECRET is not set)"
        ),
        Source::DataDir(path) => tracing::info!(
            "TURN secret generated into {} (neither TURN:SECRET nor the deployment's turnSecret is set)",
            path.display()
        ),
    }
    Ok(Some(secrets))
}

fn find_secrets(
    config: &Config,
    deployment: Option<&Deployment>,
    data_dir: Option<&Path>,
) -> Result<Option<(Secrets, Source)>, Fatal> {
    let previous_setting = || {
        config
            .get("TURN:PREVIOUSSECRET")
            .map(|s| s.trim().to_string())
    };
    if let Some(secret) = config.get("TURN:SECRET") {
        let all = std::iter::once(secret.trim().to_string()).chain(previous_setting());
        return Ok(Some((Secrets::new(all), Source::Setting)));
    }
    if let Some(d) = deployment
        && let Some(secret) = &d.turn_secret
    {
        let all = std::iter::once(secret).chain(&d.turn_previous_secret);
        let secrets = Secrets::new(all.map(|s| s.expose().as_bytes()));
        return Ok(Some((secrets, Source::Deployment(d.id.clone()))));
    }
    let Some(data_dir) = data_dir else {
        return Ok(None);
    };
    let (secret, path) =
        switchyard_controlplane::dev::turn_secret(data_dir).map_err(|source| Fatal::DataDir {
            what: "TURN secret",
            dir: data_dir.to_path_buf(),
            source,
        })?;
    let all = std::iter::once(secret).chain(previous_setting());
    Ok(Some((Secrets::new(all), Source::DataDir(path))))
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

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use switchyard_dataplane::turn::auth::{self, rest_password};
    use switchyard_store::{ClusteringStrategy, Secret};

    use super::*;

    const SETTING: &str = "setting-secret-0123456789";
    const PREVIOUS_SETTING: &str = "setting-previous-0123456789";
    const DEPLOYMENT: &str = "deployment-secret-0123456789";
    const PREVIOUS_DEPLOYMENT: &str = "deployment-previous-0123456789";

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars = vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        Config::load(None, vars).unwrap()
    }

    fn deployment(secret: Option<&str>, previous: Option<&str>) -> Deployment {
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

    /// Whether credentials are minted with `secret`.
    fn signs_with(secrets: &Secrets, secret: &str) -> bool {
        let (username, password) = secrets.credential("u", 0, 60).unwrap();
        password == rest_password(secret.as_bytes(), &username)
    }

    /// Whether a credential minted with `secret` is accepted.
    fn accepts(secrets: &Secrets, secret: &str) -> bool {
        let key = auth::long_term_key("60:u", REALM, &rest_password(secret.as_bytes(), "60:u"));
        secrets.keys_for("60:u", REALM).any(|k| k == key)
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sy-turn-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_setting_wins_over_the_deployment_and_the_data_dir() {
        let dir = temp_dir();
        let c = config(&[
            ("TURN__SECRET", SETTING),
            ("TURN__PREVIOUSSECRET", PREVIOUS_SETTING),
        ]);
        let d = deployment(Some(DEPLOYMENT), Some(PREVIOUS_DEPLOYMENT));
        let (s, source) = find_secrets(&c, Some(&d), Some(&dir)).unwrap().unwrap();
        assert_eq!(source, Source::Setting);
        assert!(signs_with(&s, SETTING) && accepts(&s, PREVIOUS_SETTING));
        assert!(!accepts(&s, DEPLOYMENT) && !accepts(&s, PREVIOUS_DEPLOYMENT));
        assert!(!dir.join("turn-secret").exists(), "nothing generated");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_deployment_wins_over_the_data_dir_with_its_own_previous_secret() {
        let dir = temp_dir();
        let c = config(&[("TURN__PREVIOUSSECRET", PREVIOUS_SETTING)]);
        let d = deployment(Some(DEPLOYMENT), Some(PREVIOUS_DEPLOYMENT));
        let (s, source) = find_secrets(&c, Some(&d), Some(&dir)).unwrap().unwrap();
        assert_eq!(source, Source::Deployment("default".into()));
        assert!(signs_with(&s, DEPLOYMENT) && accepts(&s, PREVIOUS_DEPLOYMENT));
        assert!(!accepts(&s, PREVIOUS_SETTING));
        assert!(!dir.join("turn-secret").exists(), "nothing generated");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_data_dir_comes_last_and_only_where_there_is_one() {
        let dir = temp_dir();
        let c = config(&[]);
        let no_secret = deployment(None, None);
        let (s, source) = find_secrets(&c, Some(&no_secret), Some(&dir))
            .unwrap()
            .unwrap();
        let path = dir.join("turn-secret");
        assert_eq!(source, Source::DataDir(path.clone()));
        let generated = std::fs::read_to_string(&path).unwrap();
        assert!(signs_with(&s, generated.trim()));
        // A media server has no data directory: no secret, so no TURN.
        assert!(find_secrets(&c, Some(&no_secret), None).unwrap().is_none());
        assert!(find_secrets(&c, None, None).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
