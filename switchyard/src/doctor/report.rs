//! What `switchyard doctor` found: one entry per check, printed for people or as JSON.

use std::fmt::Write as _;

use serde::Serialize;
use switchyard_controlplane::checks::HostCheck;

/// The same statuses as the checks a media server records at start, so the two read alike.
pub use switchyard_controlplane::checks::Status;

fn label(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    }
}

/// The change that fixes a failure, for people (`text`) and for scripts (`setting`, `value`
/// when it is one setting to set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Fix {
    /// "set SETTING=VALUE", with why when there is more to say.
    pub fn set(setting: &str, value: impl ToString, why: &str) -> Fix {
        let value = value.to_string();
        let mut text = format!("set {setting}={value}");
        if !why.is_empty() {
            text.push_str(&format!(" ({why})"));
        }
        Fix {
            text,
            setting: Some(setting.to_string()),
            value: Some(value),
        }
    }

    /// Something to do that is not one setting (open a firewall port, renew a certificate).
    pub fn todo(text: impl Into<String>) -> Fix {
        Fix {
            text: text.into(),
            setting: None,
            value: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// A stable id for scripts, e.g. `public_ip` or `reach_udp_203.0.113.20:3478`.
    pub id: String,
    /// A short title for people.
    pub title: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

impl Check {
    /// This check as a media server records it (registry record, admin API, `/metrics`).
    pub fn host(&self) -> HostCheck {
        HostCheck {
            name: self.id.clone(),
            status: self.status,
            detail: format!("{}: {}", self.title, self.message),
            fix: self.fix.as_ref().map(|f| f.text.clone()),
        }
    }

    pub fn named(id: impl Into<String>, title: impl Into<String>) -> CheckBuilder {
        CheckBuilder {
            id: id.into(),
            title: title.into(),
        }
    }
}

/// Names a check before saying how it went.
pub struct CheckBuilder {
    id: String,
    title: String,
}

impl CheckBuilder {
    fn with(self, status: Status, message: String, fix: Option<Fix>) -> Check {
        Check {
            id: self.id,
            title: self.title,
            status,
            message,
            fix,
        }
    }

    pub fn pass(self, message: impl Into<String>) -> Check {
        self.with(Status::Pass, message.into(), None)
    }

    pub fn warn(self, message: impl Into<String>, fix: Option<Fix>) -> Check {
        self.with(Status::Warn, message.into(), fix)
    }

    pub fn fail(self, message: impl Into<String>, fix: Fix) -> Check {
        self.with(Status::Fail, message.into(), Some(fix))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct Summary {
    ok: bool,
    passed: usize,
    warnings: usize,
    failed: usize,
}

impl Report {
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.checks.extend(checks);
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    pub fn ok(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    fn summary(&self) -> Summary {
        Summary {
            ok: self.ok(),
            passed: self.count(Status::Pass),
            warnings: self.count(Status::Warn),
            failed: self.count(Status::Fail),
        }
    }

    /// One JSON object: `ok`, the counts, and every check with its fix.
    pub fn json(&self) -> String {
        let value = serde_json::json!({
            "summary": self.summary(),
            "checks": self.checks,
        });
        value.to_string()
    }

    /// Aligned lines, each failure followed by its fix, then the summary: the last line says
    /// whether anything failed, so it is what a person reads first after a long run.
    pub fn human(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.title.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{}  {:width$}  {}",
                label(c.status),
                c.title,
                c.message
            );
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "      {:width$}  fix: {}", "", fix.text);
            }
        }
        let s = self.summary();
        let _ = writeln!(
            out,
            "\n{}: {} passed, {} warning(s), {} failed",
            if s.ok { "OK" } else { "FAILED" },
            s.passed,
            s.warnings,
            s.failed
        );
        out
    }
}

// ok: every unwrap()/expect() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_fix_and_decide_ok() {
        let mut r = Report::default();
        r.push(Check::named("a", "listeners").pass("all bound"));
        assert!(r.ok());
        r.push(Check::named("public_ip", "public IP").fail(
            "announced 203.0.113.30 is not reachable",
            Fix::set("EXTERNAL:PUBLICIPADDRESS", "203.0.113.20", ""),
        ));
        assert!(!r.ok());
        let human = r.human();
        assert!(
            human.contains("fix: set EXTERNAL:PUBLICIPADDRESS=203.0.113.20"),
            "{human}"
        );
        assert!(
            human
                .trim_end()
                .ends_with("FAILED: 1 passed, 0 warning(s), 1 failed")
        );
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["summary"]["ok"], false);
        assert_eq!(
            json["checks"][1]["fix"]["setting"],
            "EXTERNAL:PUBLICIPADDRESS"
        );
        assert_eq!(json["checks"][1]["fix"]["value"], "203.0.113.20");
        assert_eq!(json["checks"][1]["status"], "fail");
        // As a media server records it: id, status, title with message, the fix's text.
        let host = r.checks[1].host();
        assert_eq!(
            (host.name.as_str(), host.status),
            ("public_ip", Status::Fail)
        );
        assert_eq!(
            host.detail,
            "public IP: announced 203.0.113.30 is not reachable"
        );
        assert_eq!(
            host.fix.as_deref(),
            Some("set EXTERNAL:PUBLICIPADDRESS=203.0.113.20")
        );
    }
}
