//! The kubelet's device plugin API v1beta1 (I/O only; the engine sees [`DeviceCount`]s):
//!
//! - `server.rs`: the Registration service on `kubelet.sock` in the device plugin directory.
//!   A plugin's Register makes the manager dial the plugin's own socket, ask its options and
//!   follow its `ListAndWatch` stream; every change of a resource's devices or health goes to
//!   the agent (`on_change`) as the counts admission and the Node use (capacity: all devices,
//!   allocatable: the healthy ones).
//! - [`Devices::allocate`] at container creation: free healthy devices for each extended
//!   resource the container asks for, the plugin's `Allocate`, recorded in the state database
//!   (`store::Allocations`) before the container starts and freed when its pod is gone; a
//!   restarted container (or agent) reuses its recorded answer, as the kubelet's checkpoint.
//! - `oci.rs`: the answer applied to the container's OCI spec; `cdi.rs`: the CDI device
//!   names in it, resolved from the CDI spec directories into more of the same.
//!
//! gRPC is HTTP/2 from hyper with the few protobuf messages encoded by hand (`proto.rs`),
//! as the gRPC probes do.

mod cdi;
mod client;
mod oci;
pub mod proto;
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::engine::DeviceCount;
use crate::store::{Allocation, Allocations, StoreError};

pub use oci::apply;
pub use proto::ContainerAllocation;
pub use server::{reply, Reply};

