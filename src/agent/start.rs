//! Wiring at start: the store, images, runtime, network, adoption, the API and housekeeping.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, Published};
use crate::image::ImageStore;
use crate::network::{Network, NetworkPaths};
use crate::runtime::{ForkServer, Runtime, SupervisorRuntime};
use crate::store::Store;
use crate::volume::SystemMounter;
use crate::watch::{UrlSources, WatchOptions, Watcher};

use super::deps::Deps;
use super::housekeeping::{Housekeeping, Settings};
use super::state::Agent;
use super::{adopt, event_loop, node, node_object, pod_files, AgentError, Config};

pub(super) async fn start(
    config: Config,
    ex: Arc<smol::Executor<'static>>,
    fork_server: Option<ForkServer>,
) -> Result<(), AgentError> {
    let state = config.state.clone();
    // Flags the API refuses fail the start before anything is set up.
    let api_config = api_config(&config)?;
    let (store, recovery) = Store::open_or_recover(
        &state.join(crate::store::DATABASE),
        crate::format::now().as_second(),
    )?;
    let images = Arc::new(ImageStore::open(crate::image::store_dir(&state))?);
    let runtime = Arc::new(SupervisorRuntime::new(&state).with_fork_server(fork_server));
    let network = Some(Arc::new(Network::load(&NetworkPaths {
        conf_dir: config.network.cni_conf_dir.clone(),
        plugin_dirs: config.network.cni_bin_dirs.clone(),
        subnet: config.network.pod_subnet,
        in_process: config.network.in_process,
        ..NetworkPaths::standard(&state)
    })));
    let (node, node_config) = node::capacity(&config.node, &state);
    let (outcomes, outcome_rx) = smol::channel::unbounded();
    let devices = devices(&config, &state, &ex, &outcomes);
    let userns = userns(&config, &state)?;
    let deps = Arc::new(Deps {
        runtime: runtime.clone(),
        images: images.clone(),
        pull_options: crate::image::pull::PullOptions::for_state(&state),
        network,
        node,
        data_dir: state.join("pod-data"),
        mounter: Arc::new(SystemMounter),
        host_resolv: pod_files::host_resolv_conf(),
        pod_max_pids: config.node.pod_max_pids,
        devices,
        userns,
    });
    crate::tasks::use_executor(&ex);
    if let Some(net) = deps.network.clone() {
        crate::tasks::spawn(async move { net.watch_overlaps().await }).detach();
    }
    // Adoption needs the manifests: a sandbox without a record is kept if they want its pod.
    // Manifest URLs' cached bodies are in the first update: their pods are adopted, not
    // stopped, when the server is down at start.
    let (sources, cached) = UrlSources::load(&config.manifest_urls, &state)?;
    let (watcher, updates) =
        Watcher::start_with_sources(&config.manifests, WatchOptions::default(), cached)
            .map_err(|source| AgentError::Watch { path: config.manifests.clone(), source })?;
    let Ok(first) = updates.recv().await else { return Ok(()) };
    let adoption = adopt::adopt(&deps, &store, &first.state).await;

    let _import =
        crate::image::ImportWatcher::start(images.clone(), |outcome| match &outcome.result {
            Ok(refs) => {
                log::info!("images: imported {} from {}", refs.join(", "), outcome.file.display())
            }
            Err(e) => log::warn!("images: {e}"),
        })
        .map_err(|e| log::warn!("images: auto-import of new files disabled: {e}"))
        .ok();

    let published = Arc::new(Published::default());
    published.metrics.set_sources(sources.statuses());
    // Polls for as long as the agent runs (the task ends with the watcher).
    let _sources = crate::tasks::spawn(sources.run(watcher.source_sender()));
    let facts = node_object::facts(
        &deps.node.name,
        &deps.node.host_ips,
        &node_config,
        &state,
        &node_object::Sources::host(),
        crate::format::now(),
    );
    node_object::announce(&published, &facts);
    let (bound_tx, bound_rx) = smol::channel::bounded::<SocketAddr>(1);
    let api_task = ex.spawn(api::serve(api_config, published.clone(), move |addr| {
        let _ = bound_tx.try_send(addr);
    }));
    match bound_rx.recv().await {
        Ok(addr) => log::info!("api: listening on http://{addr}"),
        // serve dropped the sender without binding: it returned its bind error.
        Err(_) => return api_task.await.map_err(AgentError::from),
    }
    // The server lives as long as the agent; the task is cancelled when the loop returns.
    let _api = api_task;

    log::info!("outpost {} watching {}", env!("CARGO_PKG_VERSION"), watcher.dir().display());

    let runtime_events = runtime.events();
    let housekeeping = Housekeeping::new(Settings::new(&config, images.clone()));
    let mut agent = Agent::new(ex.clone(), deps, store, published, outcomes, housekeeping);
    agent.database_recovered(recovery.as_ref(), &adoption.unrecorded);
    agent.register_node(facts);
    agent.restore_rollouts(config.rollout);
    agent.resume(adoption, node_config);
    // The first reconcile must see the directory as it is, or adopted pods would be stopped.
    agent.on_desired(first);
    event_loop::run(agent, updates, outcome_rx, runtime_events).await
}

