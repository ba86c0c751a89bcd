//! SIP trunks and SIP mappings: the providers the SIP connector registers with and calls out
//! through (deployment-wide), and which channel an incoming call joins (per application). Here
//! are the checks each passes before it is stored, and [`route`], the choice of a mapping for a
//! call: pure, so that the connector routes from the cached snapshot without a query per call
//! and keeps routing while the database is away.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::channel_match::wildcard;
use super::records::ConfigError;
use super::secret::Secret;

/// The longest channel id in bytes, as the rest of Switchyard takes them (the dev token's
/// `channel`).
pub const MAX_CHANNEL_LEN: usize = 200;

/// What a mapping's channel id has in place of the value its pattern matched.
pub const MATCH_PLACEHOLDER: &str = "{match}";

/// The most a regex pattern may compile to. Patterns come from administrators, but one that
/// blows up (nested counted repetitions) would slow every call's routing, so it is refused.
const REGEX_SIZE_LIMIT: usize = 1 << 16;

/// How SIP messages travel to and from a trunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl SipTransport {
    /// The name stored in the database, the same as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [SipTransport::Udp, SipTransport::Tcp, SipTransport::Tls]
            .into_iter()
            .find(|t| t.as_str() == name)
    }
}

/// A SIP provider's account, shared by the whole deployment: where calls come from and go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SipTrunk {
    /// Names the trunk: a `PUT` with the same name replaces it. Optional in a request body:
    /// the admin API takes it from the path.
    #[serde(default)]
    pub name: String,
    /// The provider's host or `host:port` (an IPv6 address in brackets), without `sip:` or a
    /// user.
    pub domain: String,
    #[serde(default)]
    pub transport: SipTransport,
    /// Whether the connector REGISTERs with the provider (and refreshes it), for providers that
    /// send calls only to a registered contact. Needs `username`.
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// The digest password. The admin API and the audit log show it as [`crate::MASKED`]; a
    /// write without one (or with the placeholder) keeps the stored one, and `""` removes it.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The digest user name when the provider's differs from `username`.
    #[serde(default)]
    pub authorization_id: Option<String>,
    /// Where requests are sent instead of `domain`'s address, `host[:port]`.
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// The `From` user of calls out when the caller gives none.
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Whether calls out may go through this trunk: dial-out takes the first such, by name
    /// (see [`outbound_trunk`]).
    #[serde(default)]
    pub can_terminate: bool,
    /// A disabled trunk is kept but neither registers nor carries calls.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl SipTrunk {
    /// Checks the trunk and tidies it: host names trimmed, empty optional fields none.
    pub fn normalize(&mut self) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::SipTrunk {
            trunk: self.name.clone(),
            why,
        };
        if self.name.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "a SIP trunk's name",
            });
        }
        if self.name.chars().any(char::is_control) {
            return Err(bad("its name must not hold control characters".into()));
        }
        self.domain = self.domain.trim().to_string();
        parse_host_port(&self.domain).map_err(|why| bad(format!("domain: {why}")))?;
        for (field, value) in [
            ("username", &mut self.username),
            ("authorizationId", &mut self.authorization_id),
            ("outboundProxy", &mut self.outbound_proxy),
            ("callerId", &mut self.caller_id),
        ] {
            *value = value.take().filter(|v| !v.trim().is_empty());
            // These go into SIP headers: a space or a line break would end the header early and
            // let the rest be read as headers of its own.
            if let Some(v) = value.as_mut() {
                *v = v.trim().to_string();
                if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad(format!(
                        "{field} must not hold spaces or control characters"
                    )));
                }
            }
        }
        if let Some(proxy) = &self.outbound_proxy {
            parse_host_port(proxy).map_err(|why| bad(format!("outboundProxy: {why}")))?;
        }
        if self.register && self.username.is_none() {
            return Err(bad("register needs a username".into()));
        }
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.expose().chars().any(char::is_control))
        {
            return Err(bad("password must not hold control characters".into()));
        }
        Ok(())
    }

    /// This trunk as the admin API shows it and the audit log records it: its password, when
    /// set, as the placeholder.
    pub fn masked(&self) -> SipTrunk {
        SipTrunk {
            password: self.password.as_ref().map(|_| Secret::masked()),
            ..self.clone()
        }
    }

    /// Whether a write of this trunk keeps the stored password: it carries none, or the
    /// placeholder a read showed.
    pub fn keeps_password(&self) -> bool {
        self.password.as_ref().is_none_or(Secret::is_masked)
    }

    /// The provider's host (an IPv6 address without its brackets) and port, if `domain` names
    /// one.
    pub fn host_port(&self) -> Result<(&str, Option<u16>), &'static str> {
        parse_host_port(&self.domain)
    }
}

