//! `outpost run`: wires the watcher, the engine and the runtime, and owns their lifetimes.
//!
//! One task owns all state (the engine, the desired state, each pod's context) and runs the
//! loop: reconcile → dispatch actions as tasks → publish the API snapshot → wait for the next
//! input (a manifest change, an action's outcome, a runtime event, the engine's wake-up time).
//! Action tasks never touch that state; they answer with an [`actions::Outcome`].

mod actions;
mod adopt;
pub mod clock;
pub mod memory;
mod node;
mod pod_files;
pub mod pressure;
mod termination;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{self, Published};
use crate::cli::RunArgs;
use crate::engine::{Action, ContainerRef, Engine, Observed};
use crate::image::ImageStore;
use crate::manifest::DesiredState;
use crate::network::{Network, NetworkPaths};
use crate::runtime::{Event, ForkServer, Runtime, SandboxDeath, SupervisorRuntime};
use crate::sd_notify::Notifier;
use crate::store::{EventRecord, PodRecord, Store};
use crate::volume::SystemMounter;
use crate::watch::{WatchOptions, Watcher};

use actions::{Deps, Outcome, PodContext, Update};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Containers need namespaces, mounts and cgroups.
    #[error("outpost run must run as root (it creates namespaces, mounts and cgroups)")]
    NotRoot,
    #[error("state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    /// Two agents on one state directory would fight over the same pods.
    #[error("another outpost agent already uses {path} (lock held): stop it first")]
    Locked { path: PathBuf },
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: crate::watch::WatchError },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Images(#[from] crate::image::ImageError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("the agent's event loop (epoll, eventfd): {0}")]
    EventLoop(std::io::Error),
}

/// `fork_server`: started by `main` before any thread; supervisors are exec'd without it.
pub fn run(args: RunArgs, fork_server: Option<ForkServer>) -> Result<(), AgentError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(AgentError::NotRoot);
    }
    let state = &args.state;
    std::fs::create_dir_all(state)
        .map_err(|source| AgentError::StateDir { path: state.clone(), source })?;
    let _lock = lock(state)?;
    let ex = Arc::new(smol::Executor::new());
    // Not `smol::block_on`: with it, async-io's reactor thread and this one take turns at
    // the reactor, and after each turn the reactor thread polls with a backoff of a dozen
    // timed wake-ups, which cost more than the probes themselves. This thread parks in a
    // reactor of its own instead, which also serves the probes and the loop's timer.
    crate::tasks::block_on(ex.run(main_loop(args, ex.clone(), fork_server)))
        .map_err(AgentError::EventLoop)?
}

