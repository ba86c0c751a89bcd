//! The configuration store against the real PostgreSQL on 127.0.0.1:5432 (scripts/test.sh
//! starts one; these tests fail, never skip, without it), each test in a database of its own
//! dropped afterwards, and against SQLite files in temporary directories. The same behaviour
//! is checked on both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use switchyard_store::{
    Application, CachedStore, ChannelConfig, ClusteringStrategy, ConfigError, Deployment, Health,
    MASKED, RecordedFile, RecordingSession, SQLITE_FILE, Secret, SipCall, SipMapping, SipMatch,
    SipTransport, SipTrunk, Store, StoreError, Webhook, match_channel,
};

const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn admin() -> PgConnection {
    PgConnection::connect(POSTGRES_ADMIN_URL).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({e}); scripts/test.sh starts one"
        )
    })
}

/// A database of its own on the test PostgreSQL, dropped (connections and all) on drop.
struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    async fn new() -> Self {
        let name = format!("sy_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin().await)
            .await
            .unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        PgDatabase { name, url }
    }

    async fn drop_now(&self) {
        drop_database(&self.name).await;
    }
}

async fn drop_database(name: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin().await)
    .await
    .unwrap();
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use another.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(drop_database(&name));
        })
        .join();
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("switchyard-store-{:016x}", rand::random::<u64>()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a test's store lives; kept alive for the test's length.
enum Backend {
    Postgres(PgDatabase),
    Sqlite(TempDir),
}

impl Backend {
    async fn postgres() -> Self {
        Backend::Postgres(PgDatabase::new().await)
    }

    fn sqlite() -> Self {
        Backend::Sqlite(TempDir::new())
    }

    async fn open(&self) -> Store {
        match self {
            Backend::Postgres(db) => Store::open(Some(&db.url), &std::env::temp_dir()).await,
            Backend::Sqlite(dir) => Store::open(None, &dir.0).await,
        }
        .unwrap()
    }
}

fn deployment(id: &str) -> Deployment {
    Deployment {
        id: id.into(),
        name: Some("Europe".into()),
        stun_servers: vec![
            "stun:stun1.example.org:3478".into(),
            "stun:stun2.example.org".into(),
        ],
        sfu_connections_per_cpu_safe: 100,
        sfu_connections_per_cpu_unsafe: 150,
        mcu_connections_per_cpu_safe: 8,
        mcu_connections_per_cpu_unsafe: 12,
        clustering_strategy: ClusteringStrategy::LeastLoaded,
        turn_secret: None,
        turn_previous_secret: None,
    }
}

fn channel(application: &str, pattern: &str, position: i64) -> ChannelConfig {
    ChannelConfig {
        application_id: application.into(),
        pattern: pattern.into(),
        position,
        allowed_codecs: vec!["opus".into(), "VP8".into()],
        max_bitrate_kbps: Some(2500),
        sfu_allowed: true,
        mcu_allowed: false,
        mcu_layout: None,
        mcu_canvas_width: None,
        mcu_canvas_height: None,
        mcu_frame_rate: None,
        recording: false,
    }
}

/// The actions in the audit log, oldest first.
async fn actions(store: &Store) -> Vec<String> {
    let mut log = store.audit_log(1000).await.unwrap();
    log.reverse();
    log.into_iter().map(|e| e.action).collect()
}

// The behaviours, each run on both databases below.

async fn reopening_applies_nothing_twice(backend: Backend) {
    let store = backend.open().await;
    store
        .put_application("admin", &Application::new("app", "s1"))
        .await
        .unwrap();
    store.close().await;
    let store = backend.open().await;
    assert_eq!(
        store.application("app").await.unwrap().unwrap().secrets,
        ["s1"]
    );
    let applied: i64 = match &store {
        Store::Postgres(pool) => sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .unwrap(),
    };
    assert_eq!(applied, 7, "one row per migration, none twice");
    // Without a URL, the file is where the documentation says.
    if let Backend::Sqlite(dir) = &backend {
        assert!(dir.0.join(SQLITE_FILE).is_file());
    }
}

async fn deployments_round_trip(backend: Backend) {
    let store = backend.open().await;
    assert!(store.deployments().await.unwrap().is_empty());
    let mut d = deployment("Default");
    store.put_deployment("admin", &d).await.unwrap();
    assert_eq!(store.deployment("Default").await.unwrap(), Some(d.clone()));
    d.name = None;
    d.stun_servers.clear();
    d.clustering_strategy = ClusteringStrategy::Region;
    d.sfu_connections_per_cpu_unsafe = u32::MAX;
    store.put_deployment("admin", &d).await.unwrap();
    store
        .put_deployment("admin", &deployment("Asia"))
        .await
        .unwrap();
    let all = store.deployments().await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["Asia", "Default"]
    );
    assert_eq!(all[1], d);
    let mut bad = deployment("Bad");
    bad.mcu_connections_per_cpu_safe = 20;
    assert!(matches!(
        store.put_deployment("admin", &bad).await,
        Err(StoreError::Invalid(ConfigError::Thresholds { .. }))
    ));
    assert!(store.delete_deployment("admin", "Asia").await.unwrap());
    assert!(!store.delete_deployment("admin", "Asia").await.unwrap());
    assert_eq!(store.deployment("Asia").await.unwrap(), None);
    assert_eq!(
        actions(&store).await,
        [
            "deployment.put",
            "deployment.put",
            "deployment.put",
            "deployment.delete"
        ]
    );
}