/// The trunk calls out go through: the first by name that is enabled and may terminate calls.
pub fn outbound_trunk(trunks: &[SipTrunk]) -> Option<&SipTrunk> {
    trunks
        .iter()
        .filter(|t| t.enabled && t.can_terminate)
        .min_by(|a, b| a.name.cmp(&b.name))
}

/// Splits `host[:port]` (`[v6]:port` for an IPv6 address) into the host, without brackets,
/// and the port; or says why it is not one.
pub fn parse_host_port(value: &str) -> Result<(&str, Option<u16>), &'static str> {
    if value.is_empty() {
        return Err("it must not be empty");
    }
    let lower = value.to_ascii_lowercase();
    if lower.contains("://") || lower.starts_with("sip:") || lower.starts_with("sips:") {
        return Err("give host or host:port, without a scheme (sip:)");
    }
    if value.contains('@') {
        return Err("give host or host:port, without a user (that is username)");
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "not an IPv6 address in the brackets")?;
        match after {
            "" => (v6, None),
            _ => (
                v6,
                Some(after.strip_prefix(':').ok_or("expected :port after ]")?),
            ),
        }
    } else {
        match value.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("an IPv6 address must be in brackets, [2001:db8::1]:5060");
            }
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if !value.starts_with('[') && !is_host_name(host) {
        return Err("not a host name or IPv4 address");
    }
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err("the port must be 1 to 65535"),
            Ok(p) => Ok(p),
        })
        .transpose()?;
    Ok((host, port))
}

/// A DNS name (letters, digits and hyphens in dot-separated labels) or an IPv4 address, which
/// is made of the same characters.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What part of an incoming INVITE a mapping looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipMatch {
    /// The Request-URI's user part: the number that was dialled, as the provider sends it.
    #[default]
    Number,
    /// The `To` URI's user part.
    Extension,
    /// The value of the header the mapping names (`X-Room`, say).
    Header,
}

impl SipMatch {
    /// The name stored in the database, the same as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SipMatch::Number => "number",
            SipMatch::Extension => "extension",
            SipMatch::Header => "header",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [SipMatch::Number, SipMatch::Extension, SipMatch::Header]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// Which channel of an application the incoming calls that match go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SipMapping {
    /// Optional in a request body: the admin API takes it from the path.
    #[serde(default)]
    pub application_id: String,
    /// Names the mapping within its application: a `PUT` with the same name replaces it.
    #[serde(default)]
    pub name: String,
    /// Mappings are tried lowest first, across all applications (ties: by application id,
    /// then name).
    #[serde(default)]
    pub position: i32,
    #[serde(default)]
    pub kind: SipMatch,
    /// The header whose value is matched; given exactly when `kind` is `header`. Its name is
    /// compared without regard to case, as SIP's are.
    #[serde(default)]
    pub header: Option<String>,
    /// A glob, compared without regard to case: `*` matches any run of characters, `?` one
    /// character, anything else itself. Starting with `^`, a regular expression instead
    /// (`regex` crate syntax; anchor the end with `$` too to match the whole value).
    pub pattern: String,
    /// The channel the call joins; [`MATCH_PLACEHOLDER`] stands for the matched value, so that
    /// pattern `*` with channel `{match}` gives each number its own channel.
    pub channel_id: String,
}

/// A compiled pattern.
enum Matcher {
    /// The pattern's characters, lowercased.
    Glob(Vec<char>),
    Regex(Regex),
}

