//! Taking over what a previous agent left running: the sandboxes the runtime finds, the pods
//! in the store, and the network attachments in the CNI cache. Running containers are never
//! restarted for the agent's sake.
//!
//! What runs is the truth, as for the kubelet (which keeps no database and rebuilds from the
//! runtime); the store only adds what the runtime cannot tell (back-offs, probe results,
//! conditions). A sandbox without a record (the database lost, damaged or one transaction
//! behind) is adopted when the manifests want its pod: UIDs derive from content, so the same
//! UID is the same pod, and restart counts come from the supervisor's instance records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::engine::{AdoptedContainer, AdoptedPod, ContainerRef, Exit, PersistedPod};
use crate::manifest::DesiredState;
use crate::runtime::spec::PodFiles;
use crate::runtime::{ContainerStatus, Runtime};
use crate::store::Store;

use super::deps::{Deps, PodContext};
use super::sandbox;
use super::termination;
use crate::format::timestamp;

/// What the agent resumes with.
#[derive(Default)]
pub struct Adoption {
    pub pods: Vec<AdoptedPod>,
    pub contexts: HashMap<String, std::sync::Arc<PodContext>>,
    /// Sandbox tags of the instances found, keyed like `Agent::tags`.
    pub tags: HashMap<(String, String, u32), u64>,
    /// The engine snapshots as stored, so unchanged pods are not rewritten.
    pub persisted: HashMap<String, String>,
    /// Pods adopted from the runtime and the manifests alone, without a record.
    pub unrecorded: Vec<String>,
}

/// The grace period for a sandbox nobody wants whose own is unknown (made by an older
/// version): the API's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

impl Adoption {
    /// A known pod whose sandbox cannot be kept: what is left of it goes, and the engine
    /// (with the pod's snapshot) makes a new sandbox if the pod is still wanted.
    async fn start_over<R: Runtime>(
        &mut self,
        deps: &Deps<R>,
        uid: String,
        pod: Pod,
        saved: Option<PersistedPod>,
        json: Option<String>,
    ) {
        sandbox::remove(deps, &uid).await;
        if let Some(json) = json {
            self.persisted.insert(uid, json);
        }
        self.pods.push(AdoptedPod { pod, sandbox_ready: false, containers: Vec::new(), saved });
    }
}

/// User namespace ids: a running pod's block is held again when the database lost it (never
/// given to another pod while its processes and files have those ids); a block of a pod that
/// is nowhere (no sandbox, record or manifest) is freed.
fn keep_userns_ids<T>(
    ids: &super::deps::UsernsIds,
    found: &[crate::runtime::RuntimePod],
    saved: &HashMap<String, T>,
    wanted: &HashMap<&str, &Pod>,
) {
    for state in found {
        let Some(userns) = &state.userns else { continue };
        match ids.ranges.restore(&state.pod_uid, userns.first) {
            Ok(true) => {}
            Ok(false) => log::error!(
                "pod {}: runs with user namespace ids from {} that the state database gives another pod",
                state.pod_uid,
                userns.first
            ),
            Err(e) => log::warn!("pod {}: keeping its user namespace ids: {e}", state.pod_uid),
        }
    }
    for (uid, _) in ids.ranges.all().unwrap_or_default() {
        let known = found.iter().any(|s| s.pod_uid == uid)
            || saved.contains_key(&uid)
            || wanted.contains_key(uid.as_str());
        if !known {
            ids.release(&uid);
        }
    }
}

