//! What a transport needs from the other side's SDP: ICE credentials, the DTLS fingerprint and
//! one candidate address to send to.

use std::net::SocketAddr;

use switchyard_dataplane::dtls::Fingerprint;
use switchyard_dataplane::ice::Credentials;
use switchyard_dataplane::sdp::SessionDescription;

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

/// Reads the remote end out of an answer (or offer): the first UDP IPv4 host candidate.
pub fn parse(sdp: &str) -> Result<Remote, Error> {
    let sd = SessionDescription::parse(sdp).map_err(|e| Error::Sdp(e.to_string()))?;
    let attr = |name: &'static str| {
        sd.attributes
            .iter()
            .chain(sd.media.iter().flat_map(|m| &m.attributes))
            .filter(move |a| a.name == name)
            .filter_map(|a| a.value.as_deref())
    };
    let ufrag = attr("ice-ufrag")
        .next()
        .ok_or(Error::Missing("ice-ufrag"))?;
    let pwd = attr("ice-pwd").next().ok_or(Error::Missing("ice-pwd"))?;
    let fingerprint = attr("fingerprint")
        .next()
        .ok_or(Error::Missing("fingerprint"))?
        .parse()
        .map_err(|e| Error::Fingerprint(format!("{e}")))?;
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    let address = attr("candidate")
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            if f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
                return None;
            }
            format!("{}:{}", f[4], f[5])
                .parse::<SocketAddr>()
                .ok()
                .filter(SocketAddr::is_ipv4)
        })
        .next()
        .ok_or(Error::Missing("UDP IPv4 candidate"))?;
    Ok(Remote {
        ice: Credentials {
            ufrag: ufrag.to_string(),
            pwd: pwd.to_string(),
        },
        fingerprint,
        address,
    })
}

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

    #[test]
    fn reads_credentials_fingerprint_and_ipv4_candidate() {
        let r = parse(ANSWER).unwrap();
        assert_eq!(r.ice.ufrag, "abcd");
        assert_eq!(r.address, "127.0.0.1:49152".parse().unwrap());
        assert!(parse(&ANSWER.replace("a=ice-pwd", "a=x")).is_err());
        assert!(parse("garbage").is_err());
    }
}
