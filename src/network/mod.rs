//! Pod networking: CNI plugins give each pod sandbox an interface and an IP.
//!
//! Configuration comes from the first `.conflist` in outpost's CNI directory
//! (`/etc/outpost/cni/net.d`), picked as containerd picks one; without one, outpost uses its
//! built-in bridge network (see [`default`]).

pub mod builtin;
pub mod cni;
pub mod default;
pub mod netns;
pub mod nft;
pub mod rtnl;
pub mod subnet;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use builtin::Builtin;
use cni::{pod_args, Attachment, CachedAttachment, Cni, CniError, NetworkList, PortMapping};

/// A pod's pinned network namespace whose ADD has not run yet; [`Network::add`] runs it.
pub struct Attaching {
    cni: Cni,
    att: Attachment,
    pod_name: String,
    started: std::time::Instant,
}

impl Attaching {
    /// The pinned namespace, for the sandbox to join.
    pub fn netns(&self) -> &Path {
        &self.att.netns
    }
}

/// Where CNI configuration and plugins live, and where results are cached.
#[derive(Clone, Debug)]
pub struct NetworkPaths {
    pub conf_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Where sandbox network namespaces are pinned while attached.
    pub netns_dir: PathBuf,
    /// The built-in network's subnet; `None` picks one clear of the host's routes.
    pub subnet: Option<subnet::Subnet>,
    /// The agent's state directory: its database holds the built-in network's leases.
    pub state_dir: PathBuf,
    /// The built-in network in-process where the kernel allows it (else as CNI plugins).
    pub in_process: bool,
}

impl NetworkPaths {
    /// outpost's configuration directory, containerd's plugin directory plus Debian's.
    pub fn standard(state_dir: &Path) -> Self {
        Self {
            conf_dir: PathBuf::from("/etc/outpost/cni/net.d"),
            plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir: state_dir.join("cni").join("results"),
            netns_dir: state_dir.join("cni").join("netns"),
            subnet: None,
            state_dir: state_dir.to_path_buf(),
            in_process: true,
        }
    }
}

/// The pod network. The configuration directory is read again for every ADD, as containerd
/// picks up config changes: a broken or missing config fails that pod's sandbox with the
/// reason, and fixing the file is enough, no agent restart. DEL always runs the plugins
/// (and config) its ADD ran, from the cache.
pub struct Network {
    paths: NetworkPaths,
    /// The in-process built-in network, or why it cannot run here (then the executable
    /// chain in [`default`] serves as the built-in network).
    builtin: Result<Arc<Builtin>, String>,
    /// Why new attachments use that chain although `builtin` could run (the operator's
    /// choice); `builtin` still tears down what it attached before.
    not_in_process: Option<String>,
    /// That chain, chosen once (its subnet must not move under host-local's leases).
    fallback: Mutex<Option<(NetworkList, subnet::Subnet, String)>>,
    /// What the log last said was in use, so a change is logged once.
    announced: Mutex<String>,
}

impl Network {
    /// Sets up the network and logs which configuration is in use; a broken configuration is
    /// logged here and reported on each pod it fails.
    pub fn load(paths: &NetworkPaths) -> Self {
        let builtin = builtin::Builtin::open(paths).map(Arc::new).map_err(|e| e.to_string());
        let not_in_process = (!paths.in_process).then(|| "--builtin-network cni-plugins".into());
        let net = Self {
            paths: paths.clone(),
            builtin,
            not_in_process,
            fallback: Mutex::new(None),
            announced: Mutex::new(String::new()),
        };
        let _ = net.current();
        net
    }

    /// The configuration list in force now.
    fn current(&self) -> Result<NetworkList, CniError> {
        let found = NetworkList::find(&self.paths.conf_dir);
        let (list, what) = match found {
            Ok(Some(list)) => {
                let what = format!(
                    "network: using CNI config {}",
                    list.source.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
                );
                (Ok(list), what)
            }
            Ok(None) => match self.in_process() {
                Ok(b) => {
                    let (bridge, subnet) = b.describe();
                    let what = format!(
                        "network: no .conflist in {}: using the built-in bridge {bridge} on {subnet}",
                        self.paths.conf_dir.display(),
                    );
                    (Ok(builtin::list()), what)
                }
                Err(why) => match self.fallback() {
                    Ok((list, subnet, bridge)) => {
                        let what = format!(
                            "network: no .conflist in {}: using the CNI plugins bridge, portmap and firewall on bridge {bridge}, {subnet} (not in-process: {why})",
                            self.paths.conf_dir.display(),
                        );
                        (Ok(list), what)
                    }
                    Err(e) => {
                        let what = format!("network: {e}");
                        (Err(e), what)
                    }
                },
            },
            Err(e) => {
                let what = format!("network: {e}: pods without hostNetwork cannot start");
                (Err(e), what)
            }
        };
        let mut announced = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        if *announced != what {
            if list.is_ok() {
                log::info!("{what}");
            } else {
                log::error!("{what}");
            }
            *announced = what;
        }
        list
    }