/// `desired`: the manifest directory as the agent starts, which owns every pod UID it holds.
pub async fn adopt<R: Runtime + 'static>(
    deps: &Arc<Deps<R>>,
    store: &Store,
    desired: &DesiredState,
) -> Adoption {
    let mut saved: HashMap<String, (Pod, Option<PersistedPod>, String)> = HashMap::new();
    for r in store.pods().unwrap_or_else(|e| {
        log::warn!("{e}: starting without saved pod state");
        Vec::new()
    }) {
        let Ok(pod) = crate::manifest::pod_from_json(&r.pod) else {
            log::warn!("pod {}/{}: unreadable saved pod, not adopted", r.namespace, r.name);
            continue;
        };
        let persisted = serde_json::from_str::<PersistedPod>(&r.engine_state).ok();
        saved.insert(r.uid.clone(), (pod, persisted, r.engine_state));
    }
    let mut out = Adoption::default();
    let cached_ips = deps.network.as_ref().map(|n| n.cached_ips_by_pod()).unwrap_or_default();
    let found = deps.runtime.list().await.unwrap_or_else(|e| {
        log::warn!("listing sandboxes: {e}");
        Vec::new()
    });
    let wanted: HashMap<&str, &Pod> = desired.pods.values().map(|p| (p.uid(), &*p.pod)).collect();
    if let Some(ids) = &deps.userns {
        keep_userns_ids(ids, &found, &saved, &wanted);
    }
    let mut unwanted = Vec::new();
    for state in found {
        let uid = state.pod_uid.clone();
        let (pod, persisted, json) = match saved.remove(&uid) {
            Some((pod, persisted, json)) => (pod, persisted, Some(json)),
            None => match wanted.get(uid.as_str()) {
                Some(pod) => {
                    let name = pod.metadata.name.as_deref().unwrap_or_default();
                    log::warn!(
                        "pod {name} ({uid}): its sandbox has no saved record (state database lost or behind): adopting it from the runtime and the manifests"
                    );
                    ((*pod).clone(), None, None)
                }
                None => {
                    let grace = state
                        .termination_grace_period_seconds
                        .map_or(DEFAULT_GRACE, Duration::from_secs);
                    log::warn!(
                        "pod {uid}: a sandbox that neither a record nor a manifest wants: stopping it ({}s grace)",
                        grace.as_secs()
                    );
                    unwanted.push((uid, grace));
                    continue;
                }
            },
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ready = state.supervisor_alive && state.sandbox_running;
        // Containers start only once the sandbox is set up, so one with containers is (also
        // when set up by a version without the marker); one without them whose setup did not
        // finish (agent killed before its network or files) is made again from scratch.
        if state.containers.is_empty() && !(ready && deps.setup_marker(&uid).exists()) {
            let why = if ready { "whose setup did not finish" } else { "that is dead and empty" };
            log::info!("pod {name}: removing a sandbox {why}");
            out.start_over(deps, uid, pod, persisted, json).await;
            continue;
        }
        let tag = persisted.as_ref().map_or(0, PersistedPod::sandbox);
        let mut newest: BTreeMap<&str, &ContainerStatus> = BTreeMap::new();
        for c in &state.containers {
            out.tags.insert((uid.clone(), c.id.name.clone(), c.id.attempt), tag);
            let slot = newest.entry(c.id.name.as_str()).or_insert(c);
            if c.id.attempt > slot.id.attempt {
                *slot = c;
            }
        }
        let exit = |s: &ContainerStatus| {
            s.exit.as_ref().map(|e| Exit {
                exit_code: e.exit_code,
                signal: e.signal,
                oom_killed: e.oom_killed,
                lost: e.lost,
                at: timestamp(e.finished_at),
                message: termination::message(
                    deps,
                    &pod,
                    &uid,
                    &s.id.name,
                    s.id.attempt,
                    e.exit_code,
                ),
            })
        };
        let containers = newest
            .values()
            .map(|s| AdoptedContainer {
                c: ContainerRef {
                    pod_uid: uid.clone(),
                    name: s.id.name.clone(),
                    attempt: s.id.attempt,
                    sandbox: tag,
                },
                started_at: timestamp(s.started_at),
                exit: exit(s),
                // The instance before is kept (for `logs --previous`) until the next start.
                previous: state
                    .containers
                    .iter()
                    .find(|p| p.id.name == s.id.name && p.id.attempt + 1 == s.id.attempt)
                    .and_then(|p| Some((timestamp(p.started_at), exit(p)?))),
            })
            .collect();
        if json.is_none() {
            out.unrecorded.push(name.clone());
        }
        log::info!(
            "pod {name}: adopted ({} containers, sandbox {})",
            state.containers.len(),
            if ready { "running" } else { "gone" }
        );
        let netns = state.sandbox.as_ref().and_then(|s| s.netns.clone());
        out.contexts.insert(uid.clone(), context(deps, &pod, &uid, netns, &cached_ips).into());
        if let Some(json) = json {
            out.persisted.insert(uid, json);
        }
        out.pods.push(AdoptedPod { pod, sandbox_ready: ready, containers, saved: persisted });
    }
    out.unrecorded.sort();
    // Pods the store knows but whose sandbox is gone: whatever is left of them goes, and the
    // engine recreates them if they are still wanted.
    for (uid, (pod, persisted, json)) in saved {
        out.start_over(deps, uid, pod, persisted, Some(json)).await;
    }
    // In the background: a grace period must not hold up the pods that are wanted.
    for (uid, grace) in &unwanted {
        let (deps, uid, grace) = (deps.clone(), uid.clone(), *grace);
        crate::tasks::spawn(async move { sandbox::stop_unknown(&deps, &uid, grace).await })
            .detach();
    }
    // Attachments and pod data of pods nobody knows (those being stopped clean up after).
    let stopping = unwanted.into_iter().map(|(uid, _)| uid);
    let known: Vec<String> =
        out.pods.iter().filter_map(|p| p.pod.metadata.uid.clone()).chain(stopping).collect();
    if let Some(net) = &deps.network {
        for uid in net.attached_pods().into_iter().filter(|u| !known.contains(u)) {
            if let Err(e) = net.detach(&uid).await {
                log::warn!("pod {uid}: network teardown: {e}");
            }
        }
        net.reconcile().await;
    }
    if let Ok(entries) = std::fs::read_dir(&deps.data_dir) {
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&uid) {
                sandbox::remove(deps, &uid).await;
            }
        }
    }
    out
}

/// A running pod's context, rebuilt from what is on disk.
fn context<R>(
    deps: &Deps<R>,
    pod: &Pod,
    uid: &str,
    netns: Option<std::path::PathBuf>,
    cached_ips: &HashMap<String, Vec<String>>,
) -> PodContext {
    let data = deps.pod_data(uid);
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let pod_ips = match (&deps.network, host_network) {
        (_, true) => deps.node.host_ips.iter().take(1).cloned().collect(),
        (_, false) => cached_ips.get(uid).cloned().unwrap_or_default(),
    };
    let volumes = spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            // A pod in its own user namespace has idmapped views of all but its emptyDirs.
            if spec.and_then(|s| s.host_users) == Some(false) && v.empty_dir.is_none() {
                return Some((v.name.clone(), data.join("volumes-mapped").join(&v.name)));
            }
            crate::volume::volume_dir(&data.join("volumes"), v).map(|d| (v.name.clone(), d))
        })
        .collect();
    let shm = data.join("shm");
    PodContext {
        pod_ips,
        netns,
        volumes,
        files: PodFiles {
            hosts: Some(data.join("etc-hosts")),
            resolv_conf: Some(data.join("resolv.conf")),
            hostname: Some(data.join("hostname")),
            shm: shm.exists().then_some(shm),
            termination_log: None,
        },
        host_network,
        stop_signals: BTreeMap::new(),
    }
}
