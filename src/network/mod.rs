//! Pod networking: CNI plugins give each pod sandbox an interface and an IP.
//!
//! Configuration comes from the first `.conflist` in `/etc/cni/net.d`, as containerd picks it;
//! without one, outpost uses its built-in bridge network (see [`default`]).

pub mod cni;
pub mod default;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use cni::{pod_args, Attachment, Cni, CniError, NetworkList, PortMapping};

/// Where CNI configuration and plugins live, and where results are cached.
#[derive(Clone, Debug)]
pub struct NetworkPaths {
    pub conf_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

impl NetworkPaths {
    /// containerd's defaults, plus Debian's plugin directory.
    pub fn standard(state_dir: &Path) -> Self {
        Self {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir: state_dir.join("cni").join("results"),
        }
    }
}

pub struct Network {
    cni: Cni,
}

impl Network {
    /// Loads the configured network, or the built-in one when none is configured.
    pub fn load(paths: &NetworkPaths) -> Result<Self, CniError> {
        let list = match NetworkList::find(&paths.conf_dir)? {
            Some(list) => {
                log::info!(
                    "network: using CNI config {}",
                    list.source.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
                );
                list
            }
            None => {
                let subnet = default_subnet(paths)?;
                log::info!(
                    "network: no .conflist in {}: using the built-in bridge {} on {subnet}",
                    paths.conf_dir.display(),
                    default::BRIDGE
                );
                // Egress through the bridge needs forwarding; the kubelet leaves that to the
                // admin, k3s sets it. A box with no config gets the working default.
                if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
                    log::warn!(
                        "network: cannot enable net.ipv4.ip_forward: {e}: pods will have no egress"
                    );
                }
                default::network(subnet)
            }
        };
        Ok(Self { cni: Cni::new(list, paths.plugin_dirs.clone(), paths.cache_dir.clone()) })
    }

    /// ADD for a pod's sandbox; returns the pod IPs, primary first. `sandbox_id` names this
    /// sandbox (the CNI container ID): unique per sandbox, so a lease left by a crashed run of
    /// the same pod (UIDs come from content) never collides with the new one.
    pub async fn attach(
        &self,
        pod: &Pod,
        netns: &Path,
        sandbox_id: &str,
    ) -> Result<Vec<String>, CniError> {
        let result = self.cni.add(&attachment(pod, netns, sandbox_id)).await?;
        Ok(result.pod_ips())
    }

    /// DEL for every attachment of a pod, from the cached ADDs (also after an agent restart).
    pub async fn detach(&self, pod_uid: &str) -> Result<(), CniError> {
        for att in self.cni.cached_attachments().into_iter().filter(|a| pod_of(a) == Some(pod_uid))
        {
            self.cni.del(&att).await?;
        }
        Ok(())
    }

    /// The pod IPs of an attached pod, from the cache (after an agent restart).
    pub fn cached_ips(&self, pod_uid: &str) -> Vec<String> {
        let att = self.cni.cached_attachments().into_iter().find(|a| pod_of(a) == Some(pod_uid));
        att.and_then(|a| self.cni.cached_result(&a.container_id))
            .map(|r| r.pod_ips())
            .unwrap_or_default()
    }

    /// Pod UIDs with a cached attachment: what to DEL when their pods are gone.
    pub fn attached_pods(&self) -> Vec<String> {
        self.cni.cached_attachments().iter().filter_map(|a| pod_of(a).map(String::from)).collect()
    }
}

/// The pod an attachment belongs to (its `K8S_POD_UID` argument).
fn pod_of(att: &Attachment) -> Option<&str> {
    att.args.iter().find(|(k, _)| k == "K8S_POD_UID").map(|(_, v)| v.as_str())
}

/// The built-in network's subnet: the one its bridge already has, else the one chosen before
/// (kept in the state directory, so host-local's leases stay valid), else a fresh pick.
fn default_subnet(paths: &NetworkPaths) -> Result<default::Subnet, CniError> {
    let proc_routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(subnet) = default::bridge_subnet(&proc_routes) {
        return Ok(subnet);
    }
    let saved = paths.cache_dir.parent().unwrap_or(&paths.cache_dir).join("default-subnet");
    if let Some(subnet) = std::fs::read_to_string(&saved).ok().and_then(|s| s.trim().parse().ok()) {
        return Ok(subnet);
    }
    let routes = default::host_routes(&proc_routes);
    let subnet = default::pick_subnet(&routes).ok_or_else(|| CniError::Config {
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

fn attachment(pod: &Pod, netns: &Path, sandbox_id: &str) -> Attachment {
    let meta = &pod.metadata;
    let uid = meta.uid.clone().unwrap_or_default();
    Attachment {
        container_id: sandbox_id.to_string(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        args: pod_args(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            &uid,
            sandbox_id,
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