/// An exclusive lock on `<state>/outpost.lock`, held while the agent runs.
fn lock(state: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AgentError> {
    let path = state.join("outpost.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| AgentError::StateDir { path: path.clone(), source })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| AgentError::Locked { path })
}

/// Image garbage collection: first a while after start (once pods are up), then periodically.
const IMAGE_GC_DELAY: Duration = Duration::from_secs(300);
const IMAGE_GC_EVERY: Duration = Duration::from_secs(3600);
/// The grid engine wake-ups are rounded up to, and the longest a quiet input waits for its
/// step: reactions to timers are at most this late (the kubelet's are seconds).
const TICK: Duration = Duration::from_millis(100);

/// Time until the next point of the tick grid.
fn until_next_tick(now: crate::engine::Timestamp) -> Duration {
    let tick = TICK.as_millis() as i64;
    let ms = now.as_millisecond();
    Duration::from_millis((tick - ms.rem_euclid(tick)) as u64)
}

/// Events kept in memory for the API.
const RECENT_EVENTS: usize = 1000;

/// The reason of the node's Warning event when a damaged state database was replaced, or
/// running pods were found without records.
const DATABASE_RECOVERED: &str = "StateDatabaseRecovered";

/// Everything the loop reacts to.
enum Input {
    Desired(crate::watch::Update),
    Outcome(Outcome),
    Runtime(Event),
    Tick,
    WatcherGone,
}

struct Agent<R: Runtime + 'static> {
    ex: Arc<smol::Executor<'static>>,
    deps: Arc<Deps<R>>,
    engine: Engine,
    desired: Arc<DesiredState>,
    /// Shared with the action tasks: a probe takes its pod's context without copying it.
    contexts: HashMap<String, Arc<PodContext>>,
    outcomes: smol::channel::Sender<Outcome>,
    published: Arc<Published>,
    store: Store,
    pending_events: Vec<EventRecord>,
    /// Pod UID → namespace/name, for events of pods that already left the desired state.
    names: HashMap<String, (String, String)>,
    /// The engine's sandbox tag of each started instance, echoed with its exit.
    tags: HashMap<(String, String, u32), u64>,
    /// The engine snapshot last written per pod, so only changes are written.
    persisted: HashMap<String, String>,
    /// The newest events, for the API (the store keeps more).
    recent_events: Arc<Vec<EventRecord>>,
    /// When unreferenced image data is next collected.
    next_image_gc: std::time::Instant,
    last_step: std::time::Instant,
    /// Something other than a quiet probe result arrived since the last publish.
    changed: bool,
}

async fn main_loop(
    args: RunArgs,
    ex: Arc<smol::Executor<'static>>,
    fork_server: Option<ForkServer>,
) -> Result<(), AgentError> {
    let state = args.state.clone();
    let (store, recovery) =
        Store::open_or_recover(&state.join("outpost.db"), clock::now().as_second())?;
    let images = Arc::new(ImageStore::open(crate::image::store_dir(&state))?);
    let runtime = Arc::new(SupervisorRuntime::new(&state).with_fork_server(fork_server));
    let network = Some(Arc::new(Network::load(&NetworkPaths {
        conf_dir: args.cni_conf_dir.clone(),
        plugin_dirs: args.cni_bin_dir.clone(),
        subnet: args.pod_subnet,
        ..NetworkPaths::standard(&state)
    })));
    let (node, node_config) = pressure::node(&args, &state);
    let deps = Arc::new(Deps {
        runtime: runtime.clone(),
        images: images.clone(),
        pull_options: crate::image::pull::PullOptions::for_state(&state),
        network,
        node,
        data_dir: state.join("pod-data"),
        mounter: Arc::new(SystemMounter),
        host_resolv: pod_files::host_resolv_conf(),
        pod_max_pids: u64::try_from(args.pod_max_pids).ok().filter(|&n| n > 0),
    });
    crate::tasks::use_executor(&ex);
    // Adoption needs the manifests: a sandbox without a record is kept if they want its pod.
    let (watcher, updates) = Watcher::start(&args.manifests, WatchOptions::default())
        .map_err(|source| AgentError::Watch { path: args.manifests.clone(), source })?;
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
    let (bound_tx, bound_rx) = smol::channel::bounded::<SocketAddr>(1);
    let api_config = api::ApiConfig::from_args(&args)?;
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

    let recent_events = Arc::new(store.events(None).unwrap_or_default());
    let (outcomes, outcome_rx) = smol::channel::unbounded();
    let runtime_events = runtime.events();
    let mut agent = Agent {
        ex: ex.clone(),
        deps,
        engine: Engine::new(),
        desired: Arc::new(DesiredState::default()),
        contexts: adoption.contexts,
        outcomes,
        published,
        store,
        pending_events: Vec::new(),
        names: HashMap::new(),
        tags: adoption.tags,
        persisted: adoption.persisted,
        recent_events,
        next_image_gc: std::time::Instant::now() + IMAGE_GC_DELAY,
        last_step: std::time::Instant::now(),
        changed: true,
    };
    agent.engine.set_node(node_config);
    agent.engine.adopt(adoption.pods, clock::now());
    agent.database_recovered(recovery.as_ref(), &adoption.unrecorded);
    let settings = pressure::Settings::from_args(&args, images.clone());
    let _housekeeping =
        pressure::spawn(&ex, settings, agent.published.clone(), agent.outcomes.clone());
    // The first reconcile must see the directory as it is, or adopted pods would be stopped.
    agent.on_desired(first);
    let notifier = Notifier::from_env();
    let mut ready = false;
    let mut last_watchdog = std::time::Instant::now();
    // A quiet probe result (nothing changed) leaves the step to the next tick, so thousands of
    // probes cost a few steps per second rather than one engine pass each.
    let mut deferred = false;
    let (mut updates, mut outcome_rx) = (std::pin::pin!(updates), std::pin::pin!(outcome_rx));
    let mut runtime_events = std::pin::pin!(runtime_events);
    loop {
        if !deferred {
            agent.step();
        }
        if !ready && updates.is_empty() {
            ready = true;
            let _ = notifier.ready(&agent.status_line()).map_err(|e| log::warn!("{e}"));
        }
        if let Some(interval) = notifier.watchdog_interval() {
            if last_watchdog.elapsed() >= interval {
                let _ = notifier.watchdog();
                last_watchdog = std::time::Instant::now();
            }
        }
        let mut sleep = agent.sleep_for(notifier.watchdog_interval());
        if deferred {
            sleep = sleep.min(until_next_tick(clock::now()));
        }
        // On the thread's own reactor: a new timer per round costs a map insert.
        let wake = crate::tasks::sleep(sleep);
        let mut wake = std::pin::pin!(wake);
        // The channels polled as streams: a receiver keeps its listener between rounds,
        // rather than a new `recv()` registering (and dropping) one per round and channel.
        let input = std::future::poll_fn(|cx| {
            use smol::stream::Stream;
            use std::future::Future;
            use std::task::Poll::{Pending, Ready};
            if let Ready(u) = updates.as_mut().poll_next(cx) {
                return Ready(u.map_or(Input::WatcherGone, Input::Desired));
            }
            if let Ready(o) = outcome_rx.as_mut().poll_next(cx) {
                return Ready(o.map_or(Input::Tick, Input::Outcome));
            }
            if let Ready(e) = runtime_events.as_mut().poll_next(cx) {
                return Ready(e.map_or(Input::Tick, Input::Runtime));
            }
            match wake.as_mut().poll(cx) {
                Ready(()) => Ready(Input::Tick),
                Pending => Pending,
            }
        })
        .await;
        match input {
            Input::Desired(update) => {
                deferred = false;
                agent.changed = true;
                agent.on_desired(update);
            }
            Input::Outcome(outcome) => {
                let quiet = agent.on_outcome(outcome);
                agent.changed |= !quiet;
                // Under a stream of quiet inputs a step still runs at least once per tick.
                deferred = quiet && agent.stepped_recently();
            }
            Input::Runtime(event) => {
                deferred = false;
                agent.changed = true;
                agent.on_runtime_event(event);
            }
            Input::Tick => deferred = false,
            Input::WatcherGone => {
                log::error!("the manifest watcher stopped; exiting so the service manager restarts the agent");
                return Ok(());
            }
        }
    }
}

impl<R: Runtime + 'static> Agent<R> {
    fn step(&mut self) {
        let now = clock::now();
        self.last_step = std::time::Instant::now();
        let actions = self.engine.reconcile(&self.desired, now);
        // Only quiet probe results and timers since the last step, and nothing but probes to
        // run: no status changed, so the API snapshot and the store are still current.
        let changed = self.changed || actions.iter().any(|a| !matches!(a, Action::RunProbe { .. }));
        for action in actions {
            self.dispatch(action);
        }
        if changed {
            self.publish();
            self.commit();
            self.changed = false;
        }
        if std::time::Instant::now() >= self.next_image_gc {
            self.next_image_gc = std::time::Instant::now() + IMAGE_GC_EVERY;
            self.collect_images();
        }
    }

    /// Removes blobs and layers no tag and no pod uses. Tags are kept, as the kubelet's image
    /// GC keeps images until disk pressure: an edge device may be offline when it needs one.
    fn collect_images(&self) {
        let images: Vec<String> = self
            .engine
            .pods()
            .filter_map(|p| p.spec)
            .flat_map(|s| s.init_containers.into_iter().flatten().chain(s.containers))
            .filter_map(|c| c.image)
            .collect();
        let store = self.deps.images.clone();
        self.ex
            .spawn(smol::unblock(move || {
                let in_use = images
                    .iter()
                    .filter_map(|i| store.resolve(i).ok().flatten())
                    .map(|i| i.digest)
                    .collect();
                match store.gc(&in_use) {
                    Ok(r) => log::info!(
                        "images: garbage collection removed {} blobs ({} bytes) and {} layers",
                        r.blobs_removed,
                        r.blob_bytes,
                        r.layers_removed
                    ),
                    Err(e) => log::warn!("images: garbage collection: {e}"),
                }
            }))
            .detach();
    }

    /// How long to sleep: until the engine's next wake-up, on the tick grid so that wake-ups
    /// close together (probes of many pods) share one step, capped by the watchdog.
    fn sleep_for(&self, watchdog: Option<Duration>) -> Duration {
        let cap = watchdog.unwrap_or(Duration::from_secs(60));
        let Some(wake) = self.engine.next_wakeup() else { return cap };
        let now = clock::now().as_millisecond();
        let tick = TICK.as_millis() as i64;
        let wake = wake.as_millisecond();
        let on_grid = if wake <= now { wake } else { (wake + tick - 1) / tick * tick };
        Duration::from_millis((on_grid - now).max(0) as u64).min(cap)
    }

    /// A step ran within the last tick: a quiet input can wait for the next one.
    fn stepped_recently(&self) -> bool {
        self.last_step.elapsed() < TICK
    }

    fn status_line(&self) -> String {
        let pods = self.engine.pods().count();
        format!("{pods} pods")
    }

    fn on_desired(&mut self, update: crate::watch::Update) {
        for e in &update.errors {
            log::warn!("{e}");
        }
        for c in &update.changes {
            log::info!("{c}");
        }
        log_objects(&update);
        for (key, p) in &update.state.pods {
            self.names.insert(p.uid().to_string(), (key.namespace.clone(), key.name.clone()));
        }
        self.desired = update.state;
        for c in &update.changes {
            if let crate::watch::Change::PodConfigChanged { uid, .. } = c {
                // Only pods whose sandbox (and so whose volumes) exist; others render at start.
                let pod =
                    self.desired.pods.values().find(|p| p.uid() == uid).map(|p| p.pod.clone());
                if let (Some(pod), true) = (pod, self.contexts.contains_key(uid)) {
                    let (deps, desired) = (self.deps.clone(), self.desired.clone());
                    self.ex
                        .spawn(async move { actions::update_volumes(&deps, &pod, &desired).await })
                        .detach();
                }
            }
        }
    }

    /// Returns whether the outcome was quiet: a passing probe that changed nothing, which
    /// only needs the next probe scheduled (by a step within a tick).
    fn on_outcome(&mut self, outcome: Outcome) -> bool {
        match outcome.update {
            Some(Update::Sandbox { uid, context }) => {
                self.contexts.insert(uid, Arc::from(context));
            }
            Some(Update::StopSignal { uid, container, signal }) => {
                if let Some(ctx) = self.contexts.get_mut(&uid) {
                    Arc::make_mut(ctx).stop_signals.insert(container, signal);
                }
            }
            Some(Update::SandboxGone { uid }) => {
                self.contexts.remove(&uid);
            }
            None => {}
        }
        let Some(fact) = outcome.fact else { return false };
        let passing_probe = matches!(&fact, Observed::ProbeResult { result: Ok(None), .. });
        let changed = self.engine.observe(fact, clock::now());
        passing_probe && !changed
    }

    fn on_runtime_event(&mut self, event: Event) {
        let now = clock::now();
        match event {
            // The start's own answer already told the engine.
            Event::ContainerStarted { .. } => {}
            Event::ContainerExited { pod_uid, id, exit } => {
                let message = self.pod(&pod_uid).and_then(|pod| {
                    termination::message(
                        &self.deps,
                        &pod,
                        &pod_uid,
                        &id.name,
                        id.attempt,
                        exit.exit_code,
                    )
                });
                let Some(&sandbox) = self.tags.get(&(pod_uid.clone(), id.name.clone(), id.attempt))
                else {
                    log::debug!("pod {pod_uid}: exit of unknown instance {id}");
                    return;
                };
                let c = ContainerRef { pod_uid, name: id.name, attempt: id.attempt, sandbox };
                let at = clock::timestamp(exit.finished_at);
                self.engine.observe(
                    Observed::ContainerExited {
                        c,
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                        oom_killed: exit.oom_killed,
                        at,
                        message,
                    },
                    now,
                );
            }
            Event::SandboxDied { pod_uid, cause } => {
                let why = match cause {
                    SandboxDeath::PauseExited { exit_code } => {
                        format!("pause process exited with {exit_code}")
                    }
                    SandboxDeath::SupervisorLost => "the pod supervisor died".to_string(),
                };
                log::warn!("pod {pod_uid}: sandbox died: {why}");
                self.engine.observe(Observed::SandboxDied { pod_uid }, now);
            }
        }
    }

    fn dispatch(&mut self, action: Action) {
        let deps = self.deps.clone();
        let tx = self.outcomes.clone();
        let desired = self.desired.clone();
        let task = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>| async move {
            let outcome = fut.await;
            let _ = tx.send(outcome).await;
        };
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> = match action
        {
            Action::Event { pod_uid, container, type_, reason, message } => {
                self.record_event(pod_uid, container, type_, reason, message);
                return;
            }
            Action::CreateSandbox { pod } => {
                Box::pin(async move { actions::create_sandbox(&deps, &pod, &desired).await })
            }
            Action::PullImage { c, image, policy } => {
                let published = self.published.clone();
                let early = self.outcomes.clone();
                Box::pin(async move {
                    let outcome = actions::pull_image(&deps, c, &image, &policy, &early).await;
                    let pulled = matches!(outcome.fact, Some(Observed::ImagePulled { .. }));
                    published.metrics.image_pull(pulled);
                    outcome
                })
            }
            Action::StartContainer { c, spec } => {
                let Some(pod) = self.pod(&c.pod_uid) else { return };
                self.tags.insert((c.pod_uid.clone(), c.name.clone(), c.attempt), c.sandbox);
                let context = self.contexts.get(&c.pod_uid).cloned().unwrap_or_default();
                Box::pin(async move {
                    actions::start_container(&deps, c, &pod, &spec, &desired, &context).await
                })
            }
            Action::RunProbe { c, kind, seq, probe, timeout } => {
                let context = self.contexts.get(&c.pod_uid).cloned().unwrap_or_default();
                // Only a port name needs the container's ports (copied from the spec).
                let port = |p: Option<&IntOrString>| matches!(p, Some(IntOrString::String(_)));
                let named = port(probe.http_get.as_ref().map(|h| &h.port))
                    || port(probe.tcp_socket.as_ref().map(|t| &t.port));
                let ports = if named { self.ports(&c) } else { Vec::new() };
                let published = self.published.clone();
                Box::pin(async move {
                    let started = std::time::Instant::now();
                    let result =
                        actions::run_probe(&deps, &c, &probe, timeout, &ports, &context).await;
                    published.metrics.probe(kind, result.is_ok(), started.elapsed());
                    Outcome {
                        fact: Some(Observed::ProbeResult { c, kind, seq, result }),
                        update: None,
                    }
                })
            }
            Action::RunHook { c, kind, handler, timeout } => {
                let context = self.contexts.get(&c.pod_uid).cloned().unwrap_or_default();
                let ports = self.ports(&c);
                let (namespace, name) = self.names.get(&c.pod_uid).cloned().unwrap_or_default();
                let pod = format!("{name}_{namespace}({})", c.pod_uid);
                Box::pin(async move {
                    let result =
                        actions::run_hook(&deps, &c, &pod, &handler, timeout, &ports, &context)
                            .await;
                    if let Err(e) = &result {
                        // The event leaves the output out (it may hold secrets); the log has it.
                        log::warn!(
                            "pod {namespace}/{name}: container {}: {kind:?} hook: {e}",
                            c.name
                        );
                    }
                    Outcome { fact: Some(Observed::HookResult { c, kind, result }), update: None }
                })
            }
            Action::KillContainer { c, signal } => {
                let stop = self
                    .contexts
                    .get(&c.pod_uid)
                    .and_then(|ctx| ctx.stop_signals.get(&c.name).copied());
                Box::pin(async move { actions::kill_container(&deps, c, signal, stop).await })
            }
            Action::RemoveContainer { c } => {
                self.tags.remove(&(c.pod_uid.clone(), c.name.clone(), c.attempt));
                Box::pin(async move { actions::remove_container(&deps, c).await })
            }
            Action::RemoveSandbox { pod_uid } => {
                self.tags.retain(|(uid, _, _), _| *uid != pod_uid);
                Box::pin(async move { actions::remove_sandbox(&deps, &pod_uid).await })
            }
        };
        self.ex.spawn(task(fut)).detach();
    }

    fn pod(&self, uid: &str) -> Option<Pod> {
        self.engine.pod(uid)
    }

    /// The container's ports, from the engine's pod: a deleted pod's preStop still needs them.
    fn ports(&self, c: &ContainerRef) -> Vec<k8s_openapi::api::core::v1::ContainerPort> {
        self.engine
            .spec(&c.pod_uid)
            .and_then(|s| {
                s.init_containers.iter().flatten().chain(&s.containers).find(|x| x.name == c.name)
            })
            .and_then(|x| x.ports.clone())
            .unwrap_or_default()
    }

    /// A Warning event on the node (as the kubelet reports node problems) when the state
    /// database was replaced or had no record of running pods (deleted, or behind the
    /// runtime): what it knew of them (events, back-offs) is gone.
    fn database_recovered(&mut self, r: Option<&crate::store::Recovery>, adopted: &[String]) {
        let adopted = match adopted.len() {
            0 => String::new(),
            _ => format!(" (adopted without records: {})", adopted.join(", ")),
        };
        let message = match r {
            Some(r) => format!(
                "The state database was damaged ({}): kept aside as {}; started a fresh one and took over the running pods from the runtime{adopted}",
                r.damage,
                r.kept.display()
            ),
            None if adopted.is_empty() => return,
            None => format!(
                "The state database had no record of running pods (lost, or behind the runtime): took them over from the runtime{adopted}"
            ),
        };
        let now = clock::now().as_second();
        self.pending_events.push(EventRecord {
            pod_uid: String::new(),
            namespace: "default".into(),
            pod_name: self.deps.node.name.clone(),
            container: None,
            type_: "Warning".into(),
            reason: DATABASE_RECOVERED.into(),
            message,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }

    fn record_event(
        &mut self,
        pod_uid: String,
        container: Option<String>,
        type_: crate::engine::EventType,
        reason: String,
        message: String,
    ) {
        let (namespace, pod_name) = self.names.get(&pod_uid).cloned().unwrap_or_default();
        let type_ = format!("{type_:?}");
        let line = format!(
            "pod {namespace}/{pod_name}: {}{reason}: {message}",
            container.as_ref().map(|c| format!("container {c}: ")).unwrap_or_default()
        );
        if type_ == "Warning" {
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }
        let now = clock::now().as_second();
        self.pending_events.push(EventRecord {
            pod_uid,
            namespace,
            pod_name,
            container,
            type_,
            reason,
            message,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }

    /// The API's view: the engine's pods with the network facts only the agent knows.
    fn publish(&self) {
        let host_ip = self.deps.node.host_ips.first().cloned();
        let pods: Vec<Pod> = self
            .engine
            .pods()
            .map(|mut pod| {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name.get_or_insert_with(|| self.deps.node.name.clone());
                }
                if let Some(status) = pod.status.as_mut() {
                    status.host_ip.clone_from(&host_ip);
                    status.host_ips =
                        host_ip.clone().map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip }]);
                    if let Some(ctx) = self.contexts.get(&uid) {
                        status.pod_ip = ctx.pod_ips.first().cloned();
                        status.pod_ips = Some(
                            ctx.pod_ips
                                .iter()
                                .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.clone() })
                                .collect(),
                        );
                    }
                }
                pod
            })
            .collect();
        self.published.publish(pods, self.recent_events.clone(), self.desired.clone());
    }

    /// Writes what changed since the last step, in one transaction: engine snapshots of the
    /// pods (so a restarted agent resumes them) and new events.
    fn commit(&mut self) {
        let mut changed = Vec::new();
        let mut live = std::collections::HashSet::new();
        for snapshot in self.engine.persist() {
            let uid = snapshot.uid().to_string();
            let json = serde_json::to_string(&snapshot).unwrap_or_default();
            live.insert(uid.clone());
            if self.persisted.get(&uid) != Some(&json) {
                changed.push((uid, json));
            }
        }
        let removed: Vec<String> =
            self.persisted.keys().filter(|u| !live.contains(*u)).cloned().collect();
        if changed.is_empty() && removed.is_empty() && self.pending_events.is_empty() {
            return;
        }
        let pods: HashMap<String, Pod> = if changed.is_empty() {
            HashMap::new()
        } else {
            self.engine.pods().filter_map(|p| Some((p.metadata.uid.clone()?, p))).collect()
        };
        let records: Vec<PodRecord> = changed
            .iter()
            .filter_map(|(uid, json)| {
                let mut pod = pods.get(uid)?.clone();
                pod.status = None;
                Some(PodRecord {
                    uid: uid.clone(),
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    pod: serde_json::to_string(&pod).unwrap_or_default(),
                    engine_state: json.clone(),
                })
            })
            .collect();
        let events = std::mem::take(&mut self.pending_events);
        if !events.is_empty() {
            let mut recent = (*self.recent_events).clone();
            for e in &events {
                // Repeats fold into a count, as in the store and the API server.
                let same = |r: &EventRecord| {
                    r.pod_uid == e.pod_uid
                        && r.container == e.container
                        && r.reason == e.reason
                        && r.message == e.message
                };
                match recent.iter_mut().rev().find(|r| same(r)) {
                    Some(r) => {
                        r.count += e.count;
                        r.last_seen = e.last_seen;
                    }
                    None => recent.push(e.clone()),
                }
            }
            let excess = recent.len().saturating_sub(RECENT_EVENTS);
            recent.drain(..excess);
            self.recent_events = Arc::new(recent);
        }
        match self.store.commit(&records, &removed, &events) {
            Ok(()) => {
                for (uid, json) in changed {
                    self.persisted.insert(uid, json);
                }
                for uid in removed {
                    self.persisted.remove(&uid);
                    // The pod is gone for good: its logs go with it.
                    let logs = crate::runtime::pod_log_dir(self.deps.state_dir(), &uid);
                    if let Err(e) = std::fs::remove_dir_all(&logs) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            log::warn!("pod {uid}: removing logs {}: {e}", logs.display());
                        }
                    }
                }
            }
            Err(e) => log::warn!("{e}"),
        }
    }
}

impl<R> Deps<R> {
    /// The CRI log of a container instance, in the runtime's pod directory.
    fn runtime_log(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        crate::runtime::log_path(self.state_dir(), uid, name, attempt)
    }

    fn state_dir(&self) -> &Path {
        self.data_dir.parent().unwrap_or(Path::new("/"))
    }
}

/// One line per ConfigMap or Secret change, or one line in all for a large batch (a file of
/// thousands of ConfigMaps).
fn log_objects(update: &crate::watch::Update) {
    const EACH_UP_TO: usize = 20;
    if update.objects.len() <= EACH_UP_TO {
        for o in &update.objects {
            log::info!("{o}");
        }
        return;
    }
    let count = |a| update.objects.iter().filter(|o| o.action == a).count();
    use crate::watch::ObjectAction::{Added, Changed, Removed};
    log::info!(
        "ConfigMaps and Secrets: {} added, {} changed, {} removed ({} ConfigMaps and {} Secrets in all)",
        count(Added),
        count(Changed),
        count(Removed),
        update.state.config_maps.len(),
        update.state.secrets.len()
    );
}
