//! The media server registry: one behavioural test run against both implementations, the
//! Redis one against the real Redis on 127.0.0.1:6379 (scripts/test.sh starts one), each test
//! under its own random key namespace, deleted afterwards; and what presence on Redis does
//! beyond the in-memory one's tests (emptying a channel, removing a participant only for its
//! gateway).

use std::time::Duration;

use redis::Commands;
use switchyard_cluster::presence::{ParticipantEntry, Presence};
use switchyard_cluster::registry::{
    MediaServerRecord, MediaServerRegistry, MemoryRegistry, RedisRegistry, Registry, RegistryError,
    choose_server,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn server(id: &str, region: &str, used: f64) -> MediaServerRecord {
    MediaServerRecord {
        id: id.into(),
        region: region.into(),
        available: true,
        active: true,
        over_capacity: false,
        used_capacity: used,
        draining: false,
        ip_addresses: vec!["10.0.0.7".into(), "fd00::7".into()],
        public_ip_address: Some("203.0.113.7".into()),
        version: "0.1.0".into(),
        core_count: 8,
        cluster_address: "10.0.0.7:8445".into(),
        turn_urls: Vec::new(),
        checks: Vec::new(),
    }
}

async fn ids(registry: &impl MediaServerRegistry) -> Vec<String> {
    let mut ids: Vec<_> = registry
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    ids.sort();
    ids
}

/// What every registry must do. Sleeps are on tokio's clock: instant under paused time (the
/// memory registry), real for Redis, whose keys expire on its own clock.
async fn behaves_as_a_registry(registry: &impl MediaServerRegistry) {
    let long = Duration::from_secs(30);
    assert!(registry.list().await.unwrap().is_empty());
    assert_eq!(registry.get("a").await.unwrap(), None);

    // Register, read back whole.
    let mut a = server("a", "x", 0.1);
    registry.heartbeat(&a, long).await.unwrap();
    registry
        .heartbeat(&server("b", "y", 0.5), long)
        .await
        .unwrap();
    assert_eq!(registry.get("a").await.unwrap().as_ref(), Some(&a));
    assert_eq!(ids(registry).await, ["a", "b"]);

    // A heartbeat replaces the record.
    a.used_capacity = 0.3;
    registry.heartbeat(&a, long).await.unwrap();
    assert_eq!(registry.get("a").await.unwrap(), Some(a.clone()));

    // An operator's drain survives the server's heartbeats and steers placement away.
    registry.set_draining("a", true).await.unwrap();
    registry.heartbeat(&a, long).await.unwrap();
    assert!(registry.get("a").await.unwrap().unwrap().draining);
    let servers = registry.list().await.unwrap();
    assert_eq!(choose_server(&servers, Some("x")).unwrap().id, "b");
    registry.set_draining("a", false).await.unwrap();
    let servers = registry.list().await.unwrap();
    assert_eq!(choose_server(&servers, Some("x")).unwrap().id, "a");
    let err = registry.set_draining("nobody", true).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::UnknownServer(ref id) if id == "nobody"),
        "{err}"
    );

    // Removing forgets the drain too.
    registry.set_draining("b", true).await.unwrap();
    registry.remove("b").await.unwrap();
    assert_eq!(registry.get("b").await.unwrap(), None);
    assert_eq!(ids(registry).await, ["a"]);
    registry
        .heartbeat(&server("b", "y", 0.5), long)
        .await
        .unwrap();
    assert!(!registry.get("b").await.unwrap().unwrap().draining);

    // Placement: the first placement holds until unplaced.
    assert_eq!(registry.placement("room").await.unwrap(), None);
    assert_eq!(registry.place("room", "a").await.unwrap(), "a");
    assert_eq!(registry.place("room", "b").await.unwrap(), "a");
    assert_eq!(
        registry.placement("room").await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(registry.placement("other").await.unwrap(), None);
    registry.unplace("room").await.unwrap();
    assert_eq!(registry.placement("room").await.unwrap(), None);
    assert_eq!(registry.place("room", "b").await.unwrap(), "b");

    // A server that stops heartbeating disappears within its TTL; the others stay.
    let short = Duration::from_millis(300);
    registry
        .heartbeat(&server("c", "x", 0.0), short)
        .await
        .unwrap();
    assert_eq!(ids(registry).await, ["a", "b", "c"]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(registry.get("c").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(registry.get("c").await.unwrap(), None);
    assert_eq!(ids(registry).await, ["a", "b"]);

    let err = registry
        .heartbeat(&server("d", "x", 0.0), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TtlOutOfRange(_)), "{err}");
}

/// A Redis namespace of its own for one test, with every key under it deleted on drop (even
/// when the test fails), so tests run in parallel and leave Redis as they found it.
struct Namespace(String);

impl Namespace {
    fn new() -> Self {
        Self(format!("test-{:016x}", rand::random::<u64>()))
    }

    async fn registry(&self) -> RedisRegistry {
        RedisRegistry::connect(REDIS_URL, &self.0)
            .await
            .unwrap_or_else(|e| panic!("no Redis at {REDIS_URL} (scripts/test.sh starts one): {e}"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let Ok(mut con) = redis::Client::open(REDIS_URL).and_then(|c| c.get_connection()) else {
            return;
        };
        let pattern = format!("switchyard:{}:*", self.0);
        let keys: Vec<String> = match con.scan_match(&pattern) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = con.del(keys);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn memory_registry_behaves_as_a_registry() {
    behaves_as_a_registry(&MemoryRegistry::new()).await;
}

#[tokio::test]
async fn redis_registry_behaves_as_a_registry() {
    let ns = Namespace::new();
    behaves_as_a_registry(&ns.registry().await).await;
}

#[tokio::test]
async fn the_registry_enum_dispatches_to_either() {
    let ns = Namespace::new();
    for registry in [
        Registry::Memory(MemoryRegistry::new()),
        Registry::Redis(ns.registry().await),
    ] {
        registry
            .heartbeat(&server("a", "x", 0.2), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ids(&registry).await, ["a"]);
    }
}

#[tokio::test]
async fn two_gateways_placing_one_channel_at_once_agree() {
    let ns = Namespace::new();
    let (one, two) = (ns.registry().await, ns.registry().await);
    for round in 0..20 {
        let channel = format!("room-{round}");
        let (first, second) = tokio::join!(one.place(&channel, "a"), two.place(&channel, "b"));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first, second);
        assert_eq!(two.placement(&channel).await.unwrap(), Some(first));
    }
}

/// Presence, in memory and in Redis alike, removes a participant only for the gateway it
/// belongs to (one resumed on another gateway survives the old gateway's leave), and says when
/// the last participant of a channel left (the gateway then removes the channel's placement).
#[tokio::test]
async fn presence_removes_a_participant_for_its_gateway_and_says_when_the_channel_empties() {
    let ns = Namespace::new();
    let redis = Presence::redis(REDIS_URL, &ns.0)
        .await
        .unwrap_or_else(|e| panic!("no Redis at {REDIS_URL}: {e}"));
    for presence in [Presence::memory(), redis] {
        let entry = |gateway: &str| ParticipantEntry {
            user: "u".into(),
            gateway: gateway.into(),
            session: false,
        };
        presence
            .add_participant("c", "p1", &entry("g1"))
            .await
            .unwrap();
        presence
            .add_participant("c", "p2", &entry("g2"))
            .await
            .unwrap();
        // p1 resumed on g3: g1's leave must not take it.
        presence
            .add_participant("c", "p1", &entry("g3"))
            .await
            .unwrap();
        assert_eq!(
            presence.remove_participant("c", "p1", "g1").await.unwrap(),
            None
        );
        assert_eq!(
            presence.participant("c", "p1").await.unwrap(),
            Some(entry("g3"))
        );
        assert_eq!(
            presence.remove_participant("c", "p1", "g3").await.unwrap(),
            Some(false),
            "p2 is left"
        );
        assert_eq!(
            presence.remove_participant("c", "p1", "g3").await.unwrap(),
            None
        );
        assert_eq!(presence.channels().await.unwrap(), ["c"]);
        assert_eq!(
            presence.remove_participant("c", "p2", "g2").await.unwrap(),
            Some(true),
            "the last one"
        );
        assert!(presence.channels().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_corrupt_record_in_redis_fails_get_but_not_list() {
    let ns = Namespace::new();
    let registry = ns.registry().await;
    registry
        .heartbeat(&server("a", "x", 0.1), Duration::from_secs(5))
        .await
        .unwrap();
    let key = format!("switchyard:{}:mediaserver:bad", ns.0);
    let mut con = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::pipe()
        .set(&key, "{not json")
        .sadd(format!("switchyard:{}:mediaservers", ns.0), "bad")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let err = registry.get("bad").await.unwrap_err();
    assert!(matches!(&err, RegistryError::Corrupt { key: k, .. } if *k == key));
    assert!(err.to_string().contains(&key), "{err}");
    assert_eq!(ids(&registry).await, ["a"]);
}

/// A private `redis-server` on its own port, so that a test can stop and restart it.
struct PrivateRedis {
    port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        // Owned by `Self` at once, so that a panic below still kills it.
        let redis = Self {
            port,
            child: std::process::Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on PATH (scripts/test.sh installs it)"),
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        for _ in 0..100 {
            if client.get_multiplexed_async_connection().await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Stops the server (on drop) and gives back its port, to start another on.
    fn stop(self) -> u16 {
        self.port
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_redis_restart_needs_no_new_registry() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = PrivateRedis::start(port).await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let registry = RedisRegistry::connect(&url, "restart").await.unwrap();
    let a = server("a", "x", 0.1);
    let ttl = Duration::from_secs(10);
    registry.heartbeat(&a, ttl).await.unwrap();

    let port = redis.stop();
    assert!(registry.heartbeat(&a, ttl).await.is_err());
    let _redis = PrivateRedis::start(port).await;

    // The state went with the old Redis; the media server's next heartbeats put it back once
    // the connection manager has reconnected.
    let mut back = false;
    for _ in 0..100 {
        if registry.heartbeat(&a, ttl).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the registry did not reconnect within 5 s");
    assert_eq!(registry.get("a").await.unwrap(), Some(a));
}

#[test]
fn the_record_serializes_with_the_vendors_field_names() {
    let json = serde_json::to_value(server("a", "x", 0.25)).unwrap();
    let mut fields: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "active",
            "available",
            "clusterAddress",
            "coreCount",
            "draining",
            "id",
            "ipAddresses",
            "overCapacity",
            "publicIPAddress",
            "region",
            "usedCapacity",
            "version",
        ]
    );
    let back: MediaServerRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, server("a", "x", 0.25));
}