    /// The in-process network when new attachments use it, or why not.
    fn in_process(&self) -> Result<&Arc<Builtin>, &String> {
        match &self.not_in_process {
            Some(why) => Err(why),
            None => self.builtin.as_ref(),
        }
    }

    /// The executable chain standing in for the in-process network.
    fn fallback(&self) -> Result<(NetworkList, subnet::Subnet, String), CniError> {
        let mut builtin = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = builtin.as_ref() {
            return Ok(b.clone());
        }
        let subnet = default_subnet(&self.paths)?;
        // Egress through the bridge needs forwarding; the kubelet leaves that to the admin,
        // k3s sets it. A box with no config gets the working default.
        if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
            log::warn!("network: cannot enable net.ipv4.ip_forward: {e}: pods will have no egress");
        }
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let bridge = default::bridge_for(subnet, &routes);
        if bridge != default::BRIDGE {
            log::warn!(
                "network: bridge {} already serves another subnet than {subnet}: pods get bridge {bridge}",
                default::BRIDGE
            );
        }
        let b = (default::network(subnet, &bridge), subnet, bridge);
        *builtin = Some(b.clone());
        Ok(b)
    }

    fn cni(&self, list: NetworkList) -> Cni {
        Cni::new(list, self.paths.plugin_dirs.clone(), self.paths.cache_dir.clone())
            .with_builtin(self.builtin.as_ref().ok().cloned())
    }

    /// ADD for a pod's sandbox, whose namespace is `netns`; returns the pod IPs, primary
    /// first. Each ADD gets a fresh container ID, like containerd's sandbox ID: a recreated
    /// sandbox, or the same manifest run by a second agent on this host, never shares
    /// plugin state (leases, iptables chains) with another. A failed ADD is undone with DEL.
    pub async fn attach(&self, pod: &Pod, netns: &Path) -> Result<Vec<String>, CniError> {
        let started = std::time::Instant::now();
        let list = self.current()?;
        let id = sandbox_id();
        let pinned = self.paths.netns_dir.join(&id);
        netns::pin(netns, &pinned)?;
        let a = self.attaching(pod, list, &id, &pinned, started);
        let added = self.add(&a).await;
        if added.is_err() {
            self.undo(a).await;
        }
        added
    }

    /// A new network namespace for a pod (`lo` up, pinned), for its sandbox to join while
    /// [`Network::add`] sets it up: the two overlap, as under containerd and CRI-O. With
    /// `owner` (the pod's pinned user namespace, `hostUsers: false`) it is owned by that one,
    /// so the pod's root has power over its own `lo`, addresses and sysctls.
    pub async fn prepare(&self, pod: &Pod, owner: Option<&Path>) -> Result<Attaching, CniError> {
        let started = std::time::Instant::now();
        let list = self.current()?;
        let id = sandbox_id();
        let pinned = self.paths.netns_dir.join(&id);
        match owner {
            None => netns::create(&pinned).await?,
            Some(owner) => {
                use crate::runtime::userns::{create, Kind, Owner};
                let (owner, pin) = (owner.to_path_buf(), pinned.clone());
                smol::unblock(move || create(Owner::Pinned(&owner), &[(Kind::Net, &pin)]))
                    .await
                    .map_err(|e| CniError::Userns(e.to_string()))?;
            }
        }
        Ok(self.attaching(pod, list, &id, &pinned, started))
    }

    fn attaching(
        &self,
        pod: &Pod,
        mut list: NetworkList,
        id: &str,
        pinned: &Path,
        started: std::time::Instant,
    ) -> Attaching {
        let att = attachment(pod, id, pinned);
        // In the built-in network, portmap only serves hostPorts: a pod without any skips an
        // exec (its cache entry records the shorter list, so DEL matches). A user's conflist
        // runs whole, as under containerd.
        if list.source.is_none() && att.port_mappings.is_empty() {
            list.plugins
                .retain(|p| p.get("capabilities").and_then(|c| c.get("portMappings")).is_none());
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        Attaching { cni: self.cni(list), att, pod_name, started }
    }

    /// Runs the ADD of a pinned namespace; returns the pod IPs, primary first. A failed ADD
    /// leaves its state for [`Network::undo`], which must wait until the sandbox joining the
    /// namespace is done with it.
    pub async fn add(&self, a: &Attaching) -> Result<Vec<String>, CniError> {
        let result = a.cni.add(&a.att).await?;
        let ips = result.pod_ips();
        // benches/network_setup.rs reads this line.
        log::info!(
            "pod {}: network {} attached {} in {:.1} ms",
            a.pod_name,
            a.cni.network.name,
            ips.join(","),
            a.started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(ips)
    }

    /// Undoes a failed ADD: DEL, and the pin released (a DEL that fails is retried later from
    /// the cache, by [`Network::detach`]).
    pub async fn undo(&self, a: Attaching) {
        if let Err(e) = self.teardown(&a.cni, &a.att).await {
            log::warn!("pod {}: undoing the failed network setup: {e}", a.pod_name);
        }
    }

    /// DEL for every attachment of a pod, from the cache (also after an agent restart); the
    /// pinned namespaces are released after. Nothing cached means nothing to undo.
    pub async fn detach(&self, pod_uid: &str) -> Result<(), CniError> {
        let mut first_err = None;
        for c in self.cached_for(pod_uid) {
            let list = match c.network {
                Some(list) => list,
                None => match self.current() {
                    Ok(list) => list,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        continue;
                    }
                },
            };
            let cni = self.cni(list);
            if let Err(e) = self.teardown(&cni, &c.attachment).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn teardown(&self, cni: &Cni, att: &Attachment) -> Result<(), CniError> {
        let mut att = att.clone();
        // After a reboot the pin is an empty file: plugins then only release host state.
        if !netns::is_pinned(&att.netns) {
            att.netns = PathBuf::new();
        }
        cni.del(&att).await?;
        let pin = self.paths.netns_dir.join(&att.container_id);
        // Entries from before pinning name /proc/<pid>/ns/net: nothing of ours to release.
        if att.netns == pin {
            netns::unpin(&pin)?;
        } else if att.netns.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&pin);
        }
        Ok(())
    }

    /// CHECK for every attachment of a pod: the plugins confirm the interface, address,
    /// routes and rules are still in place. The agent does not call it, like containerd and
    /// CRI-O: Debian's portmap 1.1 fails CHECK for IPv4-only pods with hostPorts (it looks
    /// for its ip6tables chain), so a routine CHECK would only raise false alarms.
    pub async fn check(&self, pod_uid: &str) -> Result<(), CniError> {
        // An entry without a result is an ADD the agent did not finish: nothing to check.
        let attached = self.cached_for(pod_uid).into_iter().filter(|c| !c.result.raw.is_null());
        for c in attached {
            let list = match c.network {
                Some(list) => list,
                None => self.current()?,
            };
            self.cni(list).check(&c.attachment).await?;
        }
        Ok(())
    }

    /// The pod IPs of an attached sandbox, from the cache (after an agent restart).
    pub fn cached_ips(&self, pod_uid: &str) -> Vec<String> {
        self.cached_for(pod_uid)
            .into_iter()
            .find(|c| !c.result.ips.is_empty())
            .map(|c| c.result.pod_ips())
            .unwrap_or_default()
    }

    /// [`Network::cached_ips`] of every attached pod, reading the cache once: adopting many
    /// pods one lookup each would parse the whole cache per pod.
    pub fn cached_ips_by_pod(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut out = std::collections::HashMap::new();
        for c in self.cached() {
            if let (Some(uid), false) = (c.attachment.pod_uid(), c.result.ips.is_empty()) {
                out.entry(uid.to_string()).or_insert_with(|| c.result.pod_ips());
            }
        }
        out
    }

    /// Runs for the agent's life: whenever an IPv4 address or route changes on the host (a
    /// second of them batched), the in-process network checks its subnet for overlaps.
    pub async fn watch_overlaps(&self) {
        let Ok(b) = self.in_process().cloned() else { return };
        let fd = match rtnl::subscribe_ipv4_changes().and_then(smol::Async::new) {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("network: cannot watch the host's routes for overlaps: {e}");
                return;
            }
        };
        let drain = |fd: &smol::Async<std::os::fd::OwnedFd>| {
            use std::os::fd::AsRawFd;
            let mut buf = [0u8; 8192];
            // SAFETY: recv into a buffer of that size; the socket is non-blocking.
            while unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } > 0 {
            }
        };
        loop {
            if fd.readable().await.is_err() {
                return;
            }
            smol::Timer::after(std::time::Duration::from_secs(1)).await;
            drain(&fd);
            let b = b.clone();
            smol::unblock(move || b.check_overlaps()).await;
        }
    }

    /// At agent start, once the attachments of pods that are gone are detached: stray pins
    /// released, and the built-in network's leases, rules and bridge matched to what is left.
    pub async fn reconcile(&self) {
        self.release_stray_pins();
        if let Ok(b) = &self.builtin {
            let ours: Vec<CachedAttachment> = self
                .cached()
                .into_iter()
                .filter(|c| c.network.as_ref().is_some_and(builtin::is_builtin))
                .collect();
            let b = b.clone();
            smol::unblock(move || b.reconcile(&ours)).await;
        }
    }

    /// Unpins every pinned namespace no cache entry names. An agent killed between pinning and
    /// caching leaves one; no plugin ran for it (the cache is written first), so the pin is
    /// all there is to release. Only while no ADD is under way (at agent start).
    fn release_stray_pins(&self) {
        // A cache write cut short by a crash leaves its temp file; the entry it was replacing
        // (written before any plugin ran) is still there, so the temp file is only litter.
        if let Ok(entries) = std::fs::read_dir(&self.paths.cache_dir) {
            for e in entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let known: std::collections::HashSet<String> =
            self.cached().into_iter().map(|c| c.attachment.container_id).collect();
        let Ok(entries) = std::fs::read_dir(&self.paths.netns_dir) else { return };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if known.contains(&id) {
                continue;
            }
            match netns::unpin(&e.path()) {
                Ok(()) => log::info!("network: released namespace pin {id} no attachment uses"),
                Err(e) => log::warn!("network: {e}"),
            }
        }
    }

    /// Pod UIDs with a cached attachment: what to DEL when their pods are gone.
    pub fn attached_pods(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .cached()
            .into_iter()
            .filter_map(|c| c.attachment.pod_uid().map(String::from))
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }

    fn cached(&self) -> Vec<CachedAttachment> {
        cni::cached_in(&self.paths.cache_dir, None)
    }

    /// One pod's cache entries.
    fn cached_for(&self, pod_uid: &str) -> Vec<CachedAttachment> {
        cni::cached_in(&self.paths.cache_dir, Some(pod_uid))
    }
}

