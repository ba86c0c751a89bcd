//! Check 2: the TURN-over-TLS certificate (TURN:CERTIFICATEPATH). Clients check it against the
//! host in the `turns:` URL they are handed, which is EXTERNAL:PUBLICHOSTNAME (else the
//! announced IP), so it must name that host, be in date, and go with the private key.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::plan::{PUBLIC_HOSTNAME, Plan, TlsPlan};
use super::report::{Check, Fix};

/// Warn this long before expiry: enough to renew by hand.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// What the leaf certificate says, as doctor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: i64,
    pub not_after: i64,
    pub not_after_text: String,
}

/// The first certificate of a PEM chain.
pub fn leaf(pem: &[u8]) -> Result<Leaf, String> {
    let block = Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("no CERTIFICATE block in the PEM file")?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    Ok(Leaf {
        dns,
        ips,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        not_after_text: validity.not_after.to_string(),
    })
}

/// Whether a certificate name covers `host`: equal ignoring case, or a wildcard for exactly
/// one leftmost label (RFC 6125 section 6.4.3, as browsers apply it).
pub fn covers(name: &str, host: &str) -> bool {
    let (name, host) = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
    let host = host.trim_end_matches('.');
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name.trim_end_matches('.') == host,
    }
}

/// The certificate checks of `plan` as of now (none without TLS), against the hostname or
/// the `announced` addresses clients will be handed.
pub fn check_plan(plan: &Plan, announced: &[IpAddr]) -> Vec<Check> {
    let Some(tls) = plan.turn.as_ref().and_then(|t| t.tls.as_ref()) else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    check(tls, plan.hostname.as_deref(), announced, now)
}

/// The certificate checks at Unix time `now` (tests pass a fixed one).
pub fn check(tls: &TlsPlan, hostname: Option<&str>, announced: &[IpAddr], now: i64) -> Vec<Check> {
    let check = Check::named("certificate", "TLS certificate");
    let path = tls.cert.display();
    let leaf = match std::fs::read(&tls.cert)
        .map_err(|e| e.to_string())
        .and_then(|pem| leaf(&pem))
    {
        Ok(l) => l,
        Err(e) => {
            return vec![check.fail(
                format!("{path}: {e}"),
                Fix::todo("set TURN:CERTIFICATEPATH to a readable PEM certificate chain"),
            )];
        }
    };
    let mut checks = vec![validity(check, &leaf, now, &path.to_string())];
    checks.push(names(&leaf, hostname, announced));
    checks.push(key(tls));
    checks
}

fn validity(check: super::report::CheckBuilder, leaf: &Leaf, now: i64, path: &str) -> Check {
    let renew = || {
        Fix::todo(format!(
            "renew the certificate ({path}, TURN:CERTIFICATEPATH)"
        ))
    };
    if leaf.not_after < now {
        return check.fail(
            format!("{path} expired on {}", leaf.not_after_text),
            renew(),
        );
    }
    if leaf.not_before > now {
        return check.fail(
            format!("{path} is not valid yet (is the clock right?)"),
            Fix::todo("check this host's clock, or use a certificate valid now"),
        );
    }
    let days = (leaf.not_after - now) / 86_400;
    if days < EXPIRY_WARNING_DAYS {
        return check.warn(
            format!(
                "{path} expires in {days} day(s), on {}",
                leaf.not_after_text
            ),
            Some(renew()),
        );
    }
    check.pass(format!(
        "{path} is valid until {} ({days} days)",
        leaf.not_after_text
    ))
}

