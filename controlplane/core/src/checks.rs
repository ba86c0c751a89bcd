//! The host checks a process that runs media does on itself at start (those of `switchyard
//! doctor` that need no help from outside), kept where its registry record, the admin API and
//! `/metrics` read them: an operator sees a wrong public address or a certificate about to
//! expire on the dashboard, not only in one host's log.

use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works now, but something is fragile or could not be verified.
    Warn,
    Fail,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pass, Status::Warn, Status::Fail];

    /// The name in JSON and in the `status` label of `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's outcome, compact enough for a registry record sent every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCheck {
    /// A stable id, e.g. `public_ip` (doctor's check ids).
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to change, for a warning or failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The latest outcome of each check, shared by the code that runs them and the readers.
/// Cloning shares the list.
#[derive(Debug, Clone, Default)]
pub struct HostChecks(Arc<RwLock<Vec<HostCheck>>>);

impl HostChecks {
    /// Records `checks`, each replacing an earlier one of the same name: checks that finish
    /// later (STUN) land next to the ones recorded at start.
    pub fn record(&self, checks: impl IntoIterator<Item = HostCheck>) {
        let mut list = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for check in checks {
            match list.iter_mut().find(|c| c.name == check.name) {
                Some(old) => *old = check,
                None => list.push(check),
            }
        }
    }

    pub fn list(&self) -> Vec<HostCheck> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Appends `switchyard_check{check,status} 1` for each check, with a 0 for the other two
    /// statuses so that an alert on `status="fail"` clears when the check passes again.
    pub fn render(&self, out: &mut String) {
        let list = self.list();
        if list.is_empty() {
            return;
        }
        out.push_str("# HELP switchyard_check Host checks at start: 1 for the check's status.\n");
        out.push_str("# TYPE switchyard_check gauge\n");
        for c in &list {
            let name = c.name.replace('\\', "\\\\").replace('"', "\\\"");
            for s in Status::ALL {
                let _ = writeln!(
                    out,
                    "switchyard_check{{check=\"{name}\",status=\"{}\"}} {}",
                    s.as_str(),
                    u8::from(s == c.status)
                );
            }
        }
    }
}

// ok: every unwrap() below is in this test-only module, on values the tests built
#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: Status) -> HostCheck {
        HostCheck {
            name: name.into(),
            status,
            detail: "d".into(),
            fix: None,
        }
    }

    #[test]
    fn later_outcomes_replace_earlier_ones_by_name() {
        let checks = HostChecks::default();
        checks.record([
            check("listeners", Status::Pass),
            check("stun", Status::Warn),
        ]);
        checks.clone().record([check("stun", Status::Fail)]);
        let names: Vec<(String, Status)> = checks
            .list()
            .into_iter()
            .map(|c| (c.name, c.status))
            .collect();
        assert_eq!(
            names,
            [
                ("listeners".to_string(), Status::Pass),
                ("stun".to_string(), Status::Fail)
            ]
        );
    }

    #[test]
    fn metrics_have_one_series_per_status() {
        let checks = HostChecks::default();
        let mut empty = String::new();
        checks.render(&mut empty);
        assert_eq!(empty, "", "nothing before any check ran");
        checks.record([check("public_ip", Status::Fail)]);
        let mut out = String::new();
        checks.render(&mut out);
        assert!(out.contains("switchyard_check{check=\"public_ip\",status=\"fail\"} 1\n"));
        assert!(out.contains("switchyard_check{check=\"public_ip\",status=\"pass\"} 0\n"));
        let json = serde_json::to_value(checks.list()).unwrap();
        assert_eq!(json[0]["status"], "fail");
        assert!(json[0].get("fix").is_none(), "{json}");
    }
}