/// The user namespace id pool (a misconfigured one fails the start, as the kubelet's) and
/// the blocks pods hold.
fn userns(
    config: &Config,
    state: &std::path::Path,
) -> Result<Option<Arc<super::deps::UsernsIds>>, AgentError> {
    let pool = crate::userns::Pool::configured(config.node.userns_pool)?;
    let ranges = match crate::store::IdRanges::open(&state.join(crate::store::DATABASE)) {
        Ok(ranges) => ranges,
        Err(e) => {
            log::warn!("user namespaces: disabled: {e}");
            return Ok(None);
        }
    };
    // debug, not info: validation still refuses hostUsers: false (issue #25).
    log::debug!(
        "user namespaces: pods with hostUsers: false get 65536 ids each from {pool} ({} pods)",
        pool.blocks()
    );
    Ok(Some(Arc::new(super::deps::UsernsIds { pool, ranges })))
}

/// The device plugin manager, serving registrations; its counts reach the engine as facts.
/// Without it (a directory that cannot be served) pods asking for devices are rejected.
fn devices(
    config: &Config,
    state: &std::path::Path,
    ex: &Arc<smol::Executor<'static>>,
    outcomes: &smol::channel::Sender<super::outcome::Outcome>,
) -> Option<Arc<crate::device::Devices>> {
    let dir = &config.node.device_plugin_dir;
    let store = crate::store::Allocations::open(&state.join(crate::store::DATABASE))
        .map_err(|e| log::warn!("device plugins: disabled: {e}"))
        .ok()?;
    let outcomes = outcomes.clone();
    let on_change = Box::new(move |counts| {
        let fact = crate::engine::Observed::Devices(counts);
        let _ = outcomes.try_send(super::outcome::Outcome::fact(fact));
    });
    let devices = crate::device::Devices::new(dir, ex.clone(), Some(store), on_change)
        .and_then(|d| d.serve().map(|()| d))
        .map_err(|e| log::warn!("device plugins: disabled: {e}"))
        .ok()?;
    Some(devices)
}

/// The API server's settings; reads the token file.
fn api_config(config: &Config) -> Result<api::ApiConfig, AgentError> {
    let a = &config.api;
    if !a.listen.ip().is_loopback() && !a.listen_allow_remote {
        return Err(api::ApiError::RemoteListen { addr: a.listen }.into());
    }
    Ok(api::ApiConfig {
        socket: a.socket.clone(),
        listen_allow_remote: a.listen_allow_remote,
        secure: a.secure.clone(),
        token: a.token_file.as_deref().map(api::ApiConfig::read_token).transpose()?,
        show_secrets: a.show_secrets,
        ..api::ApiConfig::new(a.listen, config.state.clone())
    })
}