/// A deployment's TURN secrets are stored and read back in full (the cluster API hands them to
/// media servers), replaced and cleared by a put, checked, and never written to the log.
async fn deployment_turn_secrets(backend: Backend) {
    let store = backend.open().await;
    let (first, second) = ("turn-secret-first-0123", "turn-secret-second-0123");
    let mut d = deployment("Default");
    d.turn_secret = Some(Secret::new(first));
    store.put_deployment("admin", &d).await.unwrap();
    assert_eq!(store.deployment("Default").await.unwrap(), Some(d.clone()));
    // A rotation: the new one signs, the old one is still accepted.
    d.turn_secret = Some(Secret::new(second));
    d.turn_previous_secret = Some(Secret::new(first));
    store.put_deployment("admin", &d).await.unwrap();
    let stored = store.deployment("Default").await.unwrap().unwrap();
    assert_eq!(
        stored.turn_secret.as_ref().map(Secret::expose),
        Some(second)
    );
    assert_eq!(
        stored.turn_previous_secret.as_ref().map(Secret::expose),
        Some(first)
    );
    let mut bad = d.clone();
    bad.turn_secret = Some(Secret::new("short"));
    assert!(matches!(
        store.put_deployment("admin", &bad).await,
        Err(StoreError::Invalid(ConfigError::TurnSecret { .. }))
    ));
    bad.turn_secret = None;
    assert!(matches!(
        store.put_deployment("admin", &bad).await,
        Err(StoreError::Invalid(ConfigError::TurnPreviousSecret { .. }))
    ));
    d.turn_secret = None;
    d.turn_previous_secret = None;
    store.put_deployment("admin", &d).await.unwrap();
    assert_eq!(store.deployment("Default").await.unwrap(), Some(d));
    for entry in store.audit_log(100).await.unwrap() {
        let text = entry.detail.to_string();
        assert!(!text.contains(first) && !text.contains(second), "{text}");
    }
    let shown = store.audit_log(100).await.unwrap();
    assert_eq!(shown[1].detail["turnSecret"], MASKED, "{:?}", shown[1]);
}

