//! Check 1 with a running server (`--server URL`): its ports are taken, so instead of binding
//! them doctor reads what the server reports at `/api/listeners` and checks that.

use std::time::Duration;

use switchyard_controlplane::listeners::Listeners;

use super::listeners::list_ports;
use super::plan::{PUBLIC_IP, Plan};
use super::report::{Check, Fix};

pub async fn fetch(base: &str, timeout: Duration) -> Result<Listeners, String> {
    let url = format!("{}/api/listeners", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "{url} answered {} (a switchyard all-in-one serves it; older versions do not)",
            response.status()
        ));
    }
    response
        .json::<Listeners>()
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// A `turn:`/`turns:` URL's scheme, host, port and transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub tcp: bool,
}

pub fn parse_url(url: &str) -> Option<TurnUrl> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("turns:") {
        (true, r)
    } else {
        (false, url.strip_prefix("turn:")?)
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = authority.rsplit_once(':')?;
    let tcp = secure || query.split('&').any(|kv| kv == "transport=tcp");
    Some(TurnUrl {
        secure,
        host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port: port.parse().ok()?,
        tcp,
    })
}

/// The checks of what a server reports against `plan`; `who` names the server in messages
/// ("at http://...", or "(this process)" when a server checks itself at start).
pub fn checks(who: &str, l: &Listeners, plan: &Plan) -> Vec<Check> {
    let media: Vec<u16> = l.media.iter().map(|a| a.port()).collect();
    let announce: Vec<String> = l.announce.iter().map(|ip| ip.to_string()).collect();
    let mut out = Vec::new();
    let turn = match &l.turn {
        Some(t) => format!(
            "TURN {}/udp, {}/tcp{}",
            t.udp.port(),
            t.tcp.port(),
            t.tls
                .map(|a| format!(", {}/tcp (TLS)", a.port()))
                .unwrap_or_default()
        ),
        None => "no TURN".to_string(),
    };
    let summary = format!(
        "switchyard {} {who}: media {} {} on {}, {turn}, announcing {}",
        l.version,
        if l.ice_tcp { "UDP and TCP" } else { "UDP" },
        list_ports(&media),
        l.media
            .first()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        announce.join(", ")
    );
    let check = Check::named("server", "running server");
    out.push(if l.turn.is_none() && plan.turn.is_some() {
        check.warn(
            format!("{summary}: it runs without TURN, so clients behind UDP-blocking firewalls cannot connect"),
            Some(Fix::todo("start it with TURN (TURN:ENABLED unset or true, and TURN:SECRET or the deployment's turnSecret set)")),
        )
    } else {
        check.pass(summary)
    });
    if let Some(c) = plan.configured_public
        && !l.announce.contains(&c)
    {
        out.push(Check::named("server_settings", "server settings").warn(
            format!(
                "the settings doctor read say {PUBLIC_IP}={c}, but the server announces {}: it runs with other settings",
                announce.join(", ")
            ),
            Some(Fix::todo("restart the server with the settings doctor reads (same config file and environment)")),
        ));
    }
    if let Some(t) = &l.turn {
        let mut forwarded = Vec::new();
        for url in &t.urls {
            let Some(u) = parse_url(url) else { continue };
            let listening = match (u.secure, u.tcp) {
                (true, _) => t.tls.map(|a| a.port()),
                (false, true) => Some(t.tcp.port()),
                (false, false) => Some(t.udp.port()),
            };
            if let Some(p) = listening
                && p != u.port
            {
                forwarded.push(format!("{url} but listening on {p}"));
            }
        }
        let check = Check::named("turn_advertised_ports", "advertised ports");
        out.push(if forwarded.is_empty() {
            check.pass(format!("clients are handed {}", t.urls.join(" ")))
        } else {
            check.warn(
                format!(
                    "clients are handed {}: a load balancer or NAT must forward them (--probe-turn checks it)",
                    forwarded.join("; ")
                ),
                Some(Fix::todo(
                    "forward the advertised ports to the listening ones, or unset TURN:ADVERTISEDPORT/TURN:ADVERTISEDTLSPORT",
                )),
            )
        });
    }
    out
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls() {
        assert_eq!(
            parse_url("turn:203.0.113.20:3478?transport=udp"),
            Some(TurnUrl {
                secure: false,
                host: "203.0.113.20".into(),
                port: 3478,
                tcp: false
            })
        );
        assert_eq!(
            parse_url("turn:203.0.113.20:443?transport=tcp").map(|u| (u.port, u.tcp)),
            Some((443, true))
        );
        assert_eq!(
            parse_url("turns:media.example.test:5349?transport=tcp").map(|u| (u.secure, u.host)),
            Some((true, "media.example.test".into()))
        );
        assert_eq!(
            parse_url("turn:[2001:db8::1]:3478").map(|u| u.host),
            Some("2001:db8::1".into())
        );
        assert_eq!(parse_url("stun:x:1"), None);
    }
}
