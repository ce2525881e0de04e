//! Eviction signals and hard thresholds: the kubelet's `--eviction-hard` parsing
//! (`ParseThresholdConfig`), `GetThresholdQuantity` and `thresholdsMet`, for the signals outpost
//! observes.
//!
//! `memory.available` is `MemAvailable` of /proc/meminfo. The kubelet derives it as capacity
//! minus the root cgroup's working set because it may itself run in a container; on a device
//! the kernel's own estimate is the better figure, and it reads the same on cgroup v1 and v2.
//! `nodefs` is the state directory's filesystem; `imagefs` is the same filesystem (images live
//! in the state directory), as for a kubelet without a dedicated image filesystem.
//! `pid.available` is the kernel's pid limit (`kernel.pid_max`, or `kernel.threads-max` if
//! lower) minus the tasks that exist, as the kubelet's `pidlimit` reads them.

use std::fmt;

use super::readings::NodeReadings;
use super::resources::{Amount, Format, EPHEMERAL_STORAGE, MEMORY};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvictionSignal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

pub const MEMORY_PRESSURE: &str = "MemoryPressure";
pub const DISK_PRESSURE: &str = "DiskPressure";
pub const PID_PRESSURE: &str = "PIDPressure";
/// The pressure conditions, in the kubelet's order.
pub const CONDITIONS: [&str; 3] = [MEMORY_PRESSURE, DISK_PRESSURE, PID_PRESSURE];
/// The kubelet's internal resource names for inode and process consumption.
pub const INODES: &str = "inodes";
pub const PIDS: &str = "pids";

impl EvictionSignal {
    const ALL: [EvictionSignal; 6] = [
        EvictionSignal::MemoryAvailable,
        EvictionSignal::NodeFsAvailable,
        EvictionSignal::NodeFsInodesFree,
        EvictionSignal::ImageFsAvailable,
        EvictionSignal::ImageFsInodesFree,
        EvictionSignal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EvictionSignal::MemoryAvailable => "memory.available",
            EvictionSignal::NodeFsAvailable => "nodefs.available",
            EvictionSignal::NodeFsInodesFree => "nodefs.inodesFree",
            EvictionSignal::ImageFsAvailable => "imagefs.available",
            EvictionSignal::ImageFsInodesFree => "imagefs.inodesFree",
            EvictionSignal::PidAvailable => "pid.available",
        }
    }

    /// `signalToNodeCondition`.
    pub fn condition(self) -> &'static str {
        match self {
            EvictionSignal::MemoryAvailable => MEMORY_PRESSURE,
            EvictionSignal::PidAvailable => PID_PRESSURE,
            _ => DISK_PRESSURE,
        }
    }

    /// `signalToResource`: what evicting a pod reclaims.
    pub fn resource(self) -> &'static str {
        match self {
            EvictionSignal::MemoryAvailable => MEMORY,
            EvictionSignal::NodeFsAvailable | EvictionSignal::ImageFsAvailable => EPHEMERAL_STORAGE,
            EvictionSignal::NodeFsInodesFree | EvictionSignal::ImageFsInodesFree => INODES,
            EvictionSignal::PidAvailable => PIDS,
        }
    }

    /// The observed (available, capacity) of this signal, if it was read.
    pub fn observe(self, r: &NodeReadings) -> Option<(Amount, i128)> {
        let (available, capacity, format) = match self {
            EvictionSignal::MemoryAvailable => {
                let m = r.memory?;
                (m.available, m.capacity, Format::BinarySI)
            }
            EvictionSignal::NodeFsAvailable | EvictionSignal::ImageFsAvailable => {
                let f = r.fs?;
                (f.available, f.capacity, Format::BinarySI)
            }
            EvictionSignal::NodeFsInodesFree | EvictionSignal::ImageFsInodesFree => {
                let f = r.fs?;
                (f.inodes_free, f.inodes, Format::DecimalSI)
            }
            EvictionSignal::PidAvailable => {
                let p = r.pids?;
                (p.available, p.capacity, Format::DecimalSI)
            }
        };
        Some((Amount { milli: i128::from(available) * 1000, format }, i128::from(capacity)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdValue {
    Quantity(Amount),
    /// A fraction of capacity (`10%` is 0.1), as the kubelet's float32.
    Percentage(f32),
}

/// `signal<value`: met when less than `value` is available.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub signal: EvictionSignal,
    pub value: ThresholdValue,
}

impl Threshold {
    /// `GetThresholdQuantity`: the amount the threshold stands for, given the capacity.
    pub fn quantity(&self, capacity: i128) -> Amount {
        match self.value {
            ThresholdValue::Quantity(q) => q,
            ThresholdValue::Percentage(p) => {
                Amount::bytes((f64::from(p) * capacity as f64) as i128)
            }
        }
    }

    /// `thresholdsMet`: the observation and the threshold quantity, when it is crossed.
    pub fn met(&self, r: &NodeReadings) -> Option<(Amount, Amount)> {
        let (available, capacity) = self.signal.observe(r)?;
        let q = self.quantity(capacity);
        (q.milli > available.milli).then_some((q, available))
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            ThresholdValue::Quantity(q) => write!(f, "{}<{q}", self.signal.name()),
            ThresholdValue::Percentage(p) => {
                // float32 noise off (0.15 would print as 15.000001).
                let pct = (f64::from(p) * 1e6).round() / 1e4;
                write!(f, "{}<{pct}%", self.signal.name())
            }
        }
    }
}

/// Why `--eviction-hard` does not parse (the kubelet's messages).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{item:?}: expected SIGNAL<QUANTITY or SIGNAL<PERCENT%, e.g. memory.available<100Mi")]
    Syntax { item: String },
    #[error("unsupported eviction signal {signal} (supported: memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)")]
    Signal { signal: String },
    #[error("eviction percentage threshold {signal} must be between 0% and 100%: {value}")]
    Percentage { signal: String, value: String },
    #[error("eviction threshold {signal} must be positive: {value}")]
    Quantity { signal: String, value: String },
}