async fn applications_round_trip_and_rotate(backend: Backend) {
    let store = backend.open().await;
    let app = Application::new("app", "first");
    store.put_application("alice", &app).await.unwrap();
    assert_eq!(store.application("app").await.unwrap(), Some(app.clone()));
    assert_eq!(store.application("nope").await.unwrap(), None);

    let rotated = store.rotate_secret("alice", "app", "second").await.unwrap();
    assert_eq!(rotated.secrets, ["first", "second"]);
    let rotated = store.rotate_secret("alice", "app", "third").await.unwrap();
    assert_eq!(rotated.secrets, ["second", "third"]);
    assert_eq!(store.application("app").await.unwrap(), Some(rotated));
    let retired = store.retire_secret("bob", "app", "second").await.unwrap();
    assert_eq!(retired.secrets, ["third"]);
    assert!(matches!(
        store.retire_secret("bob", "app", "third").await,
        Err(StoreError::Invalid(ConfigError::SecretCount { .. }))
    ));
    assert!(matches!(
        store.rotate_secret("bob", "nope", "x").await,
        Err(StoreError::NotFound { .. })
    ));

    // A put replaces the secrets and keeps when the application was created.
    let mut again = Application::new("app", "fourth");
    again.created_at = app.created_at + 1000;
    store.put_application("alice", &again).await.unwrap();
    let stored = store.application("app").await.unwrap().unwrap();
    assert_eq!(stored.secrets, ["fourth"]);
    assert_eq!(stored.created_at, app.created_at);
    store
        .put_application("alice", &Application::new("other", "x"))
        .await
        .unwrap();
    assert_eq!(store.applications().await.unwrap().len(), 2);

    // Rotations at once are serialized: none is lost and two secrets remain.
    let rotations = (0..6).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.rotate_secret("carol", "app", &format!("r{i}")).await })
    });
    for r in futures_util::future::join_all(rotations).await {
        r.unwrap().unwrap();
    }
    assert_eq!(
        store
            .application("app")
            .await
            .unwrap()
            .unwrap()
            .secrets
            .len(),
        2
    );

    assert!(store.delete_application("alice", "other").await.unwrap());
    assert!(!store.delete_application("alice", "other").await.unwrap());

    let log = store.audit_log(100).await.unwrap();
    let mut expected = vec![
        "application.put",
        "application.rotateSecret",
        "application.rotateSecret",
        "application.retireSecret",
        "application.put",
        "application.put",
    ];
    expected.extend(["application.rotateSecret"; 6]);
    expected.push("application.delete");
    assert_eq!(actions(&store).await, expected);
    assert_eq!(log[0].actor, "alice");
    assert_eq!(log[0].target, "other");
    // No secret is ever written to the log.
    for entry in &log {
        let text = entry.detail.to_string();
        for secret in ["first", "second", "third", "fourth", "r0", "r5"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

async fn channel_configs_in_order(backend: Backend) {
    let store = backend.open().await;
    assert!(matches!(
        store
            .put_channel_config("admin", &channel("app", "*", 1))
            .await,
        Err(StoreError::Invalid(ConfigError::NoSuchApplication { .. }))
    ));
    store
        .put_application("admin", &Application::new("app", "s"))
        .await
        .unwrap();
    store
        .put_application("admin", &Application::new("b", "s"))
        .await
        .unwrap();

    store
        .put_channel_config("admin", &channel("app", "*", 100))
        .await
        .unwrap();
    let mut vip = channel("app", "vip-*", 10);
    vip.allowed_codecs = vec!["vp9".into(), "Opus".into()];
    vip.mcu_allowed = true;
    vip.max_bitrate_kbps = None;
    // Its own MCU canvas, read back as written (the layout as the mixer names it).
    vip.mcu_layout = Some("Speaker".into());
    vip.mcu_canvas_width = Some(320);
    vip.mcu_canvas_height = Some(180);
    vip.mcu_frame_rate = Some(10);
    let stored = store.put_channel_config("admin", &vip).await.unwrap();
    assert_eq!(stored.allowed_codecs, ["VP9", "opus"]);
    assert_eq!(stored.mcu_layout.as_deref(), Some("speaker"));
    // Replaced without them: back to the deployment's canvas; then as it was.
    let plain = ChannelConfig {
        mcu_layout: None,
        mcu_canvas_width: None,
        mcu_canvas_height: None,
        mcu_frame_rate: None,
        ..stored.clone()
    };
    store.put_channel_config("admin", &plain).await.unwrap();
    assert_eq!(
        store.channel_config("app", "vip-*").await.unwrap(),
        Some(plain)
    );
    assert_eq!(
        store.put_channel_config("admin", &stored).await.unwrap(),
        stored
    );
    store
        .put_channel_config("admin", &channel("app", "*-live-*", 20))
        .await
        .unwrap();
    store
        .put_channel_config("admin", &channel("b", "*", 1))
        .await
        .unwrap();

    // The catch-all must stay last, positions must differ, codecs must be known.
    let e = store
        .put_channel_config("admin", &channel("app", "late", 200))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::CatchAllNotLast { .. })),
        "{e}"
    );
    let e = store
        .put_channel_config("admin", &channel("app", "x", 10))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::SamePosition { .. })),
        "{e}"
    );
    let mut bad = channel("app", "x", 11);
    bad.allowed_codecs = vec!["G729".into()];
    let e = store.put_channel_config("admin", &bad).await.unwrap_err();
    assert!(e.to_string().contains("G729"), "{e}");
    let mut bad = channel("app", "x", 11);
    bad.mcu_canvas_height = Some(181);
    let e = store.put_channel_config("admin", &bad).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::McuSetting { .. })),
        "{e}"
    );
    bad.mcu_canvas_height = None;
    bad.mcu_layout = Some("mosaic".into());
    let e = store.put_channel_config("admin", &bad).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::UnknownLayout { .. })),
        "{e}"
    );
    let e = store
        .put_channel_config("admin", &channel("app", "", 12))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::Empty { .. })),
        "{e}"
    );
    // Moving the catch-all itself is fine as long as it stays last.
    store
        .put_channel_config("admin", &channel("app", "*", 300))
        .await
        .unwrap();

    let of_app = store.channel_configs_of("app").await.unwrap();
    let patterns: Vec<&str> = of_app.iter().map(|c| c.pattern.as_str()).collect();
    assert_eq!(patterns, ["vip-*", "*-live-*", "*"]);
    assert_eq!(
        store.channel_config("app", "vip-*").await.unwrap(),
        Some(stored)
    );

    let all = store.channel_configs().await.unwrap();
    assert_eq!(all.len(), 4);
    let pick = |app, ch| match_channel(&all, app, ch).map(|c| c.pattern.clone());
    assert_eq!(pick("app", "vip-live-1").as_deref(), Some("vip-*"));
    assert_eq!(pick("app", "news-live-2").as_deref(), Some("*-live-*"));
    assert_eq!(pick("app", "lobby").as_deref(), Some("*"));
    assert_eq!(pick("b", "vip-1").as_deref(), Some("*"));
    assert_eq!(pick("c", "vip-1"), None);

    assert!(
        store
            .delete_channel_config("admin", "app", "vip-*")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_channel_config("admin", "app", "vip-*")
            .await
            .unwrap()
    );
    // An application's configurations go with it.
    store.delete_application("admin", "b").await.unwrap();
    assert_eq!(store.channel_configs().await.unwrap().len(), 2);

    let log = store.audit_log(3).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].action, "application.delete");
    assert_eq!(log[1].action, "channelConfig.delete");
    assert_eq!(log[1].detail, json!({ "pattern": "vip-*" }));
    assert_eq!(log[2].action, "channelConfig.put");
    assert_eq!(log[2].detail["pattern"], "*");
    assert_eq!(log[2].detail["position"], 300);
    // Refused changes left no trace.
    assert_eq!(
        actions(&store)
            .await
            .iter()
            .filter(|a| *a == "channelConfig.put")
            .count(),
        7
    );
}

