//! Which peers an allocation may reach.
//!
//! An open relay is a way into the network it runs in: a client could ask it to send to the
//! loopback admin API, Redis on a private address, or the cloud metadata service. So peers in
//! special-purpose ranges are refused (403) unless configured otherwise, including the
//! unspecified addresses 0.0.0.0 and [::], which the kernel treats as "this host"
//! (CVE-2020-26262). Two exceptions keep WebRTC working: the media server's own media sockets
//! (exact address and port, never another port on the same address) and the relayed addresses
//! of this server's own allocations (two clients relaying to each other).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

/// Ranges refused by default: loopback, RFC 1918 and unique-local private, link-local,
/// multicast, CGNAT, unspecified, broadcast and reserved, the IETF protocol assignments and
/// benchmarking ranges; IPv4-mapped and NAT64 forms are checked as the IPv4 address.
const DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    // ::/96 holds :: and ::1 and the deprecated IPv4-compatible addresses.
    "::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// A peer address the policy refused, and why (for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In a special-purpose range refused by default.
    SpecialRange,
    /// In a configured deny list.
    Denied,
}

#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// Let peers on 127.0.0.0/8 and ::1 through (tests, single-host set-ups).
    pub allow_loopback: bool,
    /// Ranges allowed although special (e.g. a private network the relay serves); checked
    /// after `deny`.
    pub allow: Vec<IpNet>,
    /// Ranges refused although public.
    pub deny: Vec<IpNet>,
    /// The media server's own media sockets: always allowed, exact address and port.
    pub own_media: Vec<SocketAddr>,
    special: Vec<IpNet>,
}

impl Default for PeerPolicy {
    fn default() -> PeerPolicy {
        PeerPolicy::new(false, Vec::new(), Vec::new(), Vec::new())
    }
}

impl PeerPolicy {
    pub fn new(
        allow_loopback: bool,
        allow: Vec<IpNet>,
        deny: Vec<IpNet>,
        own_media: Vec<SocketAddr>,
    ) -> PeerPolicy {
        let special = DENIED
            .iter()
            .filter_map(|net| net.parse::<IpNet>().ok())
            .collect();
        PeerPolicy {
            allow_loopback,
            allow,
            deny,
            own_media,
            special,
        }
    }

    /// Whether an allocation may send to `peer`. `own_relay` says whether `peer` is the relayed
    /// address of one of this server's allocations (the caller knows its relay sockets).
    pub fn check(&self, peer: SocketAddr, own_relay: bool) -> Result<(), Refusal> {
        let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
        if self.own_media.contains(&peer) || own_relay {
            return Ok(());
        }
        let ip = peer.ip();
        // Port 0 reaches nothing legitimate.
        if peer.port() == 0 || self.deny.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Denied);
        }
        if self.allow.iter().any(|n| n.contains(&ip)) || (self.allow_loopback && ip.is_loopback()) {
            return Ok(());
        }
        if self.special.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::SpecialRange);
        }
        Ok(())
    }
}

/// IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible forms as the IPv4 address they reach, so
/// `::ffff:127.0.0.1` cannot slip past the loopback rule.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    // NAT64's well-known prefix 64:ff9b::/96 carries an IPv4 address too.
    if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    ip
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_refused() {
        let p = PeerPolicy::default();
        for peer in [
            "127.0.0.1:80",
            "0.0.0.0:6379",
            "[::]:6379",
            "[::1]:80",
            "10.1.2.3:5432",
            "172.20.0.1:1",
            "192.168.1.1:1",
            "169.254.169.254:80",
            "100.64.0.1:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "[fe80::1]:1",
            "[fd00::1]:1",
            "[ff02::1]:1",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:10.0.0.1]:80",
            "[64:ff9b::a00:1]:80",
        ] {
            assert_eq!(
                p.check(a(peer), false),
                Err(Refusal::SpecialRange),
                "{peer}"
            );
        }
        assert_eq!(p.check(a("203.0.113.5:3478"), false), Ok(()));
        assert_eq!(p.check(a("[2001:db8::1]:3478"), false), Ok(()));
        assert_eq!(p.check(a("203.0.113.5:0"), false), Err(Refusal::Denied));
    }

    #[test]
    fn exceptions_and_settings() {
        let own = a("10.0.0.5:40000");
        let p = PeerPolicy::new(false, vec![], vec![], vec![own]);
        assert_eq!(p.check(own, false), Ok(()));
        // Another port on the media server's address (Redis, the admin API) stays refused.
        assert!(p.check(a("10.0.0.5:6379"), false).is_err());
        assert_eq!(p.check(a("10.0.0.9:50000"), true), Ok(()));

        let p = PeerPolicy::new(true, vec![], vec![], vec![]);
        assert_eq!(p.check(a("127.0.0.1:9"), false), Ok(()));
        assert_eq!(p.check(a("[::ffff:127.0.0.1]:9"), false), Ok(()));
        assert!(p.check(a("10.0.0.1:9"), false).is_err());

        let p = PeerPolicy::new(
            false,
            vec!["10.0.0.0/8".parse().unwrap()],
            vec![
                "10.9.0.0/16".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
            ],
            vec![],
        );
        assert_eq!(p.check(a("10.1.0.1:9"), false), Ok(()));
        assert_eq!(p.check(a("10.9.0.1:9"), false), Err(Refusal::Denied));
        assert_eq!(p.check(a("198.51.100.7:9"), false), Err(Refusal::Denied));
    }
}
