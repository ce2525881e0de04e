//! Compiled filters by profile. libseccomp needs 15-20 ms (on a small ARM board, more) to
//! compile the default profile (~400 syscalls), on the critical path of every container start.
//! A process compiles each distinct profile once; the fork server compiles the default profile
//! of a container with the default capabilities before it forks any supervisor
//! ([`warm_default`]), so that every supervisor starts with it compiled.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use oci_spec::runtime::{Capability, LinuxSeccomp};
use sha2::{Digest, Sha256};

use super::{default_profile, kernel_version, Cpu, Filter, FilterError};
use crate::runtime::spec::DEFAULT_CAPS;

/// Distinct profiles kept: a node has a handful (the default for a few capability sets, some
/// Localhost profiles); beyond that the oldest goes.
const CAPACITY: usize = 8;

type Key = [u8; 32];

static COMPILED: Mutex<Vec<(Key, Arc<Filter>)>> = Mutex::new(Vec::new());

fn key(profile: &LinuxSeccomp) -> Key {
    // Serialization of a spec type cannot fail; an empty key would only cost a compile.
    Sha256::digest(serde_json::to_vec(profile).unwrap_or_default()).into()
}

/// `profile` compiled, from the cache when this process compiled it before.
pub fn compiled(profile: &LinuxSeccomp) -> Result<Arc<Filter>, FilterError> {
    let key = key(profile);
    let cached = |key: &Key| {
        let cache = COMPILED.lock().unwrap_or_else(PoisonError::into_inner);
        cache.iter().find(|(k, _)| k == key).map(|(_, f)| Arc::clone(f))
    };
    if let Some(filter) = cached(&key) {
        return Ok(filter);
    }
    // Compiled without the lock: a profile compiled twice by two threads is merely wasted.
    let started = std::time::Instant::now();
    let filter = Arc::new(Filter::compile(profile)?);
    log::debug!(
        "seccomp: compiled a profile to {} instructions in {:?}",
        filter.len(),
        started.elapsed()
    );
    let mut cache = COMPILED.lock().unwrap_or_else(PoisonError::into_inner);
    if !cache.iter().any(|(k, _)| *k == key) {
        if cache.len() == CAPACITY {
            cache.remove(0);
        }
        cache.push((key, Arc::clone(&filter)));
    }
    Ok(filter)
}

/// The `RuntimeDefault` profile of a container with containerd's default capabilities on this
/// node: what most containers run with.
pub fn default_for_default_caps() -> LinuxSeccomp {
    let caps: HashSet<Capability> = DEFAULT_CAPS.iter().filter_map(|c| c.parse().ok()).collect();
    default_profile(&caps, Cpu::native(), kernel_version())
}

/// Compiles [`default_for_default_caps`] into the cache (the fork server, before serving).
pub fn warm_default() {
    if let Err(e) = compiled(&default_for_default_caps()) {
        log::warn!("seccomp: the default profile does not compile: {e}");
    }
}