impl Matcher {
    fn new(pattern: &str) -> Result<Matcher, String> {
        if pattern.starts_with('^') {
            RegexBuilder::new(pattern)
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Matcher::Regex)
                .map_err(|e| format!("pattern is not a valid regular expression: {e}"))
        } else {
            Ok(Matcher::Glob(pattern.to_lowercase().chars().collect()))
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Glob(pattern) => {
                let value: Vec<char> = value.to_lowercase().chars().collect();
                wildcard(pattern, &value, '*', Some('?'))
            }
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

impl SipMapping {
    /// Checks the mapping: names and pattern not empty, a header exactly for `kind: header`
    /// (a SIP token), a regex pattern that compiles, a channel id Switchyard accepts.
    pub fn normalize(&mut self) -> Result<(), ConfigError> {
        if self.application_id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "a SIP mapping's application id",
            });
        }
        if self.name.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "a SIP mapping's name",
            });
        }
        let bad = |why: String| ConfigError::SipMapping {
            mapping: self.name.clone(),
            why,
        };
        if self.name.chars().any(char::is_control) {
            return Err(bad("its name must not hold control characters".into()));
        }
        self.header = self
            .header
            .take()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        match (self.kind, &self.header) {
            (SipMatch::Header, None) => return Err(bad("kind header needs a header name".into())),
            (SipMatch::Header, Some(h)) if !is_token(h) => {
                return Err(bad(format!("{h:?} is not a SIP header name")));
            }
            (SipMatch::Number | SipMatch::Extension, Some(_)) => {
                return Err(bad(format!(
                    "header is only for kind header, not {}",
                    self.kind.as_str()
                )));
            }
            _ => {}
        }
        self.pattern = self.pattern.trim().to_string();
        if self.pattern.is_empty() {
            return Err(ConfigError::Empty {
                what: "a SIP mapping's pattern",
            });
        }
        Matcher::new(&self.pattern).map_err(bad)?;
        if !valid_channel_id(&self.channel_id) {
            return Err(bad(format!(
                "channelId must be 1 to {MAX_CHANNEL_LEN} bytes without control characters"
            )));
        }
        Ok(())
    }

    /// The channel for `call` if this mapping matches it. A channel that the matched value
    /// would make too long is no match, so that the next mapping gets the call.
    pub fn route(&self, call: &SipCall<'_>) -> Option<String> {
        let matcher = Matcher::new(&self.pattern).ok()?;
        let value = match self.kind {
            SipMatch::Number => Some(call.request_user).filter(|v| matcher.matches(v)),
            SipMatch::Extension => Some(call.to_user).filter(|v| matcher.matches(v)),
            SipMatch::Header => {
                let wanted = self.header.as_deref()?;
                call.headers
                    .iter()
                    .filter(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
                    .map(|(_, value)| value.trim())
                    .find(|v| matcher.matches(v))
            }
        }?;
        let channel = self.channel_id.replace(MATCH_PLACEHOLDER, value);
        valid_channel_id(&channel).then_some(channel)
    }
}

/// What the connector knows of an incoming INVITE.
#[derive(Debug, Clone, Copy)]
pub struct SipCall<'a> {
    /// The Request-URI's user part.
    pub request_user: &'a str,
    /// The `To` URI's user part.
    pub to_user: &'a str,
    /// The headers as (name, value); a name that comes more than once is tried value by value.
    pub headers: &'a [(&'a str, &'a str)],
}

/// The first mapping (by position, then application id, then name) that matches, with its
/// channel. `mappings` may hold every application's and need not be sorted.
pub fn route<'m>(
    mappings: &'m [SipMapping],
    call: &SipCall<'_>,
) -> Option<(&'m SipMapping, String)> {
    let mut ordered: Vec<&SipMapping> = mappings.iter().collect();
    ordered.sort_by(|a, b| {
        (a.position, &a.application_id, &a.name).cmp(&(b.position, &b.application_id, &b.name))
    });
    ordered
        .into_iter()
        .find_map(|m| m.route(call).map(|channel| (m, channel)))
}

/// Whether Switchyard takes `id` as a channel id: 1 to [`MAX_CHANNEL_LEN`] bytes, none a control
/// character.
pub fn valid_channel_id(id: &str) -> bool {
    (1..=MAX_CHANNEL_LEN).contains(&id.len()) && !id.chars().any(char::is_control)
}