fn webhook(application: &str, name: &str, url: &str) -> Webhook {
    Webhook {
        application_id: application.into(),
        name: name.into(),
        url: url.into(),
        events: vec![],
    }
}

async fn webhooks_round_trip(backend: Backend) {
    let store = backend.open().await;
    let e = store
        .put_webhook("admin", &webhook("app", "a", "https://example.com/a"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    for id in ["app", "b"] {
        store
            .put_application("admin", &Application::new(id, "s"))
            .await
            .unwrap();
    }
    let mut a = webhook("app", "a", "https://example.com/a");
    a.events = vec!["recording.mixed".into(), "client.joined".into()];
    assert_eq!(store.put_webhook("admin", &a).await.unwrap(), a);
    // Without a name, the URL names it.
    let unnamed = webhook("app", "", "http://127.0.0.1:9/hook");
    let stored = store.put_webhook("admin", &unnamed).await.unwrap();
    assert_eq!(stored.name, "http://127.0.0.1:9/hook");
    store
        .put_webhook("admin", &webhook("b", "x", "https://b.example.com/"))
        .await
        .unwrap();
    // The same name replaces.
    a.url = "https://example.com/a2".into();
    a.events = vec![];
    store.put_webhook("admin", &a).await.unwrap();
    let of_app = store.webhooks_of("app").await.unwrap();
    assert_eq!(of_app, [a.clone(), stored.clone()]);
    assert_eq!(store.webhooks().await.unwrap().len(), 3);

    // Refused: a bad URL, an unknown event; neither leaves a trace.
    let e = store
        .put_webhook("admin", &webhook("app", "c", "ftp://example.com/"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::WebhookUrl { .. })),
        "{e}"
    );
    let mut unknown = webhook("app", "c", "https://example.com/c");
    unknown.events = vec!["channel.exploded".into()];
    let e = store.put_webhook("admin", &unknown).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::UnknownEvent { .. })),
        "{e}"
    );
    assert_eq!(store.webhooks_of("app").await.unwrap().len(), 2);

    // The cache hands them out with the secret to sign with: the application's newest.
    store.rotate_secret("admin", "app", "s2").await.unwrap();
    let mut only_mixed = webhook("app", "mixed", "https://example.com/m");
    only_mixed.events = vec!["recording.mixed".into()];
    store.put_webhook("admin", &only_mixed).await.unwrap();
    let cache = CachedStore::new(store.clone());
    assert_eq!(cache.refresh().await, Health::Ok);
    let (secret, hooks) = cache.webhooks_for("app", "client.joined").unwrap();
    assert_eq!(secret, "s2");
    let names: Vec<&str> = hooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["a", "http://127.0.0.1:9/hook"]);
    let (_, hooks) = cache.webhooks_for("app", "recording.mixed").unwrap();
    assert_eq!(hooks.len(), 3);
    assert!(cache.webhooks_for("nobody", "client.joined").is_none());

    assert!(store.delete_webhook("admin", "app", "a").await.unwrap());
    assert!(!store.delete_webhook("admin", "app", "a").await.unwrap());
    // An application's webhooks go with it.
    store.delete_application("admin", "b").await.unwrap();
    assert_eq!(store.webhooks().await.unwrap().len(), 2);
    let log = store.audit_log(3).await.unwrap();
    assert_eq!(log[0].action, "application.delete");
    assert_eq!(log[1].action, "webhook.delete");
    assert_eq!(log[1].detail, json!({ "name": "a" }));
    assert_eq!(log[2].action, "webhook.put");
    assert_eq!(log[2].detail["url"], "https://example.com/m");
}

