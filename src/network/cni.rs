//! The CNI protocol (spec 1.0): run a network configuration list's plugins for ADD, CHECK and
//! DEL, chaining `prevResult`, and cache each ADD result so DEL works after an agent restart,
//! as libcni (containerd, CRI-O) does. Plugins are executables by design.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::builtin::{self, Builtin};

/// A plugin that hangs must not hang the pod: libcni has no limit, the kubelet's
/// runtime request timeout is 2 minutes.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration list cannot be used.
    #[error("CNI config {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// No executable of that name in the plugin directories.
    #[error("CNI plugin {plugin:?} not found in {dirs}: install it (Debian: containernetworking-plugins)")]
    PluginNotFound { plugin: String, dirs: String },
    /// The plugin could not be run at all.
    #[error("CNI plugin {plugin}: {source}")]
    Exec { plugin: String, source: std::io::Error },
    /// The plugin ran past [`PLUGIN_TIMEOUT`] and was killed.
    #[error("CNI plugin {plugin} ({command}) timed out after {secs} s", secs = PLUGIN_TIMEOUT.as_secs())]
    Timeout { plugin: String, command: &'static str },
    /// The plugin reported an error (spec section "Error").
    #[error("CNI plugin {plugin} {command} failed: {msg}{details}", details = if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin { plugin: String, command: &'static str, code: u32, msg: String, details: String },
    /// The plugin printed something that is not a CNI result.
    #[error("CNI plugin {plugin} {command}: unreadable result: {message}")]
    BadResult { plugin: String, command: &'static str, message: String },
    /// The sandbox's network namespace could not be pinned or released.
    #[error(transparent)]
    Netns(#[from] super::netns::NetnsError),
    /// The pod's network namespace could not be made in its user namespace.
    #[error("network namespace in the pod's user namespace: {0}")]
    Userns(String),
    /// The built-in network's in-process plugin failed at a step.
    #[error("built-in network: {step}: {detail}")]
    Builtin { step: &'static str, detail: String },
    /// The result cache could not be written or read.
    #[error("CNI result cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, CniError>;

/// A network configuration list (`*.conflist`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkList {
    pub cni_version: String,
    pub name: String,
    /// Each plugin's configuration, kept as JSON: plugins define their own keys.
    pub plugins: Vec<Map<String, Value>>,
    /// Where it was read from; `None` for the built-in default.
    pub source: Option<PathBuf>,
}

impl NetworkList {
    pub fn parse(path: Option<&Path>, text: &str) -> Result<Self> {
        let err = |message: String| CniError::Config {
            path: path.map_or_else(|| PathBuf::from("<built-in>"), Path::to_path_buf),
            message,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let name = v["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err("missing \"name\"".into()))?;
        let cni_version = v["cniVersion"].as_str().unwrap_or("1.0.0").to_string();
        let plugins: Vec<Map<String, Value>> = v["plugins"]
            .as_array()
            .ok_or_else(|| err("missing \"plugins\" list".into()))?
            .iter()
            .map(|p| {
                p.as_object().cloned().ok_or_else(|| err("a plugin entry is not an object".into()))
            })
            .collect::<Result<_>>()?;
        if plugins.is_empty() {
            return Err(err("\"plugins\" is empty".into()));
        }
        for p in &plugins {
            if p.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(err("a plugin entry has no \"type\"".into()));
            }
        }
        Ok(Self {
            cni_version,
            name: name.to_string(),
            plugins,
            source: path.map(Path::to_path_buf),
        })
    }

    /// The list as a conflist document, kept with each cached attachment so DEL runs the
    /// plugins that ADD ran even if the configuration changed since.
    pub fn to_json(&self) -> Value {
        json!({ "cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins })
    }

    /// The first `*.conflist` by name in `dir`, as containerd picks it; `None` if there is none.
    pub fn find(dir: &Path) -> Result<Option<Self>> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
        let mut lists: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        lists.sort();
        let Some(path) = lists.into_iter().next() else { return Ok(None) };
        let text = std::fs::read_to_string(&path).map_err(|e| CniError::Config {
            path: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(Some(&path), &text).map(Some)
    }
}

/// One pod's attachment to the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The sandbox's ID (the pod UID).
    pub container_id: String,
    /// `/proc/<pause pid>/ns/net`, or a bind-mounted netns file.
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`: K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID...
    pub args: Vec<(String, String)>,
    /// Passed as `runtimeConfig.portMappings` to plugins with that capability.
    pub port_mappings: Vec<PortMapping>,
}

impl Attachment {
    /// The pod this attachment belongs to (its `K8S_POD_UID` argument).
    pub fn pod_uid(&self) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == "K8S_POD_UID").map(|(_, v)| v.as_str())
    }
}

/// A hostPort, in the shape of the `portMappings` capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty", default)]
    pub host_ip: String,
}

/// The parts of an ADD result outpost uses; the whole result is kept for chaining and DEL.
#[derive(Clone, Debug, PartialEq)]
pub struct AddResult {
    /// Addresses in CIDR form (`10.88.0.5/24`), in the order the plugin gave them.
    pub ips: Vec<String>,
    pub raw: Value,
}

impl AddResult {
    fn from_raw(raw: Value) -> Self {
        let ips = raw["ips"]
            .as_array()
            .map(|ips| {
                ips.iter().filter_map(|ip| ip["address"].as_str().map(String::from)).collect()
            })
            .unwrap_or_default();
        Self { ips, raw }
    }

    /// The pod IPs without prefix length.
    pub fn pod_ips(&self) -> Vec<String> {
        self.ips.iter().map(|c| c.split('/').next().unwrap_or(c).to_string()).collect()
    }
}

/// Runs plugins of one network list.
#[derive(Clone)]
pub struct Cni {
    pub network: NetworkList,
    plugin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    /// Runs the in-process plugin ([`builtin::PLUGIN`]) when it is available.
    builtin: Option<Arc<Builtin>>,
}

impl Cni {
    pub fn new(network: NetworkList, plugin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self { network, plugin_dirs, cache_dir, builtin: None }
    }

    pub fn with_builtin(mut self, builtin: Option<Arc<Builtin>>) -> Self {
        self.builtin = builtin;
        self
    }

    /// The in-process plugin: ADD and DEL on the blocking pool (netlink waits on the kernel's
    /// RTNL lock, which namespace teardown can hold for long); CHECK has nothing to check.
    async fn invoke_builtin(
        &self,
        command: &'static str,
        att: &Attachment,
    ) -> Result<Option<Value>> {
        let Some(b) = self.builtin.clone() else {
            return Err(CniError::Builtin {
                step: command,
                detail: "not available in this agent (see the log at start): delete the pod's cache entry's network or restore nf_tables".into(),
            });
        };
        let att = att.clone();
        match command {
            "ADD" => smol::unblock(move || b.add(&att)).await.map(Some),
            "DEL" => smol::unblock(move || b.del(&att)).await.map(|()| None),
            _ => Ok(None),
        }
    }

    /// ADD: every plugin in order, each given the previous one's result. The attachment is
    /// cached before the first plugin runs (so an agent killed mid-ADD still knows what to
    /// DEL) and again with the final result before it is returned.
    pub async fn add(&self, att: &Attachment) -> Result<AddResult> {
        self.write_cache(att, &Value::Null)?;
        let mut prev: Option<Value> = None;
        for plugin in &self.network.plugins {
            let out = self.invoke("ADD", plugin, att, prev.as_ref()).await?;
            prev = Some(out.ok_or_else(|| CniError::BadResult {
                plugin: plugin_type(plugin).into(),
                command: "ADD",
                message: "empty output".into(),
            })?);
        }
        let raw = prev.unwrap_or(Value::Null);
        self.write_cache(att, &raw)?;
        Ok(AddResult::from_raw(raw))
    }

    /// CHECK: every plugin in order with the cached result.
    pub async fn check(&self, att: &Attachment) -> Result<()> {
        let cached = self.read_cache(att)?;
        for plugin in &self.network.plugins {
            self.invoke("CHECK", plugin, att, cached.as_ref()).await?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse order with the cached ADD result (if any: a DEL without
    /// one is still sent, plugins must tolerate it), then the cache entry is removed.
    /// DEL is idempotent; a missing netns is not an error for the standard plugins.
    ///
    /// Unlike libcni, a failing plugin does not stop the others (what they set up is released
    /// anyway); the first error is returned and the entry kept, so DEL is tried again. A
    /// plugin that is not installed is skipped with a warning: nothing can run its DEL, and
    /// waiting for it would keep every other plugin's state forever.
    pub async fn del(&self, att: &Attachment) -> Result<()> {
        let cached = self.read_cache(att)?;
        let mut first_err = None;
        for plugin in self.network.plugins.iter().rev() {
            match self.invoke("DEL", plugin, att, cached.as_ref()).await {
                Ok(_) => {}
                Err(e @ CniError::PluginNotFound { .. }) => {
                    log::warn!("network {}: DEL of {}: {e}", self.network.name, att.container_id)
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let path = self.cache_path(att);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniError::Cache { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The plugin's stdin: its own config plus name, version, prevResult and runtimeConfig.
    fn stdin_config(
        &self,
        plugin: &Map<String, Value>,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Value {
        let mut conf = plugin.clone();
        conf.insert("cniVersion".into(), json!(self.network.cni_version));
        conf.insert("name".into(), json!(self.network.name));
        conf.remove("capabilities");
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let wants_ports = plugin
            .get("capabilities")
            .and_then(|c| c.get("portMappings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if wants_ports && !att.port_mappings.is_empty() {
            conf.insert("runtimeConfig".into(), json!({ "portMappings": att.port_mappings }));
        }
        Value::Object(conf)
    }

    async fn invoke(
        &self,
        command: &'static str,
        plugin: &Map<String, Value>,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<Option<Value>> {
        let name = plugin_type(plugin).to_string();
        if name == builtin::PLUGIN {
            return self.invoke_builtin(command, att).await;
        }
        let exe = self.find_plugin(&name)?;
        let stdin = serde_json::to_vec(&self.stdin_config(plugin, att, prev)).unwrap_or_default();
        let cni_args =
            att.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";");
        let cni_path = std::env::join_paths(&self.plugin_dirs).unwrap_or_default();
        let mut child = smol::process::Command::new(&exe)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", cni_args)
            .env("CNI_PATH", cni_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| CniError::Exec { plugin: name.clone(), source })?;
        if let Some(mut input) = child.stdin.take() {
            use smol::io::AsyncWriteExt;
            input
                .write_all(&stdin)
                .await
                .map_err(|source| CniError::Exec { plugin: name.clone(), source })?;
        }
        let output = smol::future::or(async { Some(child.output().await) }, async {
            smol::Timer::after(PLUGIN_TIMEOUT).await;
            None
        })
        .await
        .ok_or_else(|| CniError::Timeout { plugin: name.clone(), command })?
        .map_err(|source| CniError::Exec { plugin: name.clone(), source })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let err: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
            let msg = err["msg"].as_str().map(String::from).unwrap_or_else(|| {
                let stderr = String::from_utf8_lossy(&output.stderr);
                format!("exited with {}: {}", output.status, stderr.trim())
            });
            return Err(CniError::Plugin {
                plugin: name,
                command,
                code: err["code"].as_u64().unwrap_or(0) as u32,
                msg,
                details: err["details"].as_str().unwrap_or_default().to_string(),
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&stdout).map(Some).map_err(|e| CniError::BadResult {
            plugin: name,
            command,
            message: e.to_string(),
        })
    }

    fn find_plugin(&self, name: &str) -> Result<PathBuf> {
        // A type is a file name, never a path: no escaping the plugin directories.
        if name.contains('/') || name == "." || name == ".." {
            return Err(CniError::PluginNotFound { plugin: name.into(), dirs: self.dirs_list() });
        }
        self.plugin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::PluginNotFound { plugin: name.into(), dirs: self.dirs_list() })
    }

    fn dirs_list(&self) -> String {
        self.plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    fn cache_path(&self, att: &Attachment) -> PathBuf {
        self.cache_dir.join(format!("{}-{}-{}", self.network.name, att.container_id, att.ifname))
    }

    /// libcni's cache shape (`cniCacheV1`), written atomically.
    fn write_cache(&self, att: &Attachment, result: &Value) -> Result<()> {
        let path = self.cache_path(att);
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": att.container_id,
            "ifName": att.ifname,
            "networkName": self.network.name,
            "netns": att.netns,
            "cniArgs": att.args,
            "capabilityArgs": { "portMappings": att.port_mappings },
            "result": result,
            // libcni keeps the configuration too (as base64 bytes under "config").
            "networkList": self.network.to_json(),
        });
        let cache_err = |source| CniError::Cache { path: path.clone(), source };
        std::fs::create_dir_all(&self.cache_dir).map_err(cache_err)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&entry).unwrap_or_default())
            .map_err(cache_err)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(cache_err)?;
        std::fs::rename(&tmp, &path).map_err(cache_err)
    }

    fn read_cache(&self, att: &Attachment) -> Result<Option<Value>> {
        let path = self.cache_path(att);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Ok(Some(v["result"].clone()).filter(|r| !r.is_null()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }

    /// Attachments with a cached entry: what a restarted agent must DEL if their pods are gone.
    pub fn cached_attachments(&self) -> Vec<Attachment> {
        self.cached().into_iter().map(|c| c.attachment).collect()
    }

    /// The cached ADD result of a sandbox: a restarted agent learns its pod IPs from it.
    pub fn cached_result(&self, container_id: &str) -> Option<AddResult> {
        self.cached()
            .into_iter()
            .find(|c| c.attachment.container_id == container_id)
            .map(|c| c.result)
    }

    /// This network's cache entries.
    pub fn cached(&self) -> Vec<CachedAttachment> {
        cached_in(&self.cache_dir, None)
            .into_iter()
            .filter(|c| c.network_name == self.network.name)
            .collect()
    }
}

/// One entry of the result cache.
#[derive(Clone, Debug)]
pub struct CachedAttachment {
    pub attachment: Attachment,
    pub network_name: String,
    /// Empty when the agent stopped during ADD.
    pub result: AddResult,
    /// The configuration ADD ran with; `None` in entries written before it was kept.
    pub network: Option<NetworkList>,
}

/// Every entry in a cache directory, whatever its network; only `pod_uid`'s when given (the
/// others are skipped before they are decoded: removing 110 pods at once decoded the whole
/// cache 110 times over, 16 MB at the peak).
pub fn cached_in(cache_dir: &Path, pod_uid: Option<&str>) -> Vec<CachedAttachment> {
    let Ok(entries) = std::fs::read_dir(cache_dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == "tmp") {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else { continue };
        let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else { continue };
        let args: Vec<(String, String)> =
            serde_json::from_value(v["cniArgs"].take()).unwrap_or_default();
        if pod_uid.is_some_and(|uid| !args.iter().any(|(k, v)| k == "K8S_POD_UID" && v == uid)) {
            continue;
        }
        let network_name = v["networkName"].as_str().unwrap_or_default().to_string();
        let network = (!v["networkList"].is_null())
            .then(|| NetworkList::parse(None, &v["networkList"].to_string()).ok())
            .flatten();
        let ports: Vec<PortMapping> =
            serde_json::from_value(v["capabilityArgs"]["portMappings"].take()).unwrap_or_default();
        let att = Attachment {
            container_id: v["containerId"].as_str().unwrap_or_default().into(),
            netns: PathBuf::from(v["netns"].as_str().unwrap_or_default()),
            ifname: v["ifName"].as_str().unwrap_or("eth0").into(),
            args,
            port_mappings: ports,
        };
        out.push(CachedAttachment {
            attachment: att,
            network_name,
            result: AddResult::from_raw(v["result"].take()),
            network,
        });
    }
    out
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// `CNI_ARGS` for a pod, as the kubelet passes them.
pub fn pod_args(namespace: &str, name: &str, uid: &str) -> Vec<(String, String)> {
    let args = BTreeMap::from([
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", uid),
        ("K8S_POD_UID", uid),
    ]);
    args.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
