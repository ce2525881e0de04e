//! Container cpu/memory requests and limits → `linux.resources`, as the kubelet computes them
//! (`calculateLinuxResources`) and containerd writes them into the spec.

use k8s_openapi::api::core::v1::Container;
use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use crate::quantity::{Quantity, QuantityError};

pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
pub const SHARES_PER_CPU: i64 = 1024;
/// The CFS period, 100 ms in µs.
pub const QUOTA_PERIOD: u64 = 100_000;
/// Smallest quota: 1 ms.
pub const MIN_QUOTA: i64 = 1000;

/// `MilliCPUToShares`: 0 → 2 (the kernel minimum, not Docker's "unset" 1024).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    let shares = (milli_cpu as i128 * SHARES_PER_CPU as i128) / 1000;
    shares.clamp(MIN_SHARES as i128, MAX_SHARES as i128) as u64
}

/// `milliCPUToQuota`: 0 (no limit) → 0; else milliCPU × period / 1000, at least 1 ms.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: u64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    let quota = (milli_cpu as i128 * period as i128 / 1000).min(i64::MAX as i128) as i64;
    quota.max(MIN_QUOTA)
}

/// One entry of `resources.requests` / `resources.limits`, parsed.
pub fn container_quantity(
    c: &Container,
    limits: bool,
    name: &str,
) -> Result<Option<Quantity>, QuantityError> {
    let r = c.resources.as_ref();
    let list = if limits {
        r.and_then(|r| r.limits.as_ref())
    } else {
        r.and_then(|r| r.requests.as_ref())
    };
    list.and_then(|l| l.get(name)).map(Quantity::parse).transpose()
}

/// `linux.resources` for a container: cpu shares from the request (or the limit when only a
/// limit is set), quota from the limit with period 100000 (period always set, quota only when
/// limited), memory limit in bytes with swap equal to it (no swap), and a device cgroup that
/// denies everything not allowed by the runtime's defaults.
pub fn linux_resources(c: &Container) -> Result<LinuxResources, QuantityError> {
    let cpu_request = container_quantity(c, false, "cpu")?;
    let cpu_limit = container_quantity(c, true, "cpu")?;
    let memory_limit = container_quantity(c, true, "memory")?.map_or(0, |q| q.value());
    let shares_from = match (cpu_request, cpu_limit) {
        (None, Some(limit)) => limit,
        (request, _) => request.unwrap_or_default(),
    };
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(milli_cpu_to_shares(shares_from.milli_value())));
    cpu.set_period(Some(QUOTA_PERIOD));
    let quota = milli_cpu_to_quota(cpu_limit.unwrap_or_default().milli_value(), QUOTA_PERIOD);
    if quota != 0 {
        cpu.set_quota(Some(quota));
    }
    let mut resources = LinuxResources::default();
    resources.set_cpu(Some(cpu));
    if memory_limit != 0 {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(memory_limit));
        memory.set_swap(Some(memory_limit));
        resources.set_memory(Some(memory));
    }
    Ok(resources)
}

/// The v2 file that caps a cgroup's swap; absent without swap accounting.
pub const SWAP_MAX_FILE: &str = "memory.swap.max";

/// The kubelet's `NoSwap` on cgroup v2 (`configureContainerSwapResources`): `memory.swap.max`
/// 0 for every container, through `unified`. Needed because v2 has no memory+swap limit: the
/// `swap` = limit above becomes "swap.max = 0", which runc writes but libcontainer 0.7 skips
/// (it treats 0 as unset), leaving the kernel's `max`. Only for hosts whose cgroups have
/// [`SWAP_MAX_FILE`], as the kubelet checks; never on v1, where `unified` is an error.
pub fn disable_swap_v2(resources: &mut LinuxResources) {
    let mut unified = resources.unified().clone().unwrap_or_default();
    unified.insert(SWAP_MAX_FILE.to_string(), "0".to_string());
    resources.set_unified(Some(unified));
}
