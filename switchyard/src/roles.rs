//! `switchyard gateway` and `switchyard media-server`: the cluster's two processes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_cluster::signing::{self, ClusterSecret};

use clap::Args;
use switchyard_cluster::admin::{self, Admin, Administered};
use switchyard_cluster::capacity::Capacity;
use switchyard_cluster::gateway::{self, Gateway};
use switchyard_cluster::listen::bind_with_fallback;
use switchyard_cluster::node::{self, Node};
use switchyard_cluster::presence::Presence;
use switchyard_cluster::registry::{MediaServerRecord, MemoryRegistry, RedisRegistry, Registry};
use switchyard_cluster::{api, stun_probe};
use switchyard_controlplane::allowlist::AllowList;
use switchyard_controlplane::config::Config;
use switchyard_controlplane::server::serve_with;
use switchyard_controlplane::session::AppState;
use switchyard_controlplane::token::Applications;
use switchyard_store::Deployment;
use tokio::sync::{mpsc, watch};

use crate::{
    BadArgument, ConfigFile, DevArgs, Fatal, MediaArgs, TlsArgs, announced, control_runtime,
    deployment_id, media_ports, mixer_config, open_store, page_address, shutdown_signal,
    shutdown_watch, stopped,
};

/// Cluster traffic is accepted from these when INTERNAL:IPADDRESSES is not set: loopback and
/// the private ranges, never the internet.
pub(crate) const DEFAULT_INTERNAL: &str =
    "127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

#[derive(Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// Address for HTTP: signalling (/sync), the demo page, /ready, /metrics, and the cluster API
    /// media servers register with (SERVICEBASEURL points here, usually through a load balancer).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SWITCHYARD_HTTP")]
    http: SocketAddr,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// This gateway's id, part of its participants' ids [default: random].
    #[arg(long, env = "SWITCHYARD_GATEWAY_ID")]
    id: Option<String>,
    /// Keeps this deployment's Redis keys apart from others sharing the Redis
    /// (keys are `switchyard:<namespace>:...`).
    #[arg(long, default_value = "default", env = "SWITCHYARD_NAMESPACE")]
    namespace: String,
    #[command(flatten)]
    dev: DevArgs,
}

/// The admin API's listeners (gateway and all-in-one).
#[derive(Args)]
pub struct AdminArgs {
    /// Address for the admin API (/admin/api/v1), reachable only from ADMIN:IPADDRESSES.
    #[arg(long, default_value = "0.0.0.0:9090", env = "SWITCHYARD_ADMIN_HTTP")]
    pub admin: SocketAddr,
    /// Address for the admin API over HTTPS (with --tls-cert).
    #[arg(long, default_value = "0.0.0.0:9443", env = "SWITCHYARD_ADMIN_HTTPS")]
    pub admin_https: SocketAddr,
}

#[derive(Args)]
pub struct MediaServerArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// The cluster TCP port for the internal control API; when taken, the next free port
    /// (8446, 8447, ...) is used and registered.
    #[arg(long, default_value_t = 8445, env = "SWITCHYARD_CLUSTER_PORT")]
    cluster_port: u16,
    /// Address the cluster port binds to.
    #[arg(long, default_value = "0.0.0.0")]
    cluster_bind: IpAddr,
    /// The address gateways reach this server's cluster port on [default: an interface address
    /// inside INTERNAL:IPADDRESSES, else the first non-loopback IPv4, else 127.0.0.1].
    #[arg(long)]
    cluster_address: Option<IpAddr>,
    /// This server's id in the registry [default: <hostname>-<cluster port>].
    #[arg(long, env = "SWITCHYARD_MEDIA_SERVER_ID")]
    id: Option<String>,
    /// SFU transports (peer connections) this server takes before it reports itself over
    /// capacity; placement then prefers other servers. MCU connections count against the
    /// deployment's MCU threshold on top [default: 500 per worker].
    #[arg(long, env = "SWITCHYARD_CAPACITY")]
    capacity: Option<usize>,
    /// STUN servers (host:port) to learn the public IP from, when EXTERNAL:PUBLICIPADDRESS is
    /// not set; also DEPLOYMENTS:0:STUNSERVERS (comma-separated).
    #[arg(long = "stun-server")]
    stun_servers: Vec<String>,
    /// How long SIGTERM waits for sessions to end while draining before stopping anyway.
    #[arg(long, default_value = "300", value_parser = parse_seconds)]
    drain_timeout: Duration,
    /// Where recordings are written (`<data-dir>/recordings/`; each media server needs its
    /// own), until RECORDING:STORAGE takes them.
    #[arg(long, default_value = "switchyard-data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    media: MediaArgs,
}

