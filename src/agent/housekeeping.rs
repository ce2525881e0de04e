//! Housekeeping for eviction: every interval (the kubelet's is 10 s) the loop hands a round
//! the engine's pods; it measures the node and them on the blocking pool and answers with one
//! [`Observed::NodeReadings`]; the engine decides.
//!
//! Per pod: the pod cgroup's and each container's working set always (a few small reads; the
//! containers' CPU counters also feed the metrics API's rates, so the cgroups are walked once
//! per interval for both); disk usage (overlay upper
//! dirs, logs, disk-backed emptyDirs) only for pods with a `sizeLimit` or an ephemeral-storage
//! limit, or for every pod while a disk threshold is crossed. Before a disk threshold can
//! evict pods, the kubelet reclaims node-level resources: images no pod uses are removed
//! (`DeleteUnusedImages`, through the one image collection path) and the filesystem is
//! measured again.
//!
//! Test hook: `--test-meminfo <file>` (hidden; or `OUTPOST_TEST_MEMINFO=<file>`) reads that
//! file instead of /proc/meminfo ([`NodeSettings::meminfo`]), so tests can simulate memory
//! pressure without exhausting the machine.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::api::{Published, UsageTracker};
use crate::engine::{
    disk_pressure, ContainerUsage, DiskUsage, FsReading, MemoryReading, NodeReadings, Observed,
    PidReading, PodUsage, Threshold,
};
use crate::image::ImageStore;
use crate::runtime::readings;

use super::outcome::Outcome;
use super::Config;

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
            let unused = crate::image::gc::Unused::Remove;
            if crate::image::gc::collect(images, images_used, unused).images_removed > 0 {
                r.fs = fs_reading(state);
                all_disk = disk_pressure(thresholds, &r);
            }
        }
    }
    let cgroups =
        crate::runtime::usage::Layout::detect(Path::new(crate::runtime::usage::CGROUP_ROOT));
    let at_ns = crate::format::now().as_nanosecond();
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

/// What a housekeeping round needs.
pub struct Settings {
    pub state: PathBuf,
    pub meminfo: PathBuf,
    pub interval: Duration,
    pub thresholds: Vec<Threshold>,
    /// Where unused images are removed from under disk pressure.
    pub images: Option<Arc<ImageStore>>,
}

impl Settings {
    pub fn new(config: &Config, images: Arc<ImageStore>) -> Self {
        Self {
            state: config.state.clone(),
            meminfo: config.node.meminfo.clone(),
            interval: config.housekeeping_interval,
            thresholds: config.node.eviction_hard.clone(),
            images: Some(images),
        }
    }
}

/// The loop's housekeeping timer, and what rounds share.
pub struct Housekeeping {
    settings: Arc<Settings>,
    /// When the next round is due.
    pub next: Instant,
    /// A round is measuring: the next waits for it.
    busy: Arc<AtomicBool>,
    /// The thresholds crossed at the last round, to log only changes.
    crossed: Arc<Mutex<Vec<String>>>,
}

impl Housekeeping {
    pub fn new(settings: Settings) -> Self {
        Self {
            next: Instant::now() + settings.interval,
            settings: Arc::new(settings),
            busy: Arc::default(),
            crossed: Arc::default(),
        }
    }

    /// Measures `pods` (the engine's) and the node on the blocking pool; the readings come
    /// back on `outcomes`. Logs when a hard threshold starts or stops being crossed.
    pub fn start_round(
        &mut self,
        ex: &smol::Executor<'static>,
        pods: &[Pod],
        images_used: Vec<String>,
        published: Arc<Published>,
        outcomes: smol::channel::Sender<Outcome>,
    ) {
        self.next = Instant::now() + self.settings.interval;
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let settings = self.settings.clone();
        let targets: Vec<Target> = pods.iter().filter_map(|p| target(p, &settings.state)).collect();
        let (busy, crossed) = (self.busy.clone(), self.crossed.clone());
        ex.spawn(async move {
            let s = settings.clone();
            let r = smol::unblock(move || {
                measure(&s, &targets, &images_used, &published.metrics.usage)
            })
            .await;
            super::memory::give_back();
            let now: Vec<String> = settings
                .thresholds
                .iter()
                .filter_map(|t| {
                    t.met(&r).map(|(_, available)| format!("{t} (available {available})"))
                })
                .collect();
            {
                let mut crossed = crossed.lock().unwrap_or_else(PoisonError::into_inner);
                if now.is_empty() != crossed.is_empty() {
                    match now.is_empty() {
                        false => {
                            log::warn!("node: eviction threshold crossed: {}", now.join(", "))
                        }
                        true => log::info!("node: no eviction threshold crossed any more"),
                    }
                }
                *crossed = now;
            }
            busy.store(false, Ordering::Release);
            let fact = Observed::NodeReadings(Box::new(r));
            let _ = outcomes.send(Outcome { fact: Some(fact), update: None }).await;
            // Code that start-up, parsing and pod starts ran and an idle agent does not.
            crate::tasks::sleep(super::memory::SETTLE).await;
            crate::code_pages::unmap_idle_code();
        })
        .detach();
    }
}