/// A random 64-hex-digit ID, the shape of containerd's sandbox IDs.
fn sandbox_id() -> String {
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Unique enough without entropy: time and pid.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..16].copy_from_slice(&now.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The built-in network's subnet: the one its bridge already has, else the one chosen before
/// (kept in the state directory, so host-local's leases stay valid), else a fresh pick.
fn default_subnet(paths: &NetworkPaths) -> Result<subnet::Subnet, CniError> {
    let proc_routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(subnet) = paths.subnet {
        if let Some(r) = default::host_routes(&proc_routes).iter().find(|r| r.overlaps(&subnet)) {
            log::warn!("network: --pod-subnet {subnet} overlaps the host route to {r}");
        }
        return Ok(subnet);
    }
    let saved = paths.cache_dir.parent().unwrap_or(&paths.cache_dir).join("default-subnet");
    if let Some(subnet) = std::fs::read_to_string(&saved).ok().and_then(|s| s.trim().parse().ok()) {
        return Ok(subnet);
    }
    let taken: Vec<subnet::Taken> = default::host_routes(&proc_routes)
        .into_iter()
        .map(|prefix| subnet::Taken { prefix, by: "a host route".into() })
        .collect();
    let subnet = subnet::pick(&taken).ok_or_else(|| CniError::Config {
        path: paths.conf_dir.clone(),
        message: "no free private /24 for the built-in network: add a .conflist".into(),
    })?;
    let write = std::fs::create_dir_all(saved.parent().unwrap_or(&saved))
        .and_then(|()| std::fs::write(&saved, subnet.to_string()));
    if let Err(e) = write {
        log::warn!("network: cannot record the subnet in {}: {e}", saved.display());
    }
    Ok(subnet)
}

fn attachment(pod: &Pod, id: &str, netns: &Path) -> Attachment {
    let meta = &pod.metadata;
    let uid = meta.uid.clone().unwrap_or_default();
    Attachment {
        container_id: id.to_string(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        args: pod_args(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            &uid,
        ),
        port_mappings: port_mappings(pod),
    }
}

/// The pod's hostPorts, as the `portMappings` capability wants them.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| PortMapping {
            host_port: p.host_port.unwrap_or(0) as u16,
            container_port: p.container_port as u16,
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}
