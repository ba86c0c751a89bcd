//! What a client transport needs from the other side's SDP: ICE credentials, the DTLS fingerprint and
//! one candidate address to send to.

use std::net::SocketAddr;

use crate::dtls::Fingerprint;
use crate::ice::Credentials;
use crate::sdp::SessionDescription;

/// The remote end of a transport.
#[derive(Debug, Clone)]
pub struct Remote {
    pub ice: Credentials,
    pub fingerprint: Fingerprint,
    pub address: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the SDP does not parse: {0}")]
    Sdp(String),
    #[error("the SDP has no {0}")]
    Missing(&'static str),
    #[error("bad fingerprint in the SDP: {0}")]
    Fingerprint(String),
}

/// Reads the remote end out of an answer or offer: ice-ufrag, ice-pwd and fingerprint from the
/// first active m-line that has them (else the session level), and its first UDP IPv4
/// candidate for component 1. Switchyard and Janus (which half-trickles) both put their
/// candidates in the SDP.
pub fn parse(sdp: &str) -> Result<Remote, Error> {
    let sd = SessionDescription::parse(sdp).map_err(|e| Error::Sdp(e.to_string()))?;
    let attrs = || {
        sd.media
            .iter()
            .filter(|m| m.port != 0)
            .flat_map(|m| &m.attributes)
            .chain(&sd.attributes)
    };
    let find = |name: &'static str| {
        attrs()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
            .ok_or(Error::Missing(name))
    };
    let ice = Credentials {
        ufrag: find("ice-ufrag")?.to_string(),
        pwd: find("ice-pwd")?.to_string(),
    };
    let fingerprint = find("fingerprint")?
        .parse()
        .map_err(|e| Error::Fingerprint(format!("{e}")))?;
    let address = attrs()
        .filter(|a| a.name == "candidate")
        .filter_map(|a| a.value.as_deref())
        .find_map(udp_ipv4_candidate)
        .ok_or(Error::Missing("UDP IPv4 candidate"))?;
    Ok(Remote {
        ice,
        fingerprint,
        address,
    })
}

/// `foundation component transport priority address port typ ...`: component 1, UDP, IPv4.
fn udp_ipv4_candidate(value: &str) -> Option<SocketAddr> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    match parts.as_slice() {
        [_, "1", transport, _, address, port, "typ", ..]
            if transport.eq_ignore_ascii_case("udp") =>
        {
            let ip: std::net::Ipv4Addr = address.parse().ok()?;
            Some(SocketAddr::from((ip, port.parse().ok()?)))
        }
        _ => None,
    }
}

// ok: the unwrap()/expect() calls below are test-only, on SDP the tests wrote
#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=ice-lite\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n\
        a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
        a=candidate:1 1 UDP 2130706431 ::1 5000 typ host\r\n\
        a=candidate:2 1 UDP 2130706431 127.0.0.1 49152 typ host\r\n\
        a=rtpmap:96 VP8/90000\r\n";

    /// Janus 1.1.2's answer to a publisher offer with `a=setup:active` (trimmed).
    const JANUS_ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=VideoRoom 1234\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 F8:AE:26:AF:B5:05:12:E5:50:A1:A8:CA:4F:0E:53:87:1C:CA:F3:F3:10:6C:37:7B:17:4C:49:B4:28:21:E4:7F\r\n\
a=msid-semantic: WMS *\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\na=recvonly\r\na=mid:0\r\na=rtcp-mux\r\n\
a=ice-ufrag:2pIh\r\na=ice-pwd:9sLXawT9d0ukjQdkBKcnKa\r\na=ice-options:trickle\r\na=setup:passive\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=candidate:2 1 tcp 1015023359 127.0.0.2 9 typ host tcptype active\r\n\
a=candidate:3 1 udp 2015363839 ::2 4000 typ host\r\n\
a=candidate:1 1 udp 2015363839 127.0.0.2 47928 typ host\r\na=end-of-candidates\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=recvonly\r\na=mid:1\r\na=rtcp-mux\r\n\
a=ice-ufrag:2pIh\r\na=ice-pwd:9sLXawT9d0ukjQdkBKcnKa\r\na=setup:passive\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn reads_janus_sdp() {
        let t = parse(JANUS_ANSWER).unwrap();
        assert_eq!(t.ice.ufrag, "2pIh");
        assert_eq!(t.ice.pwd, "9sLXawT9d0ukjQdkBKcnKa");
        assert_eq!(t.address, "127.0.0.2:47928".parse().unwrap());
        assert!(t.fingerprint.to_string().starts_with("sha-256 F8:AE:26"));
        let no_candidate: String = JANUS_ANSWER
            .lines()
            .filter(|l| !l.starts_with("a=candidate:1 "))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(&no_candidate).unwrap_err();
        assert!(e.to_string().contains("UDP IPv4 candidate"), "{e}");
    }

    #[test]
    fn reads_credentials_fingerprint_and_ipv4_candidate() {
        let r = parse(ANSWER).unwrap();
        assert_eq!(r.ice.ufrag, "abcd");
        assert_eq!(r.address, "127.0.0.1:49152".parse().unwrap());
        assert!(parse(&ANSWER.replace("a=ice-pwd", "a=x")).is_err());
        assert!(parse("garbage").is_err());
    }
}