/// An RFC 3261 token, what a header name is.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(name: &str, domain: &str) -> SipTrunk {
        SipTrunk {
            name: name.into(),
            domain: domain.into(),
            transport: SipTransport::Udp,
            register: false,
            username: None,
            password: None,
            authorization_id: None,
            outbound_proxy: None,
            caller_id: None,
            can_terminate: false,
            enabled: true,
        }
    }

    fn mapping(app: &str, name: &str, position: i32, kind: SipMatch, pattern: &str) -> SipMapping {
        SipMapping {
            application_id: app.into(),
            name: name.into(),
            position,
            kind,
            header: (kind == SipMatch::Header).then(|| "X-Room".into()),
            pattern: pattern.into(),
            channel_id: format!("{name}-{MATCH_PLACEHOLDER}"),
        }
    }

    fn call<'a>(request_user: &'a str, headers: &'a [(&'a str, &'a str)]) -> SipCall<'a> {
        SipCall {
            request_user,
            to_user: "reception",
            headers,
        }
    }

    #[test]
    fn domains_are_host_or_host_port() {
        for (good, host, port) in [
            ("sip.example.com", "sip.example.com", None),
            ("sip.example.com:5080", "sip.example.com", Some(5080)),
            ("192.0.2.7:5060", "192.0.2.7", Some(5060)),
            ("[2001:db8::1]:5061", "2001:db8::1", Some(5061)),
            ("[2001:db8::1]", "2001:db8::1", None),
            ("pbx", "pbx", None),
        ] {
            assert_eq!(parse_host_port(good), Ok((host, port)), "{good}");
        }
        for bad in [
            "",
            "sip:provider.example.com",
            "sips:provider.example.com:5061",
            "alice@provider.example.com",
            "https://provider.example.com",
            "provider.example.com:0",
            "provider.example.com:65536",
            "provider.example.com:",
            "2001:db8::1",
            "[2001:db8::1",
            "[not-v6]:5060",
            "provider example.com",
            "-bad.example.com",
            "a..b",
            "host/path",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn trunks_are_checked_and_tidied() {
        let mut t = trunk("main", " sip.example.com:5060 ");
        t.username = Some("".into());
        t.caller_id = Some(" +15550100 ".into());
        t.normalize().unwrap();
        assert_eq!(t.domain, "sip.example.com:5060");
        assert_eq!(t.username, None, "empty is none");
        assert_eq!(t.caller_id.as_deref(), Some("+15550100"));
        assert_eq!(t.host_port(), Ok(("sip.example.com", Some(5060))));

        let refused = |change: fn(&mut SipTrunk)| {
            let mut t = trunk("main", "sip.example.com");
            change(&mut t);
            t.normalize().unwrap_err().to_string()
        };
        assert!(refused(|t| t.name = " ".into()).contains("name"));
        assert!(refused(|t| t.domain = "sip:x.example.com".into()).contains("scheme"));
        assert!(refused(|t| t.register = true).contains("register needs a username"));
        assert!(refused(|t| t.username = Some("bob\r\nVia: x".into())).contains("username"));
        assert!(refused(|t| t.caller_id = Some("a b".into())).contains("callerId"));
        assert!(refused(|t| t.outbound_proxy = Some("proxy:x".into())).contains("outboundProxy"));
        assert!(refused(|t| t.password = Some(Secret::new("a\nb"))).contains("password"));
        let mut registered = trunk("main", "sip.example.com");
        registered.register = true;
        registered.username = Some("1001".into());
        registered.normalize().unwrap();
    }

    #[test]
    fn trunk_passwords_are_masked_and_kept() {
        let mut t = trunk("main", "sip.example.com");
        assert!(t.keeps_password());
        assert_eq!(t.masked().password, None, "none shows as none");
        t.password = Some(Secret::new("hunter2"));
        assert!(!t.keeps_password());
        let shown = serde_json::to_value(t.masked()).unwrap();
        assert_eq!(shown["password"], crate::MASKED);
        assert!(!format!("{t:?}").contains("hunter2"));
        t.password = Some(Secret::masked());
        assert!(t.keeps_password(), "the placeholder written back keeps it");
    }

    #[test]
    fn trunk_json_is_camel_case_with_defaults() {
        let t: SipTrunk = serde_json::from_str(r#"{"domain":"sip.example.com"}"#).unwrap();
        assert_eq!(t, trunk("", "sip.example.com"));
        let t: SipTrunk = serde_json::from_str(
            r#"{"domain":"d","transport":"tls","canTerminate":true,"authorizationId":"x",
                "outboundProxy":"p","callerId":"c","enabled":false,"register":true}"#,
        )
        .unwrap();
        assert_eq!(t.transport, SipTransport::Tls);
        assert!(t.can_terminate && t.register && !t.enabled);
        assert_eq!(t.authorization_id.as_deref(), Some("x"));
        let e = serde_json::from_str::<SipTrunk>(r#"{"domain":"d","transport":"sctp"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp") && e.contains("tls"), "{e}");
        for t in [SipTransport::Udp, SipTransport::Tcp, SipTransport::Tls] {
            assert_eq!(SipTransport::from_name(t.as_str()), Some(t));
        }
    }

    #[test]
    fn dial_out_takes_the_first_enabled_terminating_trunk_by_name() {
        let mut trunks = vec![
            trunk("c", "c.example.com"),
            trunk("b", "b.example.com"),
            trunk("a", "a.example.com"),
        ];
        assert!(outbound_trunk(&trunks).is_none());
        trunks[0].can_terminate = true;
        trunks[1].can_terminate = true;
        trunks[2].can_terminate = true;
        trunks[2].enabled = false;
        assert_eq!(outbound_trunk(&trunks).map(|t| t.name.as_str()), Some("b"));
    }

    #[test]
    fn mappings_are_checked() {
        let mut m = mapping("app", "main", 0, SipMatch::Number, " +1555* ");
        m.normalize().unwrap();
        assert_eq!(m.pattern, "+1555*");
        let refused = |change: fn(&mut SipMapping)| {
            let mut m = mapping("app", "main", 0, SipMatch::Number, "*");
            change(&mut m);
            m.normalize().unwrap_err().to_string()
        };
        assert!(refused(|m| m.application_id = String::new()).contains("application id"));
        assert!(refused(|m| m.name = " ".into()).contains("name"));
        assert!(refused(|m| m.kind = SipMatch::Header).contains("needs a header"));
        assert!(refused(|m| m.header = Some("X-Room".into())).contains("only for kind header"));
        assert!(
            refused(|m| {
                m.kind = SipMatch::Header;
                m.header = Some("X Room".into());
            })
            .contains("not a SIP header name")
        );
        assert!(refused(|m| m.pattern = "  ".into()).contains("pattern"));
        assert!(refused(|m| m.pattern = "^(".into()).contains("regular expression"));
        assert!(refused(|m| m.channel_id = String::new()).contains("channelId"));
        assert!(refused(|m| m.channel_id = "a\nb".into()).contains("channelId"));
        assert!(refused(|m| m.channel_id = "x".repeat(201)).contains("channelId"));
        // An empty header with another kind is no header.
        let mut m = mapping("app", "main", 0, SipMatch::Extension, "1*");
        m.header = Some(String::new());
        m.normalize().unwrap();
        assert_eq!(m.header, None);
    }

    #[test]
    fn mapping_json_is_lowercase_with_defaults() {
        let m: SipMapping =
            serde_json::from_str(r#"{"name":"n","pattern":"*","channelId":"c"}"#).unwrap();
        assert_eq!((m.kind, m.position, m.header), (SipMatch::Number, 0, None));
        let json = serde_json::to_value(mapping("app", "n", 3, SipMatch::Header, "*")).unwrap();
        assert_eq!(json["kind"], "header");
        assert_eq!(json["applicationId"], "app");
        assert_eq!(json["channelId"], "n-{match}");
        for k in [SipMatch::Number, SipMatch::Extension, SipMatch::Header] {
            assert_eq!(SipMatch::from_name(k.as_str()), Some(k));
        }
    }

    #[test]
    fn first_match_by_position_then_application_then_name() {
        let mappings = [
            mapping("zeta", "z-all", 1, SipMatch::Number, "*"),
            mapping("acme", "b-all", 1, SipMatch::Number, "*"),
            mapping("acme", "a-all", 1, SipMatch::Number, "*"),
            mapping("acme", "sales", 0, SipMatch::Number, "+1555*"),
        ];
        let pick = |user| route(&mappings, &call(user, &[])).map(|(m, c)| (m.name.clone(), c));
        assert_eq!(
            pick("+15550100"),
            Some(("sales".into(), "sales-+15550100".into()))
        );
        assert_eq!(pick("4711"), Some(("a-all".into(), "a-all-4711".into())));
        assert_eq!(
            route(&mappings[..2], &call("4711", &[])).map(|(m, _)| m.application_id.as_str()),
            Some("acme"),
            "a tie goes to the application first by id"
        );
    }

    #[test]
    fn each_kind_looks_at_its_own_value() {
        let headers = [("Via", "SIP/2.0/UDP x"), ("x-room", " standup ")];
        let c = call("+15550100", &headers);
        let number = mapping("app", "n", 0, SipMatch::Number, "+15550100");
        let extension = mapping("app", "e", 0, SipMatch::Extension, "RECEPTION");
        let header = mapping("app", "h", 0, SipMatch::Header, "stand*");
        assert_eq!(number.route(&c).as_deref(), Some("n-+15550100"));
        assert_eq!(extension.route(&c).as_deref(), Some("e-reception"));
        assert_eq!(
            header.route(&c).as_deref(),
            Some("h-standup"),
            "header names without regard to case, values trimmed"
        );
        // Each kind only its own value.
        assert!(
            mapping("app", "n", 0, SipMatch::Number, "reception")
                .route(&c)
                .is_none()
        );
        assert!(
            mapping("app", "e", 0, SipMatch::Extension, "+1*")
                .route(&c)
                .is_none()
        );
        assert!(
            header
                .route(&call("x", &[("X-Other", "standup")]))
                .is_none()
        );
        // A repeated header is tried value by value.
        let twice = [("X-Room", "lobby"), ("X-ROOM", "standup")];
        assert_eq!(
            header.route(&call("x", &twice)).as_deref(),
            Some("h-standup")
        );
    }

    #[test]
    fn globs_and_regexes() {
        let matches = |pattern: &str, value: &str| {
            mapping("app", "m", 0, SipMatch::Number, pattern)
                .route(&call(value, &[]))
                .is_some()
        };
        assert!(matches("*", "anything"));
        assert!(matches("+1555*", "+15550100"));
        assert!(!matches("+1555*", "+4930123"));
        assert!(matches("10??", "1042"));
        assert!(!matches("10??", "104"));
        assert!(!matches("10??", "10423"));
        assert!(matches("Sales", "sales"), "without regard to case");
        assert!(matches("sales", "SALES"));
        assert!(!matches("sales", "sales1"), "exact otherwise");
        assert!(matches("?*é", "café"), "characters, not bytes");
        assert!(matches(r"^\+49\d+$", "+4930123"));
        assert!(!matches(r"^\+49\d+$", "+4930123x"));
        assert!(
            matches("^room-[a-z]+$", "ROOM-abc"),
            "without regard to case"
        );
        // Unanchored at the end, a regex matches a prefix.
        assert!(matches("^10", "1042"));
    }

    #[test]
    fn match_is_replaced_by_the_matched_value() {
        let mut m = mapping("app", "m", 0, SipMatch::Number, "*");
        m.channel_id = MATCH_PLACEHOLDER.into();
        assert_eq!(m.route(&call("4711", &[])).as_deref(), Some("4711"));
        m.channel_id = "pstn-{match}-{match}".into();
        assert_eq!(m.route(&call("7", &[])).as_deref(), Some("pstn-7-7"));
        m.channel_id = "fixed".into();
        assert_eq!(m.route(&call("7", &[])).as_deref(), Some("fixed"));
    }

    #[test]
    fn no_match_or_no_valid_channel_is_none() {
        let mut catch_all = mapping("app", "all", 9, SipMatch::Number, "*");
        catch_all.channel_id = "fallback".into();
        let mut each = mapping("app", "each", 0, SipMatch::Number, "*");
        each.channel_id = MATCH_PLACEHOLDER.into();
        let only = [mapping("app", "s", 0, SipMatch::Number, "+1555*")];
        assert!(route(&only, &call("+4930", &[])).is_none());
        assert!(route(&[], &call("+4930", &[])).is_none());
        // An empty or too long value makes no channel: the next mapping takes the call.
        let both = [each, catch_all];
        let long = "1".repeat(MAX_CHANNEL_LEN + 1);
        for user in ["", long.as_str()] {
            let (m, channel) = route(&both, &call(user, &[])).unwrap();
            assert_eq!((m.name.as_str(), channel.as_str()), ("all", "fallback"));
        }
        assert_eq!(route(&both, &call("42", &[])).unwrap().1, "42");
    }
}