fn trunk(name: &str) -> SipTrunk {
    SipTrunk {
        name: name.into(),
        domain: format!("{name}.example.com:5060"),
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

/// Trunks are stored whole, password included (the connector needs it), replaced by name;
/// a write without a password or with the placeholder keeps it, an empty one removes it; the
/// audit log never holds it.
async fn sip_trunks_round_trip(backend: Backend) {
    let store = backend.open().await;
    assert!(store.sip_trunks().await.unwrap().is_empty());
    let mut main = trunk("main");
    main.transport = SipTransport::Tls;
    main.register = true;
    main.username = Some("1001".into());
    main.password = Some(Secret::new("sip-password-1"));
    main.authorization_id = Some("auth-1001".into());
    main.outbound_proxy = Some("proxy.example.com".into());
    main.caller_id = Some("+15550100".into());
    main.can_terminate = true;
    assert_eq!(store.put_sip_trunk("admin", &main).await.unwrap(), main);
    assert_eq!(store.sip_trunk("main").await.unwrap(), Some(main.clone()));
    store
        .put_sip_trunk("admin", &trunk("backup"))
        .await
        .unwrap();
    let names: Vec<String> = store
        .sip_trunks()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["backup", "main"]);

    // Replaced without a password, then with the placeholder: the stored one stays.
    let mut changed = main.clone();
    changed.password = None;
    changed.enabled = false;
    let stored = store.put_sip_trunk("admin", &changed).await.unwrap();
    assert_eq!(stored.password, main.password);
    assert!(!stored.enabled);
    changed.password = Some(Secret::masked());
    let stored = store.put_sip_trunk("admin", &changed).await.unwrap();
    assert_eq!(stored.password, main.password);
    // A new one replaces it; an empty one removes it.
    changed.password = Some(Secret::new("sip-password-2"));
    let stored = store.put_sip_trunk("admin", &changed).await.unwrap();
    assert_eq!(
        stored.password.as_ref().map(Secret::expose),
        Some("sip-password-2")
    );
    changed.password = Some(Secret::new(""));
    assert_eq!(
        store
            .put_sip_trunk("admin", &changed)
            .await
            .unwrap()
            .password,
        None
    );
    // A new trunk given the placeholder has none.
    let mut masked = trunk("masked");
    masked.password = Some(Secret::masked());
    assert_eq!(
        store
            .put_sip_trunk("admin", &masked)
            .await
            .unwrap()
            .password,
        None
    );

    // Refused, and nothing written.
    let mut bad = trunk("bad");
    bad.domain = "sip:bad.example.com".into();
    let e = store.put_sip_trunk("admin", &bad).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::SipTrunk { .. })),
        "{e}"
    );
    assert_eq!(store.sip_trunk("bad").await.unwrap(), None);

    assert!(store.delete_sip_trunk("admin", "backup").await.unwrap());
    assert!(!store.delete_sip_trunk("admin", "backup").await.unwrap());
    assert_eq!(store.sip_trunks().await.unwrap().len(), 2);

    let log = store.audit_log(100).await.unwrap();
    for entry in &log {
        let text = entry.detail.to_string();
        assert!(!text.contains("sip-password"), "{text}");
    }
    assert_eq!(log[0].action, "sipTrunk.delete");
    assert_eq!(log[0].target, "backup");
    let first = log.last().unwrap();
    assert_eq!(
        (first.action.as_str(), first.target.as_str()),
        ("sipTrunk.put", "main")
    );
    assert_eq!(first.detail["password"], MASKED);
    assert_eq!(first.detail["transport"], "tls");
    assert_eq!(
        actions(&store)
            .await
            .iter()
            .filter(|a| *a == "sipTrunk.put")
            .count(),
        7
    );
}