/// The kubelet's Linux defaults. As with the kubelet, giving `--eviction-hard` replaces all
/// of them (a signal left out has no threshold), and `--eviction-hard ''` turns eviction off.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%";

/// `--eviction-hard`'s value.
#[derive(Clone, Debug, PartialEq)]
pub struct EvictionHard(pub Vec<Threshold>);

impl std::str::FromStr for EvictionHard {
    type Err = ThresholdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_eviction_hard(s).map(EvictionHard)
    }
}

/// `signal<value` items separated by commas; `0%` and `100%` are ignored like the kubelet's.
pub fn parse_eviction_hard(s: &str) -> Result<Vec<Threshold>, ThresholdError> {
    let mut out: Vec<Threshold> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once('<') else {
            return Err(ThresholdError::Syntax { item: item.into() });
        };
        let (name, value) = (name.trim(), value.trim());
        let signal = EvictionSignal::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| ThresholdError::Signal { signal: name.into() })?;
        let value = if let Some(p) = value.strip_suffix('%') {
            if value == "0%" || value == "100%" {
                continue;
            }
            let bad = || ThresholdError::Percentage { signal: name.into(), value: value.into() };
            let p: f32 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            ThresholdValue::Percentage(p / 100.0)
        } else {
            let q = Amount::parse(value).filter(|q| q.milli > 0).ok_or_else(|| {
                ThresholdError::Quantity { signal: name.into(), value: value.into() }
            })?;
            ThresholdValue::Quantity(q)
        };
        out.retain(|t| t.signal != signal);
        out.push(Threshold { signal, value });
    }
    out.sort_by_key(|t| t.signal);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::readings::{FsReading, MemoryReading, PidReading};

    #[test]
    fn eviction_hard_parses_like_the_kubelets_flag() {
        let t = parse_eviction_hard(DEFAULT_EVICTION_HARD).expect("defaults");
        let shown: Vec<String> = t.iter().map(Threshold::to_string).collect();
        assert_eq!(
            shown,
            [
                "memory.available<100Mi",
                "nodefs.available<10%",
                "nodefs.inodesFree<5%",
                "imagefs.available<15%",
                "imagefs.inodesFree<5%"
            ]
        );
        assert_eq!(parse_eviction_hard(""), Ok(vec![]));
        assert_eq!(parse_eviction_hard("nodefs.available<0%"), Ok(vec![]));
        assert_eq!(
            parse_eviction_hard("pid.available<10%").unwrap()[0].to_string(),
            "pid.available<10%"
        );
        assert_eq!(
            parse_eviction_hard("allocatableMemory.available<10"),
            Err(ThresholdError::Signal { signal: "allocatableMemory.available".into() })
        );
        assert_eq!(
            parse_eviction_hard("memory.available<0"),
            Err(ThresholdError::Quantity { signal: "memory.available".into(), value: "0".into() })
        );
        assert_eq!(
            parse_eviction_hard("nodefs.available<120%"),
            Err(ThresholdError::Percentage {
                signal: "nodefs.available".into(),
                value: "120%".into()
            })
        );
        assert_eq!(
            parse_eviction_hard("memory.available=1Gi"),
            Err(ThresholdError::Syntax { item: "memory.available=1Gi".into() })
        );
    }

    /// `thresholdsMet`: strictly less available than the threshold quantity; percentages of
    /// the observed capacity (GetThresholdQuantity).
    #[test]
    fn thresholds_are_met_below_their_quantity() {
        let t = parse_eviction_hard("memory.available<100Mi,nodefs.available<10%").unwrap();
        let readings = |mem_avail: u64, fs_avail: u64| NodeReadings {
            memory: Some(MemoryReading { capacity: 1 << 30, available: mem_avail }),
            fs: Some(FsReading {
                capacity: 1000 << 20,
                available: fs_avail,
                inodes: 10,
                inodes_free: 5,
            }),
            ..Default::default()
        };
        let r = readings(100 << 20, 100 << 20);
        assert_eq!(t[0].met(&r), None, "exactly the threshold is not below it");
        let r = readings(80 << 20, 99 << 20);
        let (q, available) = t[0].met(&r).expect("memory met");
        assert_eq!((q.to_string(), available.to_string()), ("100Mi".into(), "80Mi".into()));
        let (q, available) = t[1].met(&r).expect("nodefs met");
        // 0.1 as a float32 times 1000Mi, truncated, as the kubelet computes it.
        assert_eq!((q.to_string(), available.to_string()), ("104857601".into(), "99Mi".into()));
        assert_eq!(t[0].met(&NodeReadings::default()), None, "nothing read, nothing met");
    }

    #[test]
    fn pid_available_is_met_below_its_share_of_the_pid_limit() {
        let t = parse_eviction_hard("pid.available<10%").unwrap();
        let r = |available| NodeReadings {
            pids: Some(PidReading { capacity: 1000, available }),
            ..Default::default()
        };
        assert_eq!(t[0].met(&r(100)), None);
        let (q, available) = t[0].met(&r(99)).expect("met");
        assert_eq!((q.milli, available.to_string()), (100_000, "99".into()));
        assert_eq!(t[0].signal.condition(), PID_PRESSURE);
        assert_eq!(t[0].signal.resource(), PIDS);
    }
}
