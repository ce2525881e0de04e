//! The state the loop owns, one step of it, and how each input changes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::api::Published;
use crate::engine::{Action, ContainerRef, Engine, NodeConfig, Observed};
use crate::manifest::DesiredState;
use crate::runtime::{Event, Runtime, SandboxDeath};
use crate::store::{EventRecord, Store};

use super::adopt::Adoption;
use super::deps::{Deps, PodContext};
use super::housekeeping::Housekeeping;
use super::outcome::{ContextUpdate, Outcome};
use super::termination;

/// Image garbage collection: first a while after start (once pods are up), then periodically.
const IMAGE_GC_DELAY: Duration = Duration::from_secs(300);
const IMAGE_GC_EVERY: Duration = Duration::from_secs(3600);

pub(super) struct Agent<R: Runtime + 'static> {
    pub(super) ex: Arc<smol::Executor<'static>>,
    pub(super) deps: Arc<Deps<R>>,
    pub(super) engine: Engine,
    pub(super) desired: Arc<DesiredState>,
    /// Shared with the action tasks: a probe takes its pod's context without copying it.
    pub(super) contexts: HashMap<String, Arc<PodContext>>,
    pub(super) outcomes: smol::channel::Sender<Outcome>,
    pub(super) published: Arc<Published>,
    pub(super) store: Store,
    pub(super) pending_events: Vec<EventRecord>,
    /// Pod UID → namespace/name, for events of pods that already left the desired state.
    pub(super) names: HashMap<String, (String, String)>,
    /// The sandbox tag ([`ContainerRef::sandbox`]) of each started instance: the runtime
    /// knows instances by (pod UID, name, attempt) only, so the agent hands the tag back to
    /// the engine with the instance's exit.
    pub(super) tags: HashMap<(String, String, u32), u64>,
    /// The engine snapshot last written per pod, so only changes are written.
    pub(super) persisted: HashMap<String, String>,
    /// The newest events, for the API (the store keeps more).
    pub(super) recent_events: Arc<Vec<EventRecord>>,
    /// When unreferenced image data is next collected.
    next_image_gc: Instant,
    pub(super) housekeeping: Housekeeping,
    pub(super) last_step: Instant,
    /// Something other than a quiet probe result arrived since the last publish.
    pub(super) changed: bool,
    /// The Node the API shows, once registered.
    pub(super) node: Option<super::node_object::NodeObject>,
}

