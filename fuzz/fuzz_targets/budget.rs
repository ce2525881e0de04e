//! The time budget of one input: 100 ms of this thread's CPU time (CPU, not wall clock, so a
//! busy shared machine does not make a fast input look slow). Checked only in builds without
//! debug assertions (`cargo fuzz run -O`), where the time means something.

use std::time::Duration;

pub const BUDGET: Duration = Duration::from_millis(100);

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a timespec to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` and panics (a libFuzzer crash, saved as an artifact) if it took over the budget.
pub fn within_budget<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu_time();
    let out = f();
    let spent = thread_cpu_time() - start;
    if !cfg!(debug_assertions) && spent > BUDGET {
        panic!("{what}: slow input: {spent:?} of CPU time (budget {BUDGET:?})");
    }
    out
}
