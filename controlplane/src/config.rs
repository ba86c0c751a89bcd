//! Settings read from the environment with the names operators of the original product know
//! (`EXTERNAL:PUBLICIPADDRESS`, `CONNECTIONSTRINGS:DEFAULT`, ...).
//!
//! Shells cannot export names with `:`, so `__` is accepted wherever `:` is, and names match
//! without regard to case.

use std::ffi::OsString;

/// Normalises a setting name: upper case, `__` read as `:`.
fn normalise(name: &str) -> String {
    name.replace("__", ":").to_ascii_uppercase()
}

/// The value of setting `name` in `vars`, trying `name` as given, with `__` for `:`, and any case.
pub fn lookup(vars: impl IntoIterator<Item = (OsString, OsString)>, name: &str) -> Option<String> {
    let wanted = normalise(name);
    vars.into_iter().find_map(|(k, v)| {
        let k = k.to_str()?;
        (normalise(k) == wanted).then(|| v.to_string_lossy().into_owned())
    })
}

/// The value of setting `name` in this process's environment.
pub fn env_setting(name: &str) -> Option<String> {
    lookup(std::env::vars_os(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn colon_double_underscore_and_case() {
        let name = "EXTERNAL:PUBLICIPADDRESS";
        assert_eq!(
            lookup(vars(&[("EXTERNAL:PUBLICIPADDRESS", "1.2.3.4")]), name).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            lookup(vars(&[("EXTERNAL__PUBLICIPADDRESS", "5.6.7.8")]), name).as_deref(),
            Some("5.6.7.8")
        );
        assert_eq!(
            lookup(vars(&[("external__publicIpAddress", "9.9.9.9")]), name).as_deref(),
            Some("9.9.9.9")
        );
        assert_eq!(
            lookup(vars(&[("EXTERNAL_PUBLICIPADDRESS", "x")]), name),
            None
        );
        assert_eq!(lookup(vars(&[]), name), None);
    }
}