fn parse_seconds(s: &str) -> Result<Duration, BadArgument> {
    s.trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| BadArgument::Seconds(s.to_string()))
}

/// The allow list of `setting` (checked by `Config::load` already), else `default`.
/// CLUSTER:SECRET, which signs the cluster API's requests both ways and seals pipe keys
/// (`switchyard_cluster::signing`); without it, only INTERNAL:IPADDRESSES guards that API.
pub(crate) fn cluster_secret(config: &Config) -> Result<Option<ClusterSecret>, Fatal> {
    match config.get("CLUSTER:SECRET") {
        Some(secret) => ClusterSecret::new(secret)
            .map(Some)
            .ok_or(Fatal::ClusterSecret),
        None => {
            tracing::warn!(
                "CLUSTER:SECRET is not set: the cluster API is guarded by INTERNAL:IPADDRESSES alone, and pipe keys cross the network in clear"
            );
            Ok(None)
        }
    }
}

pub(crate) fn allowlist(
    config: &Config,
    setting: &'static str,
    default: &str,
) -> Result<AllowList, Fatal> {
    AllowList::parse(config.get(setting).unwrap_or(default))
        .map_err(|source| Fatal::AllowList { setting, source })
}

async fn registry(config: &Config, namespace: &str) -> Result<Registry, Fatal> {
    Ok(match config.get("CONNECTIONSTRINGS:CACHE") {
        Some(url) => Registry::Redis(RedisRegistry::connect(url, namespace).await.map_err(
            |source| Fatal::Registry {
                url: switchyard_store::mask(url),
                source,
            },
        )?),
        None => Registry::Memory(MemoryRegistry::new()),
    })
}

/// ADMIN:APIKEY, else the key generated in the data directory.
pub(crate) fn admin_key(config: &Config, data_dir: &std::path::Path) -> Result<String, Fatal> {
    if let Some(key) = config.get("ADMIN:APIKEY") {
        return Ok(key.trim().to_string());
    }
    let (key, path) =
        switchyard_controlplane::dev::admin_api_key(data_dir).map_err(|source| Fatal::DataDir {
            what: "admin API key",
            dir: data_dir.to_path_buf(),
            source,
        })?;
    tracing::info!(
        "admin API key (ADMIN:APIKEY is not set) is in {}",
        path.display()
    );
    Ok(key)
}

