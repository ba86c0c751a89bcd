//! Who may use a listener: the IP addresses and CIDR ranges of `ADMIN:IPADDRESSES` and the other
//! `*:IPADDRESSES` settings.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of addresses and ranges. Addresses arriving IPv4-mapped on a dual-stack socket
/// (`::ffff:10.1.2.3`) match IPv4 ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Parses a comma- or space-separated list such as `10.0.0.0/8, 192.0.2.7, ::1`.
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let nets = list
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "{item:?} is not an IP address or CIDR range; expected e.g. 10.0.0.0/8,192.0.2.7"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { nets })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_ranges_and_mapped_ipv4() {
        let a = AllowList::parse("10.0.0.0/8, 192.0.2.7 2001:db8::/32").unwrap();
        assert!(a.allows(ip("10.200.3.4")));
        assert!(a.allows(ip("192.0.2.7")));
        assert!(!a.allows(ip("192.0.2.8")));
        assert!(a.allows(ip("2001:db8::5")));
        assert!(a.allows(ip("::ffff:10.1.2.3")));
        assert!(!a.allows(ip("11.0.0.1")));
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("example.com").is_err());
        assert!(!AllowList::parse("").unwrap().allows(ip("127.0.0.1")));
    }
}
