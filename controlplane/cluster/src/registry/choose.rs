//! Which media server a new channel goes to. Pure, so the policy is tested without a registry.

use super::MediaServerRecord;

/// Picks a server for a new channel, or `None` when no server can take one.
///
/// Servers that are draining or not available are never chosen. Among the rest, in order of
/// preference: in the client's `region` claim (a claim no server matches is no constraint),
/// then under its capacity threshold, then the least loaded. Over capacity is the last resort,
/// not a refusal: a loaded server beats a client with nowhere to go. Ties go to the smallest id
/// so that every gateway picks alike.
pub fn choose_server<'a>(
    servers: &'a [MediaServerRecord],
    region: Option<&str>,
) -> Option<&'a MediaServerRecord> {
    let outside_region = |s: &MediaServerRecord| region.is_some_and(|r| s.region != r);
    servers
        .iter()
        .filter(|s| s.available && !s.draining)
        .min_by(|a, b| {
            outside_region(a)
                .cmp(&outside_region(b))
                .then_with(|| a.over_capacity.cmp(&b.over_capacity))
                .then_with(|| a.used_capacity.total_cmp(&b.used_capacity))
                .then_with(|| a.id.cmp(&b.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, region: &str, used: f64) -> MediaServerRecord {
        MediaServerRecord {
            id: id.into(),
            region: region.into(),
            available: true,
            active: false,
            over_capacity: false,
            used_capacity: used,
            draining: false,
            ip_addresses: vec!["10.0.0.1".into()],
            public_ip_address: None,
            version: "0.1.0".into(),
            core_count: 4,
            cluster_address: "10.0.0.1:8445".into(),
            turn_urls: Vec::new(),
            checks: Vec::new(),
        }
    }

    fn chosen(servers: &[MediaServerRecord], region: Option<&str>) -> Option<String> {
        choose_server(servers, region).map(|s| s.id.clone())
    }

    #[test]
    fn none_when_empty_or_all_draining_or_unavailable() {
        assert_eq!(chosen(&[], None), None);
        let mut drained = server("a", "x", 0.1);
        drained.draining = true;
        let mut down = server("b", "x", 0.1);
        down.available = false;
        assert_eq!(chosen(&[drained, down], Some("x")), None);
    }

    #[test]
    fn least_loaded_without_a_region_claim() {
        let servers = [
            server("a", "x", 0.5),
            server("b", "y", 0.2),
            server("c", "x", 0.9),
        ];
        assert_eq!(chosen(&servers, None).as_deref(), Some("b"));
    }

    #[test]
    fn region_claim_beats_load() {
        let servers = [server("a", "x", 0.5), server("b", "y", 0.2)];
        assert_eq!(chosen(&servers, Some("x")).as_deref(), Some("a"));
        // An unknown region is no constraint.
        assert_eq!(chosen(&servers, Some("z")).as_deref(), Some("b"));
    }

    #[test]
    fn under_capacity_beats_load_and_over_capacity_is_the_last_resort() {
        let mut full = server("a", "x", 0.2);
        full.over_capacity = true;
        let servers = [full.clone(), server("b", "x", 0.7), server("c", "y", 0.1)];
        assert_eq!(chosen(&servers, Some("x")).as_deref(), Some("b"));
        // The claimed region is full: still placed there, on the least loaded.
        let mut full_b = server("b", "x", 0.9);
        full_b.over_capacity = true;
        let servers = [full.clone(), full_b.clone(), server("c", "y", 0.1)];
        assert_eq!(chosen(&servers, Some("x")).as_deref(), Some("a"));
        // No claim: any server under capacity first.
        assert_eq!(chosen(&servers, None).as_deref(), Some("c"));
        // Everything over capacity: still placed.
        assert_eq!(chosen(&[full_b, full], None).as_deref(), Some("a"));
    }

    #[test]
    fn draining_server_is_skipped_even_when_least_loaded() {
        let mut idle = server("a", "x", 0.0);
        idle.draining = true;
        let servers = [idle, server("b", "x", 0.8)];
        assert_eq!(chosen(&servers, Some("x")).as_deref(), Some("b"));
    }

    #[test]
    fn ties_go_to_the_smallest_id() {
        let servers = [server("b", "x", 0.5), server("a", "x", 0.5)];
        assert_eq!(chosen(&servers, None).as_deref(), Some("a"));
    }
}
