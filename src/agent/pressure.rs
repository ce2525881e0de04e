//! Node capacity, allocatable and housekeeping for admission and eviction.
//!
//! At start the node's capacity (cores, `MemTotal`, the state filesystem's size) and the
//! `outpost run` flags make the engine's [`NodeConfig`]; allocatable also replaces capacity as
//! the downward API's default for unset limits, as in the kubelet. Every housekeeping interval
//! (the kubelet's is 10 s) a task measures the node and the published pods on the blocking
//! pool and sends the engine one [`Observed::NodeReadings`]; the engine decides.
//!
//! Per pod: the pod cgroup's and each container's working set always (a few small reads; the
//! containers' CPU counters also feed the metrics API's rates, so the cgroups are walked once
//! per interval for both); disk usage (overlay upper
//! dirs, logs, disk-backed emptyDirs) only for pods with a `sizeLimit` or an ephemeral-storage
//! limit, or for every pod while a disk threshold is crossed. Before a disk threshold can
//! evict pods, the kubelet reclaims node-level resources: images no pod uses are removed
//! (`DeleteUnusedImages`) and the filesystem is measured again.
//!
//! Test hook: `--test-meminfo <file>` (hidden; or `OUTPOST_TEST_MEMINFO=<file>`) reads that
//! file instead of /proc/meminfo, so tests can simulate memory pressure without exhausting the
//! machine.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::api::{Published, UsageTracker};
use crate::cli::RunArgs;
use crate::engine::{
    disk_pressure, parse_kernel, ContainerUsage, DiskUsage, FsReading, Kernel, MemoryReading,
    NodeConfig, NodeReadings, Observed, PidReading, PodUsage, ResourceList, SysctlAllowlist,
    Threshold,
};
use crate::image::ImageStore;
use crate::runtime::readings;
use crate::runtime::spec::{Allocatable, NodeInfo, Quantity};

use super::actions::Outcome;

/// Where `MemTotal` and `MemAvailable` are read: /proc/meminfo unless the test hook is set.
pub fn meminfo_path(args: &RunArgs) -> PathBuf {
    args.test_meminfo.clone().unwrap_or_else(|| PathBuf::from("/proc/meminfo"))
}

/// Why a duration flag does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected a duration like 10s, 5m or 1m30s (housekeeping: at least 100ms)")]
pub struct DurationError(String);

/// Go's `time.ParseDuration` for whole h/m/s/ms amounts, as the kubelet's flags take them.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(s.into());
    let (mut total, mut rest) = (Duration::ZERO, s.trim());
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        total += match &rest[..unit] {
            "h" => Duration::from_secs(n * 3600),
            "m" => Duration::from_secs(n * 60),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

/// A housekeeping interval: a duration of at least 100 ms.
pub fn parse_interval(s: &str) -> Result<Duration, DurationError> {
    parse_duration(s).and_then(|d| {
        if d < Duration::from_millis(100) {
            Err(DurationError(s.into()))
        } else {
            Ok(d)
        }
    })
}

/// The running kernel's `major.minor` (which safe sysctls it namespaces).
fn kernel_version() -> Option<Kernel> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel(release.trim())
}

/// The device's node facts with allocatable applied, and the engine's node configuration.
pub fn node(args: &RunArgs, state: &Path) -> (NodeInfo, NodeConfig) {
    let mut info = super::node::discover(state, args.seccomp_default);
    let memory =
        readings::meminfo(&meminfo_path(args)).map_or(info.memory_capacity, |m| m.0 as i64);
    info.memory_capacity = memory;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i128;
    let storage = readings::fs_stats(state).map_or(0, |f| f.capacity as i128);
    let config = NodeConfig {
        capacity: ResourceList {
            cpu_milli: cores * 1000,
            memory: i128::from(memory),
            ephemeral_storage: storage,
        },
        system_reserved: args.system_reserved,
        kube_reserved: args.kube_reserved,
        eviction_hard: args.eviction_hard.0.clone(),
        max_pods: args.max_pods,
        pressure_transition: args.eviction_pressure_transition_period,
        sysctls: SysctlAllowlist::new(kernel_version(), &args.allowed_unsafe_sysctls),
    };
    let a = config.allocatable();
    let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
    info.allocatable = Allocatable {
        cpu: Quantity::from_millis(clamp(a.cpu_milli)),
        memory: Quantity::from_units(clamp(a.memory)),
        ephemeral_storage: Quantity::from_units(clamp(a.ephemeral_storage)),
    };
    log::info!(
        "node: capacity cpu={}m memory={} ephemeral-storage={}; allocatable cpu={}m memory={} ephemeral-storage={}; eviction-hard {}",
        config.capacity.cpu_milli,
        config.capacity.memory,
        config.capacity.ephemeral_storage,
        a.cpu_milli,
        a.memory,
        a.ephemeral_storage,
        config.eviction_hard.iter().map(Threshold::to_string).collect::<Vec<_>>().join(",")
    );
    (info, config)
}

