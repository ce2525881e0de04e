//! Command-line interface: argument definitions and the `validate` and `version` commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::manifest::{self, DesiredState, Document, ManifestError};

/// Runs Kubernetes pods from a directory of manifests, without a control plane.
///
/// Drop a Pod YAML into the manifest directory and it runs; edit it and the pod is replaced;
/// delete it and the pod is stopped gracefully. ConfigMap and Secret manifests in the same
/// directory feed environment variables and volumes.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `run`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch the manifest directory and keep its pods running.
    ///
    /// Logging is controlled with RUST_LOG (e.g. RUST_LOG=debug); the default is info.
    Run(RunArgs),
    /// Check manifests (files or directories) without running anything.
    ///
    /// Prints every problem as `file:line:column: field: message` and exits with 1 if there
    /// is any, 0 when all manifests are valid.
    Validate {
        /// Manifest files, or directories whose *.yaml, *.yml and *.json files are checked.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Manage the local image store: import tarballs, list, remove.
    Image(crate::image::cli::ImageArgs),
    /// Run a command in a running container, like `kubectl exec POD -- CMD`.
    Exec(crate::exec::ExecArgs),
    /// List pods of the running agent, like `kubectl get pods`.
    Get(crate::client::GetArgs),
    /// Show a pod in detail with its events, like `kubectl describe pod`.
    Describe(crate::client::DescribeArgs),
    /// Print a container's logs, like `kubectl logs`.
    Logs(crate::client::LogsArgs),
    /// List events, like `kubectl get events`.
    Events(crate::client::EventsArgs),
    /// Show pods' CPU and memory usage, like `kubectl top pod`.
    Top(crate::client::TopArgs),
    /// A pod's revisions under safe updates: `outpost rollout history pod NAME`.
    Rollout(crate::client::RolloutArgs),
    /// Print a kubeconfig for kubectl on another machine (a new token with a role), or
    /// revoke or list tokens. Needs `outpost run --secure-listen`.
    Kubeconfig(crate::kubeconfig::KubeconfigArgs),
    /// Print the version.
    Version,
    /// Internal: the per-pod supervisor the agent spawns (see `runtime`).
    #[command(hide = true)]
    Supervise {
        /// The pod directory, holding sandbox.json.
        #[arg(long, value_name = "DIR")]
        pod_dir: PathBuf,
        /// Clean up after a dead supervisor instead: kill and delete what is left.
        #[arg(long)]
        gc: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directory of Pod, ConfigMap and Secret manifests; created if missing.
    #[arg(long, value_name = "DIR", default_value = "/etc/edge.d", env = "OUTPOST_MANIFESTS")]
    pub manifests: PathBuf,
    /// Directory for outpost's state: database, images, logs.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost", env = "OUTPOST_STATE")]
    pub state: PathBuf,
    /// Address of the local Kubernetes-style read API (kubectl --server http://ADDR).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10250", env = "OUTPOST_LISTEN")]
    pub listen: SocketAddr,
    /// CNI configuration directory: its first `.conflist` by name is the pod network; without
    /// one, outpost's built-in bridge network is used. outpost's own directory, as k3s has its
    /// own: `/etc/cni/net.d` holds other runtimes' networks (podman's), which are not ours.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/outpost/cni/net.d",
        env = "OUTPOST_CNI_CONF_DIR"
    )]
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories, searched in order.
    #[arg(
        long,
        value_name = "DIR[,DIR]",
        value_delimiter = ',',
        default_value = "/opt/cni/bin,/usr/lib/cni",
        env = "OUTPOST_CNI_BIN_DIR"
    )]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Subnet of the built-in network (default: the first /24 of 10.2.0.0-10.31.255.255, then
    /// 172.16.0.0/16, that overlaps no address or route on the host and no range podman,
    /// docker or k3s use by default).
    #[arg(long, value_name = "CIDR", env = "OUTPOST_POD_SUBNET")]
    pub pod_subnet: Option<crate::network::subnet::Subnet>,
    /// How the built-in network runs: `in-process` (netlink and nftables; where the kernel has
    /// no nf_tables, the CNI plugins instead) or `cni-plugins` (bridge, host-local, portmap,
    /// firewall from --cni-bin-dir).
    #[arg(long, value_name = "HOW", default_value = "in-process", value_parser = ["in-process", "cni-plugins"], env = "OUTPOST_BUILTIN_NETWORK")]
    pub builtin_network: String,
    /// Serve plain HTTP on a non-loopback --listen address (refused by default: anyone on the
    /// network could read the API, or a token sent in clear). Prefer --secure-listen.
    #[arg(long, env = "OUTPOST_LISTEN_ALLOW_REMOTE")]
    pub listen_allow_remote: bool,
    /// Also serve the whole API over HTTPS here (e.g. 0.0.0.0:10250), for kubectl from
    /// another machine: bearer tokens and client certificates with the view or admin role
    /// (`outpost kubeconfig` makes them). The CA and serving certificate are made in
    /// STATE/pki/.
    #[arg(long, value_name = "ADDR", env = "OUTPOST_SECURE_LISTEN")]
    pub secure_listen: Option<SocketAddr>,
    /// The secure listener's certificate (PEM, the chain) instead of one the device's CA
    /// signs; with --tls-private-key-file.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_private_key_file",
        env = "OUTPOST_TLS_CERT_FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert_file",
        env = "OUTPOST_TLS_PRIVATE_KEY_FILE"
    )]
    pub tls_private_key_file: Option<PathBuf>,
    /// More names or addresses for the generated serving certificate, beyond the hostname,
    /// localhost and the host's addresses (e.g. a DNS name or a NAT's public address).
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',', env = "OUTPOST_TLS_SAN")]
    pub tls_san: Vec<String>,
    /// Also serve the API on this unix socket (mode 0600; no token needed there).
    #[arg(long, value_name = "PATH", env = "OUTPOST_API_SOCKET")]
    pub api_socket: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` on the TCP API, the token being this file's
    /// content (/healthz, /readyz and /livez stay open).
    #[arg(long, value_name = "FILE", env = "OUTPOST_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Serve Secret values through the API; by default they are redacted (keys kept, values
    /// empty).
    #[arg(long)]
    pub api_show_secrets: bool,
    /// Containers whose pod and container name no seccompProfile get RuntimeDefault (like
    /// the kubelet's --seccomp-default, but on by default, as in docker and podman);
    /// --seccomp-default=false leaves them Unconfined, the kubelet's default.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        env = "OUTPOST_SECCOMP_DEFAULT"
    )]
    pub seccomp_default: bool,
    /// Resources kept for the OS, like the kubelet's flag: cpu=200m,memory=256Mi,
    /// ephemeral-storage=1Gi. Allocatable = capacity - kube-reserved - system-reserved - hard
    /// eviction thresholds; pods whose requests do not fit are rejected (OutOfcpu...).
    #[arg(long, value_name = "LIST", default_value = "", env = "OUTPOST_SYSTEM_RESERVED")]
    pub system_reserved: crate::engine::ResourceList,
    /// Resources kept for outpost itself (the kubelet's --kube-reserved), same form.
    #[arg(long, value_name = "LIST", default_value = "", env = "OUTPOST_KUBE_RESERVED")]
    pub kube_reserved: crate::engine::ResourceList,
    /// Hard eviction thresholds, like the kubelet's flag: below them pods are evicted one per
    /// housekeeping interval. Giving it replaces all defaults; '' turns eviction off.
    #[arg(
        long,
        value_name = "LIST",
        default_value = crate::engine::DEFAULT_EVICTION_HARD,
        env = "OUTPOST_EVICTION_HARD"
    )]
    pub eviction_hard: crate::engine::EvictionHard,
    /// How long MemoryPressure/DiskPressure last after their threshold was last crossed.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        value_parser = crate::format::parse_go_duration,
        env = "OUTPOST_EVICTION_PRESSURE_TRANSITION_PERIOD"
    )]
    pub eviction_pressure_transition_period: std::time::Duration,
    /// How often node and pod usage is measured for eviction (the kubelet's 10 s).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = crate::format::parse_interval,
        env = "OUTPOST_HOUSEKEEPING_INTERVAL"
    )]
    pub housekeeping_interval: std::time::Duration,
    /// Most pods admitted at once (the kubelet's --max-pods).
    #[arg(long, value_name = "N", default_value_t = crate::engine::DEFAULT_MAX_PODS, env = "OUTPOST_MAX_PODS")]
    pub max_pods: usize,
    /// Most tasks (processes and threads) each pod may have, like the kubelet's
    /// --pod-max-pids: written to the pod cgroup's `pids.max`, so a fork bomb stops there.
    /// -1 (or 0) is unlimited, the kubelet's default; outpost defaults to a limit, as an edge
    /// device has no spare task slots for a runaway pod.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_POD_MAX_PIDS,
        allow_negative_numbers = true,
        env = "OUTPOST_POD_MAX_PIDS"
    )]
    pub pod_max_pids: i64,
    /// Sysctls pods may set beyond the safe set, like the kubelet's flag: a comma-separated
    /// list of names or `prefix*` patterns, only namespaced ones (kernel.shm*, kernel.msg*,
    /// kernel.sem, fs.mqueue.*, net.*). A pod asking for any other is rejected
    /// (SysctlForbidden).
    #[arg(long, value_name = "LIST", default_value = "", env = "OUTPOST_ALLOWED_UNSAFE_SYSCTLS")]
    pub allowed_unsafe_sysctls: crate::engine::UnsafeSysctls,
    /// Labels of the node, like the kubelet's --node-labels: key=value pairs separated by
    /// ',' (repeatable). Shown on the Node (`kubectl get node --show-labels`); pods whose
    /// nodeSelector or required node affinity does not match them are rejected
    /// (NodeAffinity). Keys in the kubernetes.io and k8s.io namespaces are limited to the
    /// kubelet's (node.kubernetes.io/..., topology.kubernetes.io/zone, ...).
    #[arg(long, value_name = "LABELS", env = "OUTPOST_NODE_LABELS")]
    pub node_labels: Vec<crate::engine::NodeLabels>,
    /// Also read manifests from this URL (http or https; repeatable), like the kubelet's
    /// --manifest-url: polled every --manifest-url-interval, validated like a file, merged
    /// with the directory. Its last valid body is cached in STATE/sources/ and stays in force
    /// while the server is unreachable, across restarts.
    #[arg(long, value_name = "URL", value_parser = parse_manifest_url)]
    pub manifest_url: Vec<String>,
    /// A header sent with every --manifest-url request, 'Name: value' (repeatable). Its value
    /// is visible in the unit file and `ps`: for secrets use --manifest-url-header-file.
    #[arg(long, value_name = "'NAME: VALUE'", value_parser = parse_url_header)]
    pub manifest_url_header: Vec<crate::watch::url::UrlHeader>,
    /// A header whose value is a file's content (without its trailing newline), read for
    /// every request: 'Authorization: /etc/outpost/fleet-token' (repeatable). The file holds
    /// the whole value, e.g. `Bearer abc…`.
    #[arg(long, value_name = "'NAME: FILE'", value_parser = parse_url_header_file)]
    pub manifest_url_header_file: Vec<crate::watch::url::UrlHeader>,
    /// A CA certificate (PEM) trusted for https --manifest-url servers besides the system's
    /// (repeatable).
    #[arg(long, value_name = "FILE", env = "OUTPOST_MANIFEST_URL_CA")]
    pub manifest_url_ca: Vec<PathBuf>,
    /// How often each --manifest-url is polled (the kubelet's --http-check-frequency).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "20s",
        value_parser = crate::format::parse_interval,
        env = "OUTPOST_MANIFEST_URL_INTERVAL"
    )]
    pub manifest_url_interval: std::time::Duration,
    /// Safe updates, a deliberate difference from the kubelet: an edited pod's images are
    /// pulled while the old version runs, and a new version that is not Ready within
    /// --rollout-deadline (or crash-loops, fails its startup probe or pull, or is rejected)
    /// is replaced by the last version that was Ready. --rollback=false replaces pods as the
    /// kubelet does; the pod annotation outpost.dev/rollback: "false" does so for one pod.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        env = "OUTPOST_ROLLBACK"
    )]
    pub rollback: bool,
    /// How long a new pod version has to become Ready (or Succeeded) before it is rolled
    /// back (it must then stay Ready 10 s, or until the deadline); the annotation
    /// outpost.dev/rollout-deadline-seconds overrides it per pod.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        value_parser = crate::format::parse_interval,
        env = "OUTPOST_ROLLOUT_DEADLINE"
    )]
    pub rollout_deadline: std::time::Duration,
    /// The device plugin directory: outpost serves the kubelet's Registration service on
    /// kubelet.sock there, and plugins put their own sockets beside it. The kubelet's path is
    /// the default, so existing device plugins find it unchanged.
    #[arg(
        long,
        value_name = "DIR",
        default_value = crate::device::DEFAULT_DIR,
        env = "OUTPOST_DEVICE_PLUGIN_DIR"
    )]
    pub device_plugin_dir: PathBuf,
    /// The host uids and gids pods with `hostUsers: false` run as, FIRST:COUNT as in
    /// /etc/subuid: each such pod gets its own 65536 of them, so FIRST and COUNT are
    /// multiples of 65536 and FIRST at least 65536. Unset: the `outpost` user's entries in
    /// /etc/subuid and /etc/subgid (which must agree), else 1879048192:67108864 (1024 pods).
    #[arg(long, value_name = "FIRST:COUNT", env = "OUTPOST_USERNS_POOL")]
    pub userns_pool: Option<crate::userns::Pool>,
    /// Test hook: read this file instead of /proc/meminfo, to simulate memory pressure.
    #[arg(long, value_name = "FILE", hide = true, env = "OUTPOST_TEST_MEMINFO")]
    pub test_meminfo: Option<PathBuf>,
}

impl RunArgs {
    /// The agent's settings from these flags.
    pub fn into_config(self) -> crate::agent::Config {
        use crate::agent::config::{ApiSettings, Config, NetworkSettings, NodeSettings};
        Config {
            api: ApiSettings {
                listen: self.listen,
                listen_allow_remote: self.listen_allow_remote,
                secure: self.secure_listen.map(|listen| crate::api::SecureConfig {
                    listen,
                    cert_files: self.tls_cert_file.zip(self.tls_private_key_file),
                    extra_names: self.tls_san,
                }),
                socket: self.api_socket,
                token_file: self.api_token_file,
                show_secrets: self.api_show_secrets,
            },
            network: NetworkSettings {
                cni_conf_dir: self.cni_conf_dir,
                cni_bin_dirs: self.cni_bin_dir,
                pod_subnet: self.pod_subnet,
                in_process: self.builtin_network == "in-process",
            },
            node: NodeSettings {
                seccomp_default: self.seccomp_default,
                system_reserved: self.system_reserved,
                kube_reserved: self.kube_reserved,
                eviction_hard: self.eviction_hard.0,
                pressure_transition: self.eviction_pressure_transition_period,
                max_pods: self.max_pods,
                pod_max_pids: u64::try_from(self.pod_max_pids).ok().filter(|&n| n > 0),
                allowed_unsafe_sysctls: self.allowed_unsafe_sysctls,
                labels: self.node_labels.into_iter().flat_map(|l| l.0).collect(),
                meminfo: self.test_meminfo.unwrap_or_else(|| PathBuf::from("/proc/meminfo")),
                device_plugin_dir: std::path::absolute(&self.device_plugin_dir)
                    .unwrap_or(self.device_plugin_dir),
                userns_pool: self.userns_pool,
            },
            housekeeping_interval: self.housekeeping_interval,
            rollout: crate::engine::RolloutConfig {
                rollback: self.rollback,
                deadline: self.rollout_deadline,
            },
            manifests: self.manifests,
            manifest_urls: crate::watch::UrlOptions {
                urls: self.manifest_url,
                headers: self
                    .manifest_url_header
                    .into_iter()
                    .chain(self.manifest_url_header_file)
                    .collect(),
                ca_files: self.manifest_url_ca,
                interval: self.manifest_url_interval,
            },
            // Supervisors and containers resolve the state paths from other working
            // directories (a relative `--state` broke every sandbox).
            state: std::path::absolute(&self.state).unwrap_or(self.state),
        }
    }
}

fn parse_manifest_url(s: &str) -> Result<String, String> {
    crate::http_client::Target::parse(s)
        .map(|_| s.to_string())
        .map_err(|reason| format!("{reason}: expected http(s)://HOST[:PORT]/PATH"))
}

fn parse_url_header(s: &str) -> Result<crate::watch::url::UrlHeader, String> {
    use crate::watch::url::{parse_header, HeaderValue, UrlHeader};
    let (name, value) = parse_header(s)?;
    Ok(UrlHeader { name, value: HeaderValue::Literal(value) })
}

fn parse_url_header_file(s: &str) -> Result<crate::watch::url::UrlHeader, String> {
    use crate::watch::url::{parse_header, HeaderValue, UrlHeader};
    let (name, path) = parse_header(s)?;
    if !path.starts_with('/') {
        return Err(format!("header {name}: expected 'Name: /absolute/path/to/file'"));
    }
    Ok(UrlHeader { name, value: HeaderValue::File(PathBuf::from(path)) })
}

/// `--pod-max-pids`' default: ample for a pod of a few busy processes (a JVM's hundreds of
/// threads included), far below the kernel's limit.
pub const DEFAULT_POD_MAX_PIDS: i64 = 4096;

/// What `outpost validate` found.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub pods: usize,
    pub config_maps: usize,
    pub secrets: usize,
    pub errors: Vec<ManifestError>,
}

/// Validates files and directories the way the agent would load them, duplicates included.
pub fn validate(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    let mut parsed: Vec<Vec<Document>> = Vec::new();
    for path in paths {
        for file in manifest_files(path, &mut report.errors) {
            report.files += 1;
            match manifest::parse_file(&file) {
                Ok(docs) => parsed.push(docs),
                Err(errors) => report.errors.extend(errors),
            }
        }
    }
    let (state, errors) =
        DesiredState::build(parsed.iter().map(Vec::as_slice), &DesiredState::default());
    report.errors.extend(errors);
    report.pods = state.pods.len();
    report.config_maps = state.config_maps.len();
    report.secrets = state.secrets.len();
    report
}

/// A file given by name is always checked; a directory contributes what the agent would read.
fn manifest_files(path: &Path, errors: &mut Vec<ManifestError>) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file() && p.file_name().is_some_and(crate::watch::is_manifest_name)
                })
                .collect();
            files.sort();
            files
        }
        Err(e) => {
            errors.push(ManifestError::file(path, format!("cannot read directory: {e}")));
            Vec::new()
        }
    }
}

pub fn version() -> String {
    format!("outpost {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::UnsafeSysctls;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["outpost", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(r) => Ok(r),
            _ => unreachable!("run"),
        }
    }

    #[test]
    fn allowed_unsafe_sysctls_takes_the_kubelets_list() {
        assert_eq!(run_args(&[]).unwrap().allowed_unsafe_sysctls, UnsafeSysctls::default());
        let r = run_args(&["--allowed-unsafe-sysctls", "kernel.msg*,net.core.somaxconn"]).unwrap();
        assert_eq!(
            r.allowed_unsafe_sysctls,
            UnsafeSysctls(vec!["kernel.msg*".into(), "net.core.somaxconn".into()])
        );
        let e = run_args(&["--allowed-unsafe-sysctls", "kernel.msg*,vm.swappiness"]).unwrap_err();
        assert!(
            e.to_string().contains("sysctl \"vm.swappiness\" is not known to be namespaced"),
            "{e}"
        );
    }
}
