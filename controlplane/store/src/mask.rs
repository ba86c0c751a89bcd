//! Connection strings in messages without their passwords. Here rather than with the settings
//! because the store names its database URL in every error, and the settings, the registry and
//! `config print` all show URLs the same way.

/// Hides the password of a URI (`scheme://user:password@host` → `scheme://user:****@host`).
pub fn mask(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return value.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        assert_eq!(mask("redis://:pw@h:6379"), "redis://:****@h:6379");
        assert_eq!(mask("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask("plain"), "plain");
    }
}