/// What to measure of one pod, taken from the published snapshot.
struct Target {
    uid: String,
    cgroup: PathBuf,
    /// Disk-backed emptyDir volumes: name and host directory.
    volumes: Vec<(String, PathBuf)>,
    /// Has a sizeLimit or an ephemeral-storage limit: measure its disk every round.
    limited: bool,
}

fn target(pod: &Pod, state: &Path) -> Option<Target> {
    let uid = pod.metadata.uid.clone()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed" | "Succeeded")) {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let data = state.join("pod-data").join(&uid).join("volumes");
    let mut limited = false;
    let mut volumes = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let Some(e) = &v.empty_dir else { continue };
        if e.medium.as_deref() == Some("Memory") {
            continue;
        }
        limited |= e.size_limit.is_some();
        if let Some(dir) = crate::volume::volume_dir(&data, v) {
            volumes.push((v.name.clone(), dir));
        }
    }
    limited |= spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("ephemeral-storage"))
    });
    let cgroup = crate::runtime::usage::qos_cgroup_parent(pod).join(&uid);
    Some(Target { uid, cgroup, volumes, limited })
}

fn disk(path: &Path) -> Option<DiskUsage> {
    readings::disk_usage(path).map(|(bytes, inodes)| DiskUsage { bytes, inodes })
}

fn fs_reading(state: &Path) -> Option<FsReading> {
    readings::fs_stats(state).map(|f| FsReading {
        capacity: f.capacity,
        available: f.available,
        inodes: f.inodes,
        inodes_free: f.inodes_free,
    })
}

/// `DeleteUnusedImages`: removes every image no pod names and collects its content. Returns
/// whether anything was removed.
fn reclaim_images(images: &ImageStore, used: &[String]) -> bool {
    let in_use: HashSet<String> =
        used.iter().filter_map(|i| images.resolve(i).ok().flatten()).map(|i| i.digest).collect();
    let mut removed = false;
    for image in images.list().unwrap_or_default() {
        if in_use.contains(&image.digest) {
            continue;
        }
        match images.remove(&image.digest) {
            Ok(names) => {
                log::warn!("node: disk pressure: removed unused image {}", names.join(", "));
                removed = true;
            }
            Err(e) => log::warn!("node: disk pressure: removing image {}: {e}", image.digest),
        }
    }
    if removed {
        if let Err(e) = images.gc(&in_use) {
            log::warn!("node: disk pressure: image garbage collection: {e}");
        }
    }
    removed
}

/// One round of measurements (blocking I/O). Each container's cgroup reading also goes to
/// `tracker`, the CPU history behind `kubectl top`'s rates: one walk of the cgroups serves
/// eviction and the metrics API.
fn measure(
    s: &Settings,
    targets: &[Target],
    images_used: &[String],
    tracker: &UsageTracker,
) -> NodeReadings {
    let (state, thresholds) = (s.state.as_path(), s.thresholds.as_slice());
    let mut r = NodeReadings {
        memory: readings::meminfo(&s.meminfo)
            .map(|(capacity, available)| MemoryReading { capacity, available }),
        fs: fs_reading(state),
        pids: readings::pid_limit(Path::new("/proc/sys/kernel")).map(|(capacity, running)| {
            PidReading { capacity, available: capacity.saturating_sub(running) }
        }),
        pods: Default::default(),
    };
    let mut all_disk = disk_pressure(thresholds, &r);
    if all_disk {
        if let Some(images) = &s.images {
            if reclaim_images(images, images_used) {
                r.fs = fs_reading(state);
                all_disk = disk_pressure(thresholds, &r);
            }
        }
    }
    let cgroups =
        crate::runtime::usage::Layout::detect(Path::new(crate::runtime::usage::CGROUP_ROOT));
    let at_ns = crate::agent::clock::now().as_nanosecond();
    let mut live = HashSet::new();
    let mut working_set = |cgroup: &Path, container: bool| {
        let u = cgroups.read(cgroup).ok()?;
        if container {
            tracker.observe(cgroup, at_ns, u.cpu_usage_ns, None);
            live.insert(cgroup.to_path_buf());
        }
        Some(u.memory_working_set_bytes)
    };
    for t in targets {
        // No pod cgroup: not running yet (or any more); the kubelet has no stats for it either.
        let Some(memory) = working_set(&t.cgroup, false) else { continue };
        let mut usage = PodUsage {
            memory: Some(memory),
            processes: crate::runtime::usage::processes(
                Path::new(crate::runtime::usage::CGROUP_ROOT),
                &t.cgroup,
            ),
            disk: all_disk || t.limited,
            ..Default::default()
        };
        for (name, attempt, upper, logs) in readings::container_instances(state, &t.uid) {
            let mut c = ContainerUsage {
                memory: working_set(&t.cgroup.join(format!("{name}.{attempt}")), true),
                ..Default::default()
            };
            if usage.disk {
                c.rootfs = Some(disk(&upper).unwrap_or_default());
                let mut l = DiskUsage::default();
                for f in &logs {
                    l += disk(f).unwrap_or_default();
                }
                c.logs = Some(l);
            }
            usage.containers.insert(name, c);
        }
        if usage.disk {
            for (name, dir) in &t.volumes {
                usage.volumes.insert(name.clone(), disk(dir).unwrap_or_default());
            }
        }
        r.pods.insert(t.uid.clone(), usage);
    }
    tracker.retain(&live);
    r
}