impl<R: Runtime + 'static> Agent<R> {
    pub(super) fn new(
        ex: Arc<smol::Executor<'static>>,
        deps: Arc<Deps<R>>,
        store: Store,
        published: Arc<Published>,
        outcomes: smol::channel::Sender<Outcome>,
        housekeeping: Housekeeping,
    ) -> Self {
        let recent_events = Arc::new(store.events(None).unwrap_or_default());
        Self {
            ex,
            deps,
            engine: Engine::new(),
            desired: Arc::new(DesiredState::default()),
            contexts: HashMap::new(),
            outcomes,
            published,
            store,
            pending_events: Vec::new(),
            names: HashMap::new(),
            tags: HashMap::new(),
            persisted: HashMap::new(),
            recent_events,
            next_image_gc: Instant::now() + IMAGE_GC_DELAY,
            housekeeping,
            last_step: Instant::now(),
            changed: true,
            node: None,
        }
    }

    /// Turns on safe updates as configured, with the rollout history the store kept.
    pub(super) fn restore_rollouts(&mut self, config: crate::engine::RolloutConfig) {
        self.engine.set_rollout(config);
        if config.rollback {
            log::info!(
                "safe updates on: edited pods are prefetched, gated ({} to become Ready) and rolled back on failure",
                crate::format::go_duration(config.deadline)
            );
        } else {
            log::info!(
                "safe updates off (--rollback=false): edited pods are replaced as the kubelet does"
            );
        }
        match self.store.revisions(None) {
            Ok(rows) => {
                let history =
                    rows.into_iter().filter_map(super::publish::revision_from_record).collect();
                self.engine.restore_revisions(history, crate::format::now());
            }
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Takes over what adoption found, and turns on admission and eviction for `node`.
    pub(super) fn resume(&mut self, adoption: Adoption, node: NodeConfig) {
        // Adopted pods the manifests no longer name still need their names in events.
        for p in &adoption.pods {
            let meta = &p.pod.metadata;
            if let Some(uid) = &meta.uid {
                let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
                self.names.insert(uid.clone(), (namespace, meta.name.clone().unwrap_or_default()));
            }
        }
        self.contexts = adoption.contexts;
        self.tags = adoption.tags;
        self.persisted = adoption.persisted;
        self.engine.set_node(node);
        self.engine.adopt(adoption.pods, crate::format::now());
    }

    pub(super) fn step(&mut self) {
        let now = crate::format::now();
        self.last_step = Instant::now();
        let actions = self.engine.reconcile(&self.desired, now);
        // Only quiet probe results and timers since the last step, and nothing but probes to
        // run: no status changed, so the API snapshot and the store are still current.
        let changed = self.changed || actions.iter().any(|a| !matches!(a, Action::RunProbe { .. }));
        for action in actions {
            self.dispatch(action);
        }
        if changed {
            self.update_node();
            self.publish();
            self.commit();
            self.changed = false;
        }
        self.run_due_chores();
    }

    /// Image collection and housekeeping, when due: the loop's own timers beside the engine's.
    fn run_due_chores(&mut self) {
        let now = Instant::now();
        if now >= self.next_image_gc {
            self.next_image_gc = now + IMAGE_GC_EVERY;
            let (images, used) = (self.deps.images.clone(), self.images_in_use());
            self.ex
                .spawn(smol::unblock(move || {
                    crate::image::gc::collect(&images, &used, crate::image::gc::Unused::Keep);
                }))
                .detach();
        }
        if now >= self.housekeeping.next {
            let pods: Vec<Pod> = self.engine.pods().collect();
            let used = self.images_in_use();
            let published = self.published.clone();
            self.housekeeping.start_round(&self.ex, &pods, used, published, self.outcomes.clone());
        }
    }

    /// Until the next chore is due.
    pub(super) fn until_chores(&self) -> Duration {
        let next = self.next_image_gc.min(self.housekeeping.next);
        next.saturating_duration_since(Instant::now())
    }

    /// Every image a known pod names (running, starting or leaving), and those a rollout
    /// still needs (the version to roll back to, the one being prefetched).
    fn images_in_use(&self) -> Vec<String> {
        let mut images: Vec<String> = self
            .engine
            .pods()
            .filter_map(|p| p.spec)
            .flat_map(|s| s.init_containers.into_iter().flatten().chain(s.containers))
            .filter_map(|c| c.image)
            .collect();
        images.extend(self.engine.rollout_images());
        images
    }

    pub(super) fn on_desired(&mut self, update: crate::watch::Update) {
        for e in &update.errors {
            log::warn!("{e}");
        }
        self.manifest_sources_invalid(&update.errors);
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
                self.engine.config_changed(uid);
            }
        }
    }

    /// Returns whether the outcome was quiet: a passing probe that changed nothing, which
    /// only needs the next probe scheduled (by a step within a tick).
    pub(super) fn on_outcome(&mut self, outcome: Outcome) -> bool {
        match outcome.update {
            Some(ContextUpdate::Sandbox { uid, context }) => {
                self.contexts.insert(uid, Arc::from(context));
            }
            Some(ContextUpdate::StopSignal { uid, container, signal }) => {
                if let Some(ctx) = self.contexts.get_mut(&uid) {
                    Arc::make_mut(ctx).stop_signals.insert(container, signal);
                }
            }
            Some(ContextUpdate::SandboxGone { uid }) => {
                self.contexts.remove(&uid);
            }
            None => {}
        }
        let Some(fact) = outcome.fact else { return false };
        if let Observed::Devices(counts) = &fact {
            self.set_node_devices(counts);
        }
        let passing_probe = matches!(&fact, Observed::ProbeResult { result: Ok(None), .. });
        let changed = self.engine.observe(fact, crate::format::now());
        passing_probe && !changed
    }

    pub(super) fn on_runtime_event(&mut self, event: Event) {
        let now = crate::format::now();
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
                let at = crate::format::timestamp(exit.finished_at);
                self.engine.observe(
                    Observed::ContainerExited {
                        c,
                        exit_code: exit.exit_code,
                        signal: exit.signal,
                        oom_killed: exit.oom_killed,
                        lost: exit.lost,
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

    pub(super) fn pod(&self, uid: &str) -> Option<Pod> {
        self.engine.pod(uid)
    }

    /// The container's ports, from the engine's pod: a deleted pod's preStop still needs them.
    pub(super) fn ports(&self, c: &ContainerRef) -> Vec<k8s_openapi::api::core::v1::ContainerPort> {
        self.engine
            .spec(&c.pod_uid)
            .and_then(|s| {
                s.init_containers.iter().flatten().chain(&s.containers).find(|x| x.name == c.name)
            })
            .and_then(|x| x.ports.clone())
            .unwrap_or_default()
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