fn sip_mapping(application: &str, name: &str, position: i32, pattern: &str) -> SipMapping {
    SipMapping {
        application_id: application.into(),
        name: name.into(),
        position,
        kind: SipMatch::Number,
        header: None,
        pattern: pattern.into(),
        channel_id: "{match}".into(),
    }
}

async fn sip_mappings_round_trip(backend: Backend) {
    let store = backend.open().await;
    let e = store
        .put_sip_mapping("admin", &sip_mapping("app", "all", 0, "*"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    for id in ["app", "b"] {
        store
            .put_application("admin", &Application::new(id, "s"))
            .await
            .unwrap();
    }
    let all = sip_mapping("app", "all", 10, "*");
    assert_eq!(store.put_sip_mapping("admin", &all).await.unwrap(), all);
    let mut room = sip_mapping("app", "room", 5, "ROOM-*");
    room.kind = SipMatch::Header;
    room.header = Some(" X-Room ".into());
    room.channel_id = "rooms-{match}".into();
    let stored = store.put_sip_mapping("admin", &room).await.unwrap();
    assert_eq!(stored.header.as_deref(), Some("X-Room"), "trimmed");
    let sales = sip_mapping("b", "sales", 5, "+1555*");
    store.put_sip_mapping("admin", &sales).await.unwrap();
    // The same name replaces.
    let mut all2 = all.clone();
    all2.position = 20;
    all2.channel_id = "lobby".into();
    store.put_sip_mapping("admin", &all2).await.unwrap();
    assert_eq!(
        store.sip_mappings_of("app").await.unwrap(),
        [stored.clone(), all2.clone()]
    );
    // All of them in routing order: position, then application.
    assert_eq!(
        store.sip_mappings().await.unwrap(),
        [stored.clone(), sales.clone(), all2.clone()]
    );

    // Refused: a header mapping without its header; nothing written.
    let mut headless = sip_mapping("app", "h", 0, "*");
    headless.kind = SipMatch::Header;
    let e = store.put_sip_mapping("admin", &headless).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ConfigError::SipMapping { .. })),
        "{e}"
    );
    assert_eq!(store.sip_mappings_of("app").await.unwrap().len(), 2);

    // The cache routes with them, and hands out the trunks.
    let mut out = trunk("out");
    out.can_terminate = true;
    out.password = Some(Secret::new("sip-password"));
    store.put_sip_trunk("admin", &out).await.unwrap();
    let cache = CachedStore::new(store.clone());
    assert_eq!(cache.refresh().await, Health::Ok);
    let headers = [("x-room", "room-7")];
    let call = |user| SipCall {
        request_user: user,
        to_user: "",
        headers: &headers,
    };
    let (m, channel) = cache.sip_route(&call("+15550100")).unwrap();
    assert_eq!(
        (m.name.as_str(), channel.as_str()),
        ("room", "rooms-room-7")
    );
    let no_room = SipCall {
        request_user: "+15550100",
        to_user: "",
        headers: &[],
    };
    let (m, channel) = cache.sip_route(&no_room).unwrap();
    assert_eq!((m.name.as_str(), channel.as_str()), ("sales", "+15550100"));
    assert_eq!(
        cache
            .sip_route(&SipCall {
                request_user: "4711",
                ..no_room
            })
            .unwrap()
            .1,
        "lobby"
    );
    assert_eq!(cache.sip_trunk("out"), Some(out.clone()));
    assert_eq!(cache.sip_outbound_trunk(), Some(out));

    assert!(
        store
            .delete_sip_mapping("admin", "app", "all")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_sip_mapping("admin", "app", "all")
            .await
            .unwrap()
    );
    // An application's mappings go with it.
    store.delete_application("admin", "b").await.unwrap();
    assert_eq!(store.sip_mappings().await.unwrap(), [stored]);
    let log = store.audit_log(3).await.unwrap();
    assert_eq!(log[0].action, "application.delete");
    assert_eq!(
        (log[1].action.as_str(), log[1].target.as_str()),
        ("sipMapping.delete", "app")
    );
    assert_eq!(log[1].detail, json!({ "name": "all" }));
    assert_eq!(log[2].action, "sipTrunk.put");
    let put = store
        .audit_log(100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.action == "sipMapping.put")
        .unwrap();
    assert_eq!(put.detail["channelId"], "lobby", "the latest put, whole");
}