/// The kubelet's device plugin directory (`DevicePluginPath`).
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The Registration service's socket in the directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device plugin directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// A live `kubelet.sock`: another kubelet (k3s's, or another outpost) serves it.
    #[error("{socket} is served by another process (a kubelet, k3s or another outpost): outpost leaves it alone; give it a directory of its own with --device-plugin-dir")]
    InUse { socket: PathBuf },
    /// A call to a plugin failed.
    #[error("device plugin for {resource} ({endpoint}): {message}")]
    Rpc { resource: String, endpoint: PathBuf, message: String },
    /// The kubelet's messages (`devicesToAllocate`).
    #[error("can't allocate unregistered device {resource}")]
    Unregistered { resource: String },
    #[error("requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}")]
    Unavailable { resource: String, requested: usize, available: usize },
    #[error("device {host_path} for {container_path}: {problem}")]
    DeviceNode { host_path: String, container_path: String, problem: String },
    #[error("CDI device {name}: {problem}")]
    Cdi { name: String, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A registered plugin: where it listens and what it last listed.
struct Plugin {
    endpoint: PathBuf,
    /// Which registration this is: a stream of an older one no longer counts.
    generation: u64,
    options: proto::Options,
    /// Device ID → healthy.
    devices: BTreeMap<String, bool>,
}

type Key = (String, String, String);

#[derive(Default)]
struct State {
    plugins: BTreeMap<String, Plugin>,
    generations: u64,
    /// (pod UID, container, resource) → its devices and the plugin's answer; `None` while the
    /// plugin is being asked (the devices are reserved already).
    allocated: BTreeMap<Key, (Vec<String>, Option<ContainerAllocation>)>,
}

type OnChange = Box<dyn Fn(BTreeMap<String, DeviceCount>) + Send + Sync>;

pub struct Devices {
    dir: PathBuf,
    ex: Arc<smol::Executor<'static>>,
    state: Mutex<State>,
    store: Option<Allocations>,
    on_change: OnChange,
    /// Where CDI specs are read, lowest priority first.
    cdi_dirs: Vec<PathBuf>,
}

impl Devices {
    /// The manager for plugins in `dir`, with the allocations recorded in `store` (none in
    /// tests); `on_change` gets every resource's counts whenever one changes.
    pub fn new(
        dir: &Path,
        ex: Arc<smol::Executor<'static>>,
        store: Option<Allocations>,
        on_change: OnChange,
    ) -> Result<Arc<Self>, DeviceError> {
        let mut state = State::default();
        for a in store.as_ref().map(Allocations::all).transpose()?.into_iter().flatten() {
            let response = serde_json::from_str(&a.response).ok();
            state.allocated.insert((a.pod_uid, a.container, a.resource), (a.devices, response));
        }
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            ex,
            state: Mutex::new(state),
            store,
            on_change,
            cdi_dirs: cdi::DIRS.iter().map(PathBuf::from).collect(),
        }))
    }

    /// Serves the Registration service on `kubelet.sock`.
    pub fn serve(self: &Arc<Self>) -> Result<(), DeviceError> {
        server::serve(self)
    }

    /// The edits of the CDI devices an answer names, resolved from the CDI spec directories.
    pub fn cdi_edits(&self, a: &ContainerAllocation) -> Result<ContainerAllocation, DeviceError> {
        cdi::resolve(&a.cdi_devices, &self.cdi_dirs)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Each resource's devices and healthy devices.
    pub fn counts(&self) -> BTreeMap<String, DeviceCount> {
        let state = self.state();
        let counts = state.plugins.iter().map(|(name, p)| {
            let healthy = p.devices.values().filter(|h| **h).count() as u64;
            (name.clone(), DeviceCount { capacity: p.devices.len() as u64, allocatable: healthy })
        });
        counts.collect()
    }

    fn changed(&self) {
        (self.on_change)(self.counts());
    }

    /// A plugin registered (anew): it replaces any earlier one of the resource.
    fn register(&self, resource: &str, endpoint: PathBuf, options: proto::Options) -> u64 {
        let mut state = self.state();
        state.generations += 1;
        let generation = state.generations;
        let plugin = Plugin { endpoint, generation, options, devices: BTreeMap::new() };
        state.plugins.insert(resource.to_string(), plugin);
        generation
    }

    /// The plugin's answer to GetDevicePluginOptions, which the kubelet goes by.
    fn set_options(&self, resource: &str, generation: u64, options: proto::Options) {
        let mut state = self.state();
        if let Some(p) = state.plugins.get_mut(resource).filter(|p| p.generation == generation) {
            p.options = options;
        }
    }

    /// The plugin's latest list; false when a newer registration replaced it.
    fn update(&self, resource: &str, generation: u64, devices: BTreeMap<String, bool>) -> bool {
        {
            let mut state = self.state();
            match state.plugins.get_mut(resource) {
                Some(p) if p.generation == generation => p.devices = devices,
                _ => return false,
            }
        }
        self.changed();
        true
    }

    /// The pod's devices are free again (the pod is gone for good).
    pub fn release(&self, pod_uid: &str) {
        let had = {
            let mut state = self.state();
            let before = state.allocated.len();
            state.allocated.retain(|(uid, _, _), _| uid != pod_uid);
            before != state.allocated.len()
        };
        if let Some(store) = &self.store {
            if let Err(e) = store.release(pod_uid) {
                log::warn!("pod {pod_uid}: {e}");
            }
        }
        if had {
            log::info!("pod {pod_uid}: devices released");
        }
    }

    /// Devices for `container` of pod `pod_uid`: for each resource and count it asks for,
    /// the plugin's answer (the recorded one when the container had them already). Devices
    /// the pod's `reusable` containers hold (init containers, done before it runs) may be
    /// given again, as the kubelet reuses init containers' devices: admission counted the
    /// larger of them and the app containers, not their sum.
    pub async fn allocate(
        &self,
        pod_uid: &str,
        container: &str,
        reusable: &[String],
        requests: &BTreeMap<String, usize>,
    ) -> Result<Vec<ContainerAllocation>, DeviceError> {
        let mut out = Vec::new();
        for (resource, &n) in requests.iter().filter(|(_, n)| **n > 0) {
            let key = (pod_uid.to_string(), container.to_string(), resource.clone());
            out.push(self.allocate_one(&key, reusable, n).await?);
            self.pre_start(&key).await?;
        }
        Ok(out)
    }

    /// One resource's devices for one container: recorded, or picked (the plugin's
    /// preference first, when it offers one), reserved, allocated by the plugin, recorded.
    async fn allocate_one(
        &self,
        key: &Key,
        reusable: &[String],
        n: usize,
    ) -> Result<ContainerAllocation, DeviceError> {
        let resource = &key.2;
        let (free, endpoint, preferred) = {
            let state = self.state();
            if let Some((_, Some(answer))) = state.allocated.get(key) {
                return Ok(answer.clone());
            }
            let plugin = state
                .plugins
                .get(resource)
                .ok_or_else(|| DeviceError::Unregistered { resource: resource.clone() })?;
            let free = free_devices(&state, resource, key, reusable, n)?;
            (free, plugin.endpoint.clone(), plugin.options.get_preferred_allocation_available)
        };
        let mut chosen: Vec<String> = free.iter().take(n).cloned().collect();
        // As the kubelet: only a choice to make is asked about.
        if preferred && free.len() > n {
            match self.call_preferred(resource, &endpoint, &free, n).await {
                Ok(ids) if ids.len() == n && ids.iter().all(|i| free.contains(i)) => chosen = ids,
                Ok(ids) => log::warn!(
                    "device plugins: {resource}: preferred allocation {ids:?} is not {n} of the available devices; taking {chosen:?}"
                ),
                Err(e) => log::warn!("{e}; taking {chosen:?}"),
            }
        }
        let ids = {
            let mut state = self.state();
            // Another container may have taken some while the plugin was asked.
            let free = free_devices(&state, resource, key, reusable, n)?;
            if !chosen.iter().all(|i| free.contains(i)) {
                chosen = free.into_iter().take(n).collect();
            }
            state.allocated.insert(key.clone(), (chosen.clone(), None));
            chosen
        };
        let answer = self.call_allocate(resource, &endpoint, &ids).await;
        let recorded = answer.and_then(|a| {
            self.record(key, &ids, &a)?;
            Ok(a)
        });
        let mut state = self.state();
        match recorded {
            Ok(a) => {
                log::info!(
                    "pod {}: container {}: {resource} devices {}",
                    key.0,
                    key.1,
                    ids.join(",")
                );
                state.allocated.insert(key.clone(), (ids, Some(a.clone())));
                Ok(a)
            }
            Err(e) => {
                state.allocated.remove(key);
                Err(e)
            }
        }
    }

    /// PreStartContainer with the container's devices, when the plugin asked for it (before
    /// every start of the container, as the kubelet).
    async fn pre_start(&self, key: &Key) -> Result<(), DeviceError> {
        let call = {
            let state = self.state();
            let plugin = state.plugins.get(&key.2).filter(|p| p.options.pre_start_required);
            let ids = state.allocated.get(key).map(|(ids, _)| ids.clone());
            plugin.zip(ids).map(|(p, ids)| (p.endpoint.clone(), ids))
        };
        let Some((endpoint, ids)) = call else { return Ok(()) };
        let request = proto::encode_ids(&ids);
        client::unary(&self.ex, &endpoint, proto::PRE_START, &request).await.map_err(
            |message| DeviceError::Rpc {
                resource: key.2.clone(),
                endpoint: endpoint.clone(),
                message,
            },
        )?;
        Ok(())
    }

    async fn call_preferred(
        &self,
        resource: &str,
        endpoint: &Path,
        available: &[String],
        n: usize,
    ) -> Result<Vec<String>, DeviceError> {
        let rpc = |message: String| DeviceError::Rpc {
            resource: resource.to_string(),
            endpoint: endpoint.to_path_buf(),
            message,
        };
        let request = proto::encode_preferred_request(&[proto::PreferredRequest {
            available: available.to_vec(),
            must_include: Vec::new(),
            size: n as u32,
        }]);
        let answer =
            client::unary(&self.ex, endpoint, proto::GET_PREFERRED, &request).await.map_err(rpc)?;
        let mut containers =
            proto::decode_allocate_request(&answer).map_err(|e| rpc(e.to_string()))?;
        match containers.len() {
            1 => Ok(containers.remove(0)),
            k => Err(rpc(format!("GetPreferredAllocation answered for {k} containers, not 1"))),
        }
    }

    fn record(
        &self,
        key: &Key,
        ids: &[String],
        a: &ContainerAllocation,
    ) -> Result<(), DeviceError> {
        let Some(store) = &self.store else { return Ok(()) };
        store.insert(&Allocation {
            pod_uid: key.0.clone(),
            container: key.1.clone(),
            resource: key.2.clone(),
            devices: ids.to_vec(),
            response: serde_json::to_string(a).unwrap_or_default(),
        })?;
        Ok(())
    }

    async fn call_allocate(
        &self,
        resource: &str,
        endpoint: &Path,
        ids: &[String],
    ) -> Result<ContainerAllocation, DeviceError> {
        let rpc = |message: String| DeviceError::Rpc {
            resource: resource.to_string(),
            endpoint: endpoint.to_path_buf(),
            message,
        };
        let request = proto::encode_allocate_request(&[ids.to_vec()]);
        let answer =
            client::unary(&self.ex, endpoint, proto::ALLOCATE, &request).await.map_err(rpc)?;
        let mut containers =
            proto::decode_allocate_response(&answer).map_err(|e| rpc(e.to_string()))?;
        if containers.len() != 1 {
            return Err(rpc(format!(
                "Allocate answered for {} containers, not 1",
                containers.len()
            )));
        }
        Ok(containers.remove(0))
    }
}