/// What the housekeeping task needs.
pub struct Settings {
    pub state: PathBuf,
    pub meminfo: PathBuf,
    pub interval: Duration,
    pub thresholds: Vec<Threshold>,
    /// Where unused images are removed from under disk pressure.
    pub images: Option<Arc<ImageStore>>,
}

impl Settings {
    pub fn from_args(args: &RunArgs, images: Arc<ImageStore>) -> Self {
        Self {
            state: args.state.clone(),
            meminfo: meminfo_path(args),
            interval: args.housekeeping_interval,
            thresholds: args.eviction_hard.0.clone(),
            images: Some(images),
        }
    }
}

/// The housekeeping task: measures every interval and sends the readings to the loop; logs
/// when a hard threshold starts or stops being crossed.
pub fn spawn(
    ex: &smol::Executor<'static>,
    settings: Settings,
    published: Arc<Published>,
    outcomes: smol::channel::Sender<Outcome>,
) -> smol::Task<()> {
    let settings = Arc::new(settings);
    ex.spawn(async move {
        let mut crossed: Vec<String> = Vec::new();
        loop {
            smol::Timer::after(settings.interval).await;
            let snapshot = published.current();
            let state = &settings.state;
            let targets: Vec<Target> =
                snapshot.pods.iter().filter_map(|p| target(p, state)).collect();
            let used: Vec<String> = snapshot
                .pods
                .iter()
                .filter_map(|p| p.spec.as_ref())
                .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
                .filter_map(|c| c.image.clone())
                .collect();
            let (s, p) = (settings.clone(), published.clone());
            let r = smol::unblock(move || measure(&s, &targets, &used, &p.metrics.usage)).await;
            super::memory::give_back();
            let now: Vec<String> = settings
                .thresholds
                .iter()
                .filter_map(|t| {
                    t.met(&r).map(|(_, available)| format!("{t} (available {available})"))
                })
                .collect();
            if now.is_empty() != crossed.is_empty() {
                match now.is_empty() {
                    false => log::warn!("node: eviction threshold crossed: {}", now.join(", ")),
                    true => log::info!("node: no eviction threshold crossed any more"),
                }
            }
            crossed = now;
            let fact = Observed::NodeReadings(Box::new(r));
            if outcomes.send(Outcome { fact: Some(fact), update: None }).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::build::{write_archive, ArchiveFormat, ImageSpec, LayerBuilder};

    /// Node-level reclaim removes exactly the images no pod names, and their content.
    #[test]
    fn reclaim_removes_only_unused_images() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::open(dir.path().join("images")).unwrap();
        let spec = |reference: &str, data: &[u8]| {
            let mut l = LayerBuilder::new();
            l.file("data", 0o644, data).unwrap();
            ImageSpec {
                reference: reference.into(),
                config: serde_json::json!({"Cmd": ["sh"]}),
                layers: vec![l.finish().unwrap()],
            }
        };
        let archive = dir.path().join("two.tar");
        let specs = [spec("example.com/used:1", b"used"), spec("example.com/unused:1", b"unused")];
        write_archive(&archive, &specs, ArchiveFormat::Oci, false).unwrap();
        images.import(&archive).unwrap();
        assert_eq!(images.list().unwrap().len(), 2);
        assert!(reclaim_images(&images, &["example.com/used:1".to_string()]));
        let left: Vec<Vec<String>> =
            images.list().unwrap().into_iter().map(|i| i.references).collect();
        assert_eq!(left, [vec!["example.com/used:1".to_string()]]);
        assert!(!reclaim_images(&images, &["example.com/used:1".to_string()]), "nothing left");
    }

    #[test]
    fn durations_parse_like_go() {
        let ok = [
            ("10s", 10_000),
            ("5m", 300_000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("0", 0),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "10", "s", "1d", "-1s", "1.5s"] {
            assert_eq!(parse_duration(s), Err(DurationError(s.into())), "{s}");
        }
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0s"), Err(DurationError("0s".into())));
    }
}