pub fn gateway(args: GatewayArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    let internal = allowlist(&config, "INTERNAL:IPADDRESSES", DEFAULT_INTERNAL)?;
    let admin_allow = allowlist(&config, "ADMIN:IPADDRESSES", DEFAULT_INTERNAL)?;
    let admin_key = admin_key(&config, &args.dev.data_dir)?;
    let (fixed, dev_tokens) = args.dev.load()?;
    let applications = Applications::default();
    let id = args
        .id
        .unwrap_or_else(|| format!("g{:06x}", rand::random::<u32>() & 0xff_ffff));
    let runtime = control_runtime()?;
    runtime.block_on(async move {
        let cache = open_store(&config, &args.dev.data_dir, &applications, &fixed).await?;
        let registry = registry(&config, &args.namespace).await?;
        let presence = match config.get("CONNECTIONSTRINGS:CACHE") {
            Some(url) => Presence::redis(url, &args.namespace).await?,
            None => {
                tracing::warn!("CONNECTIONSTRINGS:CACHE is not set: state is in this process only, so run one gateway");
                Presence::memory()
            }
        };
        let mut g = Gateway::new(
            id.clone(),
            applications.clone(),
            cache.clone(),
            registry,
            presence,
            internal,
        )?
        .with_secret(cluster_secret(&config)?);
        g.dev_tokens = dev_tokens;
        g.sync_limits = switchyard_controlplane::sync_limits::SyncLimits::from_config(&config)
            .map_err(|source| Fatal::AllowList {
                setting: "SYNC:IPADDRESSES",
                source,
            })?;
        // Read once, like TURN:SECRET: media servers read theirs at start too, so a gateway
        // following a rotation sooner would hand out credentials they do not accept yet.
        let deployment = cache.deployment(deployment_id(&config));
        g.turn_secrets = crate::turn::secrets(&config, deployment.as_ref(), None)?;
        if g.turn_secrets.is_none() {
            tracing::info!("no TURN secret (TURN:SECRET or the deployment's turnSecret): clients get no TURN servers");
        }
        let g = Arc::new(g);
        let listener = tokio::net::TcpListener::bind(args.http)
            .await
            .map_err(|source| Fatal::Listen { addr: args.http, what: "HTTP", source })?;
        let admin_listener = tokio::net::TcpListener::bind(args.admin.admin)
            .await
            .map_err(|source| Fatal::Listen { addr: args.admin.admin, what: "the admin API", source })?;
        let https = args.tls.bind(args.tls.https).await?;
        let admin_https = args.tls.bind(args.admin.admin_https).await?;
        let page = page_address(&listener)?;
        let admin_page = page_address(&admin_listener)?;
        tracing::info!(
            "switchyard gateway {id} {}: signalling ws://{page}/sync | demo http://{page}/ | ready http://{page}/ready | media servers register at http://{page}/cluster/v1/media-servers | admin API http://{admin_page}/admin/api/v1",
            env!("CARGO_PKG_VERSION")
        );
        tokio::spawn(g.clone().pump_events());
        let stop_rx = shutdown_watch();
        let watcher = tokio::spawn(g.clone().watch_servers(stop_rx.clone()));
        tokio::spawn(switchyard_controlplane::follow::follow(
            cache,
            applications,
            fixed,
            stop_rx.clone(),
        ));
        let admin = Arc::new(Admin::new(
            Administered::Cluster(g.clone()),
            g.store.clone(),
            admin_allow,
            vec![admin_key],
        ));
        for (https, router, what) in [
            (https, gateway::router(g.clone()), "signalling"),
            (admin_https, admin::router(admin.clone()), "admin API"),
        ] {
            let Some(https) = https else { continue };
            tracing::info!("HTTPS {what} on {}", https.local_addr());
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                if let Err(e) = https.serve(router, stop).await {
                    tracing::error!("{e}");
                }
            });
        }
        let admin_server = tokio::spawn(serve_with(
            admin_listener,
            admin::router(admin),
            stopped(stop_rx.clone()),
            || {},
        ));
        let notify = g.clone();
        serve_with(
            listener,
            gateway::router(g.clone()),
            stopped(stop_rx),
            move || {
                let _ = notify.shutdown.send(true);
            },
        )
        .await
        .map_err(|source| Fatal::Serve { what: "HTTP server", source })?;
        let _ = admin_server.await;
        let _ = watcher.await;
        tracing::info!("stopped");
        Ok::<(), Fatal>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The address gateways reach this host on: inside INTERNAL:IPADDRESSES when that is set.
pub(crate) fn cluster_address(config: &Config) -> IpAddr {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .collect();
    ips.sort();
    if let Some(list) = config.get("INTERNAL:IPADDRESSES")
        && let Ok(allow) = AllowList::parse(list)
        && let Some(ip) = ips
            .iter()
            .find(|ip| allow.allows(**ip) && !ip.is_loopback())
    {
        return *ip;
    }
    ips.into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The deployment `id` from the gateway at `base`, waiting (and saying so) while the gateway
/// does not answer; `None` when the gateway has no such deployment.
async fn fetch_deployment(
    http: &reqwest::Client,
    secret: Option<&ClusterSecret>,
    base: &str,
    id: &str,
) -> Option<Deployment> {
    let url = format!(
        "{}{}/deployments/{id}",
        base.trim_end_matches('/'),
        api::PREFIX
    );
    let mut waited = false;
    loop {
        let request = signing::request(http, secret, reqwest::Method::GET, &url, None::<&()>);
        match request.send().await {
            Ok(r) if r.status().is_success() => match r.json::<Deployment>().await {
                Ok(d) => {
                    tracing::info!(deployment = %d.id, stun = ?d.stun_servers, per_core = d.sfu_connections_per_cpu_unsafe, "deployment settings from the gateway");
                    return Some(d);
                }
                Err(e) => {
                    tracing::warn!(
                        "the gateway's deployment {id:?} is not readable ({e}); using defaults"
                    );
                    return None;
                }
            },
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                tracing::info!("no deployment {id:?} is configured; using defaults");
                return None;
            }
            Ok(r) => {
                tracing::warn!(
                    "the gateway answered {} for deployment {id:?}; using defaults",
                    r.status()
                );
                return None;
            }
            Err(e) => {
                if !waited {
                    tracing::warn!("waiting for the gateway at {base} ({e})");
                    waited = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mediaserver".into())
}

pub fn media_server(mut args: MediaServerArgs) -> Result<(), Fatal> {
    let config = args.config.load()?;
    args.media.media_bind = crate::media_bind(&config, args.media.media_bind)?;
    let base = config
        .get("SERVICEBASEURL")
        .map(str::to_string)
        .ok_or(Fatal::NoServiceBaseUrl)?;
    let internal = allowlist(&config, "INTERNAL:IPADDRESSES", DEFAULT_INTERNAL)?;
    let secret = cluster_secret(&config)?;
    let region = config.get("REGION").unwrap_or("default").to_string();
    let mut stun_servers = args.stun_servers.clone();
    if let Some(list) = config.get("DEPLOYMENTS:0:STUNSERVERS") {
        stun_servers.extend(
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
    }
    let deployment_id = deployment_id(&config).to_string();
    let mixer = mixer_config(&config)?;
    let configured_public = args.media.public_ip.or_else(|| config.public_ip());
    let (media, mut events) = args.media.start(&config)?;
    let ports = media_ports(&media);
    let backend = media.backend();
    let workers = media.workers();
    let runtime = control_runtime()?;
    runtime.block_on(async move {
        let listener = bind_with_fallback(args.cluster_bind, args.cluster_port)
            .await
            .map_err(|source| Fatal::ClusterPort { port: args.cluster_port, source })?;
        let port = listener.local_addr().map_err(Fatal::LocalAddress)?.port();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()?;
        // The deployment's settings come from the gateway; without one, the defaults.
        let deployment = fetch_deployment(&http, secret.as_ref(), &base, &deployment_id).await;
        if let Some(d) = &deployment
            && stun_servers.is_empty()
        {
            stun_servers = d.stun_servers.clone();
        }
        // The deployment's thresholds per core (SFU per media worker, MCU per MCU thread);
        // --capacity sets the transports.
        let mcu_threads = media.mcu().map_or(0, |m| m.threads());
        let mut capacity = Capacity::of(deployment.as_ref(), workers, mcu_threads);
        if let Some(transports) = args.capacity {
            capacity.transports = transports;
        }
        let public = match configured_public {
            Some(ip) => Some(ip),
            None if stun_servers.is_empty() => None,
            None => match stun_probe::public_ip(&stun_servers).await {
                Ok(ip) => Some(ip),
                Err(e) => {
                    tracing::warn!("public IP detection failed ({e}); announcing interface addresses");
                    None
                }
            },
        };
        let announce = announced(public, args.media.media_bind);
        let turn = crate::turn::start(
            &config,
            deployment.as_ref(),
            None,
            crate::turn::Media {
                bind_ip: args.media.media_bind,
                announced: &announce,
                ports: &ports,
                workers,
                handoff: media.handoff(),
            },
        )?;
        let id = args.id.unwrap_or_else(|| format!("{}-{port}", hostname()));
        let cluster_ip = args.cluster_address.unwrap_or_else(|| cluster_address(&config));
        let base_record = MediaServerRecord {
            id: id.clone(),
            region: region.clone(),
            available: true,
            active: false,
            over_capacity: false,
            used_capacity: 0.0,
            draining: false,
            ip_addresses: announce.iter().map(IpAddr::to_string).collect(),
            public_ip_address: public.map(|ip| ip.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            core_count: workers as u32,
            cluster_address: SocketAddr::new(cluster_ip, port).to_string(),
            turn_urls: turn.as_ref().map(|t| t.urls().to_vec()).unwrap_or_default(),
            checks: Vec::new(),
        };
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let mut state = AppState::new(media, Applications::default(), announce.clone());
        state.mixer = mixer;
        state.shard_after = crate::shard_after(&config);
        state.ended = Some(ended_tx);
        let (relay_tx, relay_rx) = mpsc::unbounded_channel();
        state.relay = Some(relay_tx);
        state.turn = turn;
        // Channels whose configuration says `recording` are recorded here (their
        // publications' tracks, on the MCU threads).
        let recordings = args.data_dir.join("recordings");
        let _recordings = crate::recording::roles::media_server(&config, recordings.clone())?;
        state.recordings = Some(recordings);
        let state = Arc::new(state);
        crate::doctor::check_at_start(
            &config,
            &args.media,
            &stun_servers,
            switchyard_controlplane::listeners::Listeners::of(&state),
            state.metrics.checks.clone(),
        );
        let node = Arc::new(
            Node::new(state.clone(), base_record, capacity, internal).with_secret(secret.clone()),
        );
        tracing::info!(
            "switchyard media-server {id} {} in region {region}: cluster API http://{cluster_ip}:{port}{} | registering with {base}",
            env!("CARGO_PKG_VERSION"),
            api::PREFIX
        );
        tracing::info!(
            "media: {} worker(s) on {} {:?} ({} backend), announcing {:?}, capacity {} transports and {} MCU connections",
            ports.len(),
            if state.media.ice_tcp() { "UDP+TCP" } else { "UDP" },
            ports,
            backend.as_str(),
            announce,
            capacity.transports,
            capacity.mcu_connections
        );
        let events_state = state.clone();
        let events_task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                events_state.on_media_event(event);
            }
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(node::heartbeat(node.clone(), http.clone(), base.clone(), stop_rx));
        tokio::spawn(node::relay(node.clone(), http.clone(), base.clone(), relay_rx));
        tokio::spawn(node::report_ended(node.clone(), http, base, ended_rx));
        // SIGTERM or Ctrl-C: drain (no new sessions, existing ones go on), then stop.
        let drain_node = node.clone();
        let drain_timeout = args.drain_timeout;
        let stopping = async move {
            shutdown_signal().await;
            drain_node.drain();
            tokio::select! {
                _ = node::drained(&drain_node, drain_timeout) => {}
                _ = shutdown_signal() => tracing::warn!("second signal: stopping without waiting"),
            }
        };
        serve_with(listener, node::router(node.clone()), stopping, || {})
            .await
            .map_err(|source| Fatal::Serve { what: "cluster API", source })?;
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
        tracing::info!("stopping media workers");
        state.media.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), events_task).await;
        tracing::info!("stopped");
        Ok::<(), Fatal>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