async fn recordings_round_trip(backend: Backend) {
    let store = backend.open().await;
    let file = |name: &str, state: &str, session: Option<&str>| RecordedFile {
        file: format!("room/{name}"),
        application_id: "app".into(),
        channel_id: "room".into(),
        client_id: "c1".into(),
        user_id: "u1".into(),
        connection_id: "p1".into(),
        connection_type: "sfu".into(),
        state: state.into(),
        start_at: 1_000,
        duration_ms: 0,
        session_id: session.map(str::to_string),
    };
    store
        .put_recorded_files(&[file("p1-0.mka", "recording", None)])
        .await
        .unwrap();
    // Written again, finished and in a session: replaced.
    let mut finished = file("p1-0.mka", "finished", Some("room-1000"));
    finished.duration_ms = 4_000;
    let video = file("p1-1.mkv", "finished", Some("room-1000"));
    store
        .put_recorded_files(&[finished.clone(), video.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.recorded_files("room-1000").await.unwrap(),
        [finished, video]
    );
    let session = |id: &str, channel: &str, start_at: i64, state: &str| RecordingSession {
        id: id.into(),
        channel_id: channel.into(),
        start_at,
        end_at: start_at + 4_000,
        participants: vec!["c1".into()],
        state: state.into(),
        muxed: None,
        error: None,
    };
    store
        .put_recording_sessions(&[
            session("room-1000", "room", 1_000, "queued"),
            session("hall-5000", "hall", 5_000, "pending"),
        ])
        .await
        .unwrap();
    let mut stored = session("room-1000", "room", 1_000, "stored");
    stored.muxed = Some("s3://b/sessions/room-1000.mkv".into());
    store
        .put_recording_sessions(std::slice::from_ref(&stored))
        .await
        .unwrap();
    let all = store.recording_sessions(None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["hall-5000", "room-1000"], "newest first");
    assert_eq!(
        store.recording_sessions(Some("room"), 10).await.unwrap(),
        [stored]
    );
    assert_eq!(store.recording_sessions(None, 1).await.unwrap().len(), 1);
}

async fn audit_log_newest_first(backend: Backend) {
    let store = backend.open().await;
    let before = now_millis();
    let first = store
        .audit(
            "ops",
            "mediaServer.drain",
            "ms-1",
            &json!({ "reason": "kernel" }),
        )
        .await
        .unwrap();
    let second = store
        .audit(
            "ops",
            "mediaServer.undrain",
            "ms-1",
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert!(second > first);
    let log = store.audit_log(10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].id, second);
    assert_eq!(log[1].detail, json!({ "reason": "kernel" }));
    assert_eq!(log[1].actor, "ops");
    assert!(log[1].at >= before && log[1].at <= now_millis());
    assert_eq!(store.audit_log(1).await.unwrap().len(), 1);
    assert!(store.audit_log(0).await.unwrap().is_empty());
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Fills a store, caches it, then takes the database away (`outage`): the cache keeps serving.
async fn cache_serves_through_an_outage(store: Store, outage: impl AsyncFnOnce(&Store)) {
    store
        .put_application("admin", &Application::new("app", "s"))
        .await
        .unwrap();
    store
        .put_channel_config("admin", &channel("app", "room-*", 1))
        .await
        .unwrap();
    store
        .put_deployment("admin", &deployment("Default"))
        .await
        .unwrap();
    let cache = CachedStore::new(store.clone());
    assert!(matches!(cache.health(), Health::Degraded(_)));
    assert!(cache.application("app").is_none());
    assert_eq!(cache.refresh().await, Health::Ok);
    assert_eq!(cache.health(), Health::Ok);
    let before = cache.snapshot();
    assert_eq!(before.deployments.len(), 1);

    outage(&store).await;
    let started = Instant::now();
    let health = cache.refresh().await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let Health::Degraded(reason) = health else {
        panic!("still ok after the outage")
    };
    assert!(reason.contains("configuration database"), "{reason}");
    assert_eq!(cache.health(), Health::Degraded(reason));
    assert_eq!(cache.snapshot(), before);
    assert_eq!(cache.application("app").unwrap().secrets, ["s"]);
    assert_eq!(
        cache.channel_config("app", "room-7").unwrap().pattern,
        "room-*"
    );
    assert!(cache.channel_config("app", "hall").is_none());
    let json = serde_json::to_value(cache.health()).unwrap();
    assert_eq!(json["status"], "degraded");
}

#[tokio::test]
async fn postgres_reopening_applies_nothing_twice() {
    reopening_applies_nothing_twice(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_reopening_applies_nothing_twice() {
    reopening_applies_nothing_twice(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_deployments_round_trip() {
    deployments_round_trip(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_deployments_round_trip() {
    deployments_round_trip(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_deployment_turn_secrets() {
    deployment_turn_secrets(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_deployment_turn_secrets() {
    deployment_turn_secrets(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_applications_round_trip_and_rotate() {
    applications_round_trip_and_rotate(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_applications_round_trip_and_rotate() {
    applications_round_trip_and_rotate(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_channel_configs_in_order() {
    channel_configs_in_order(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_channel_configs_in_order() {
    channel_configs_in_order(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_recordings_round_trip() {
    recordings_round_trip(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_recordings_round_trip() {
    recordings_round_trip(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_webhooks_round_trip() {
    webhooks_round_trip(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_webhooks_round_trip() {
    webhooks_round_trip(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_sip_trunks_round_trip() {
    sip_trunks_round_trip(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_sip_trunks_round_trip() {
    sip_trunks_round_trip(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_sip_mappings_round_trip() {
    sip_mappings_round_trip(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_sip_mappings_round_trip() {
    sip_mappings_round_trip(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_audit_log_newest_first() {
    audit_log_newest_first(Backend::postgres().await).await;
}

#[tokio::test]
async fn sqlite_audit_log_newest_first() {
    audit_log_newest_first(Backend::sqlite()).await;
}

#[tokio::test]
async fn postgres_cache_serves_while_the_database_is_gone() {
    let db = PgDatabase::new().await;
    let store = Store::open(Some(&db.url), &std::env::temp_dir())
        .await
        .unwrap();
    // The database disappears under the open pool: its connections are cut and new ones fail.
    cache_serves_through_an_outage(store, async |_| db.drop_now().await).await;
}

#[tokio::test]
async fn sqlite_cache_serves_while_the_database_is_closed() {
    let backend = Backend::sqlite();
    let store = backend.open().await;
    cache_serves_through_an_outage(store, async |store| store.close().await).await;
}

/// A new SQLite file opens every time: the pool's first connections once raced to switch it
/// to WAL, and some starts failed with "database is locked" (here: within 100 tries, every
/// time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_new_file_opens_every_time() {
    for _ in 0..100 {
        let dir = TempDir::new();
        let store = Store::open(None, &dir.0).await.unwrap();
        store.close().await;
    }
}

#[tokio::test]
async fn sqlite_in_memory() {
    let store = Store::open(Some("sqlite::memory:"), &std::env::temp_dir())
        .await
        .unwrap();
    store
        .put_application("admin", &Application::new("app", "s"))
        .await
        .unwrap();
    // Other connections of the pool see the same database.
    let reads = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.applications().await })
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.unwrap().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn postgres_down_fails_in_time_without_showing_the_password() {
    let url = "postgres://switchyard:hunter2secret@127.0.0.1:1/config";
    let started = Instant::now();
    let e = Store::open(Some(url), &std::env::temp_dir())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    let (shown, debug) = (e.to_string(), format!("{e:?}"));
    assert!(
        !shown.contains("hunter2secret") && !debug.contains("hunter2secret"),
        "{shown} / {debug}"
    );
    assert!(
        shown.contains("postgres://switchyard:****@127.0.0.1:1/config"),
        "{shown}"
    );
    assert!(matches!(e, StoreError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn other_urls_are_refused_masked() {
    let e = Store::open(Some("mysql://root:pw123@db/x"), &std::env::temp_dir())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Url { .. }), "{e}");
    assert!(!e.to_string().contains("pw123"), "{e}");
}