fn names(leaf: &Leaf, hostname: Option<&str>, announced: &[IpAddr]) -> Check {
    let check = Check::named("certificate_names", "certificate names");
    let listed: Vec<String> = leaf
        .dns
        .iter()
        .cloned()
        .chain(leaf.ips.iter().map(IpAddr::to_string))
        .collect();
    let listed = if listed.is_empty() {
        "no subject alternative names".to_string()
    } else {
        listed.join(", ")
    };
    match hostname {
        Some(host) if leaf.dns.iter().any(|n| covers(n, host)) => {
            check.pass(format!("covers {host} ({PUBLIC_HOSTNAME}); names: {listed}"))
        }
        Some(host) => check.fail(
            format!("the certificate is for {listed}, not {host} ({PUBLIC_HOSTNAME}): TURNS clients will refuse it"),
            Fix::todo(format!(
                "get a certificate for {host}, or set {PUBLIC_HOSTNAME} to a name it covers"
            )),
        ),
        None if announced.iter().all(|ip| leaf.ips.contains(ip)) && !announced.is_empty() => {
            check.pass(format!("covers the announced address(es) (no {PUBLIC_HOSTNAME}, so turns: URLs carry the IP); names: {listed}"))
        }
        None => match leaf.dns.iter().find(|n| !n.starts_with("*.")) {
            Some(name) => check.fail(
                format!("{PUBLIC_HOSTNAME} is not set, so turns: URLs carry the IP, which the certificate ({listed}) does not cover"),
                Fix::set(PUBLIC_HOSTNAME, name, "a name the certificate covers, resolving to this host"),
            ),
            None => check.fail(
                format!("{PUBLIC_HOSTNAME} is not set, so turns: URLs carry the IP, which the certificate ({listed}) does not cover"),
                Fix::todo(format!("set {PUBLIC_HOSTNAME} to this host's DNS name and get a certificate for it")),
            ),
        },
    }
}

/// The key must exist and belong to the certificate; rustls checks both when it builds the
/// configuration the TURN server would build.
fn key(tls: &TlsPlan) -> Check {
    let check = Check::named("certificate_key", "certificate key");
    let Some(key_path) = &tls.key else {
        return check.fail(
            "TURN:PRIVATEKEYPATH is not set: the TLS listener cannot start",
            Fix::todo("set TURN:PRIVATEKEYPATH to the certificate's PEM private key"),
        );
    };
    match server_config(&tls.cert, key_path) {
        Ok(()) => check.pass(format!("{} goes with the certificate", key_path.display())),
        Err(e) => check.fail(
            format!("{}: {e}", key_path.display()),
            Fix::todo("set TURN:PRIVATEKEYPATH to the private key of the certificate at TURN:CERTIFICATEPATH"),
        ),
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::super::report::Status;
    use super::*;

    fn self_signed(names: &[&str], days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
        params.not_after = (now + std::time::Duration::from_secs((days * 86_400) as u64)).into();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn plan(names: &[&str], days: i64) -> TlsPlan {
        let dir = std::env::temp_dir().join(format!(
            "doctor-cert-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed(names, days);
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsPlan {
            port: 5349,
            advertised: 5349,
            cert: dir.join("cert.pem"),
            key: Some(dir.join("key.pem")),
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("media.example.com", "MEDIA.example.com"));
        assert!(covers("*.example.com", "media.example.com"));
        assert!(!covers("*.example.com", "a.media.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("media.example.com", "other.example.com"));
    }

    #[test]
    fn names_dates_and_key() {
        let ip: IpAddr = "203.0.113.20".parse().unwrap();
        let good = plan(&["media.example.test", "203.0.113.20"], 90);
        let checks = check(&good, Some("media.example.test"), &[ip], now());
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );
        // No hostname: the turns: URL carries the IP, which this certificate covers.
        let checks = check(&good, None, &[ip], now());
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );

        let checks = check(&good, Some("other.example.test"), &[ip], now());
        assert_eq!(checks[1].status, Status::Fail);

        let soon = plan(&["media.example.test"], 5);
        assert_eq!(
            check(&soon, Some("media.example.test"), &[ip], now())[0].status,
            Status::Warn
        );
        // Seen a year on, it has expired.
        let later = now() + 365 * 86_400;
        assert_eq!(
            check(&good, Some("media.example.test"), &[ip], later)[0].status,
            Status::Fail
        );
        // Without a hostname and without the IP in it, the fix names a hostname it covers.
        let named = plan(&["media.example.test"], 90);
        let c = &check(&named, None, &[ip], now())[1];
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_ref().unwrap().value.as_deref(),
            Some("media.example.test")
        );

        // Another certificate's key does not go with it.
        let mut mismatched = good.clone();
        mismatched.key = named.key.clone();
        assert_eq!(
            check(&mismatched, Some("media.example.test"), &[ip], now())[2].status,
            Status::Fail
        );
        let garbage = TlsPlan {
            cert: mismatched.key.clone().unwrap(),
            ..good
        };
        assert_eq!(check(&garbage, None, &[ip], now())[0].status, Status::Fail);
    }
}