/// The extended resources `c` asks for and how many of each (requests equal limits for
/// them; validation keeps them whole numbers).
pub fn container_requests(c: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, usize> {
    let Some(r) = &c.resources else { return BTreeMap::new() };
    let all = r.limits.iter().chain(r.requests.iter()).flatten();
    all.filter(|(name, _)| crate::engine::is_extended_resource(name))
        .filter_map(|(name, q)| {
            let n = crate::quantity::Quantity::parse(q).ok()?.value();
            Some((name.clone(), usize::try_from(n).ok()?))
        })
        .collect()
}

/// The healthy devices of `resource` no other container holds (but `reusable` ones of the
/// same pod), in ID order; an error when they are fewer than `n`.
fn free_devices(
    state: &State,
    resource: &str,
    key: &Key,
    reusable: &[String],
    n: usize,
) -> Result<Vec<String>, DeviceError> {
    let reused = |k: &Key| k.0 == key.0 && reusable.contains(&k.1);
    let held: std::collections::BTreeSet<&String> = state
        .allocated
        .iter()
        .filter(|(k, _)| k.2 == resource && *k != key && !reused(k))
        .flat_map(|(_, (ids, _))| ids)
        .collect();
    let devices = state.plugins.get(resource).map(|p| &p.devices);
    let free: Vec<String> = devices
        .into_iter()
        .flatten()
        .filter(|(id, healthy)| **healthy && !held.contains(id))
        .map(|(id, _)| id.clone())
        .collect();
    if free.len() < n {
        return Err(DeviceError::Unavailable {
            resource: resource.to_string(),
            requested: n,
            available: free.len(),
        });
    }
    Ok(free)
}

#[cfg(test)]
mod tests;
