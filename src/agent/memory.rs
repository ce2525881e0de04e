//! The agent's heap after bursts: 110 pods dropped at once grew it by ~110 MB that glibc kept
//! (one arena per thread that ever allocated, free pages left in place), so an idle agent
//! held what its busiest minute needed. Fewer arenas, a bounded blocking pool and a trim per
//! housekeeping round give it back (figures: `benches/burst_memory.rs`).

/// Threads of smol's blocking pool (its default is 500): file and image I/O, supervisor
/// spawns. More only queue; each thread costs a stack and, without the arena cap, an arena.
const BLOCKING_THREADS: &str = "8";

/// glibc arenas for the whole process: the executor thread and the blocking pool share them.
#[cfg(target_env = "gnu")]
const MALLOC_ARENAS: libc::c_int = 2;

/// Call first thing in `main` for the agent, before any thread exists (it sets an
/// environment variable, which is only sound while the process is single-threaded).
pub fn configure_at_start() {
    if std::env::var_os("BLOCKING_MAX_THREADS").is_none() {
        std::env::set_var("BLOCKING_MAX_THREADS", BLOCKING_THREADS);
    }
    // SAFETY: mallopt only changes the allocator's settings; no allocation is in flight on
    // another thread (there is none).
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Returns free heap pages to the kernel (all arenas); cheap when there is nothing to return.
pub fn give_back() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long after a housekeeping round the agent unmaps its code: the round's own work
/// (readings, the engine step, the API snapshot) has run by then.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
