//! Standalone SIP connectors (`switchyard sip-connector`) in a cluster: each serves a small
//! signed API of its own ([`api`]: play digits to its calls, dial out) and heartbeats a
//! [`ConnectorRecord`] to the gateways through `SERVICEBASEURL`, as media servers do. The
//! gateways keep the records in the registry beside the media servers' (Redis, else memory),
//! with the same TTL, and call the live connectors ([`client`]) for participants' `dtmf` and
//! the admin API's dial-out; a connector passes its callers' key presses to the gateway, which
//! tells the channel.

pub mod api;
pub mod client;

use serde::{Deserialize, Serialize};

/// One connector as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorRecord {
    pub id: String,
    /// The base URL of its signed API, e.g. `http://10.0.0.7:8445`.
    pub api_url: String,
    /// Where SIP reaches it (`host:port`), for operators.
    pub sip_address: String,
    /// Calls up now: dial-out goes to the connector with the fewest.
    pub calls: u64,
    /// Its SIP counters, which the gateway's `/metrics` shows summed over the connectors.
    #[serde(default)]
    pub counters: Vec<Counter>,
}

/// One of a connector's counters (`switchyard_sip_<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub name: String,
    pub help: String,
    pub value: u64,
}

/// The connectors in the order dial-out tries them: fewest calls first, ties to the smallest
/// id, so that calls out spread over the connectors and every gateway picks alike.
pub fn by_load(mut connectors: Vec<ConnectorRecord>) -> Vec<ConnectorRecord> {
    connectors.sort_by(|a, b| a.calls.cmp(&b.calls).then_with(|| a.id.cmp(&b.id)));
    connectors
}

/// The connectors' counters summed by name, in the order first seen, for `/metrics`.
pub fn summed(connectors: &[ConnectorRecord]) -> Vec<Counter> {
    let mut sums: Vec<Counter> = Vec::new();
    for counter in connectors.iter().flat_map(|c| &c.counters) {
        match sums.iter_mut().find(|s| s.name == counter.name) {
            Some(sum) => sum.value = sum.value.saturating_add(counter.value),
            None => sums.push(counter.clone()),
        }
    }
    sums
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn connector(id: &str, calls: u64) -> ConnectorRecord {
        ConnectorRecord {
            id: id.into(),
            // Nothing listens there: calls to it fail at once.
            api_url: "http://127.0.0.1:9".into(),
            sip_address: "127.0.0.1:5060".into(),
            calls,
            counters: vec![Counter {
                name: "calls_in_total".into(),
                help: "Calls that arrived.".into(),
                value: calls,
            }],
        }
    }

    #[test]
    fn dial_out_prefers_the_least_loaded_then_the_smallest_id() {
        let ids: Vec<String> = by_load(vec![
            connector("c", 1),
            connector("b", 3),
            connector("a", 1),
        ])
        .into_iter()
        .map(|c| c.id)
        .collect();
        assert_eq!(ids, ["a", "c", "b"]);
    }

    #[test]
    fn counters_are_summed_by_name() {
        let sums = summed(&[connector("a", 2), connector("b", 5)]);
        assert_eq!(sums.len(), 1);
        assert_eq!(
            (sums[0].name.as_str(), sums[0].value),
            ("calls_in_total", 7)
        );
    }
}
