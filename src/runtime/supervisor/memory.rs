//! Giving memory back. A supervisor and its pause idle for the pod's lifetime, but
//! libcontainer's deep call chains and its allocations leave dirty stack and heap pages that
//! neither touches again: ~100 KB of stack and ~100 KB of heap each (smaps, 10 idle pods).
//!
//! The supervisor returns its free heap (`malloc_trim`) and the stack below its idle frame
//! after each libcontainer operation. The pause, a copy of the supervisor that runs a
//! fixed loop without allocating, drops its whole heap and the stack below its frame. Both
//! unmap the binary's code they no longer run (`crate::code_pages`).

use crate::code_pages::CodeRanges;

/// The main thread's stack mapping and the start of its heap (`/proc/self/maps`), read by the
/// supervisor for the pause, which has no /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Regions {
    stack_start: usize,
    stack_end: usize,
    heap_start: usize,
    /// The binary's never-written mappings: an idle supervisor or pause runs little of it.
    code: CodeRanges,
}

/// Room left below the caller's frame for the functions it calls next and signal handlers
/// (anything below the stack pointer is dead; the margin only saves page faults).
const STACK_MARGIN: usize = 16 << 10;

impl Regions {
    pub fn of_self() -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let range_of = |name: &str| {
            maps.lines()
                .find(|l| l.ends_with(name))
                .and_then(|l| l.split(' ').next())
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| {
                    Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
                })
                .unwrap_or((0, 0))
        };
        let (stack_start, mut stack_end) = range_of("[stack]");
        // The command line and environment sit at the top of the stack: kept, for `ps` (a
        // supervisor forked by the fork server has its command line elsewhere; then the
        // environment's start bounds what is dead).
        let [args, env] = crate::runtime::procfs::own_stat_fields([48, 50]);
        if let Some(top) =
            [args, env].into_iter().flatten().find(|a| (stack_start..stack_end).contains(a))
        {
            stack_end = top;
        }
        Self {
            stack_start,
            stack_end,
            heap_start: range_of("[heap]").0,
            code: CodeRanges::of_self(),
        }
    }
}

/// How far below the caller the stack mapping is grown before the pause is created: more than
/// libcontainer's create chain and the pause's init chain go deeper.
const PAUSE_STACK_RESERVE: usize = 256 << 10;

/// The regions for the pause, read after growing the stack mapping below the caller: the
/// pause can only discard dead stack pages inside the bounds it is given, and it is created
/// deeper than the supervisor had been. The supervisor's next `trim` drops the pages touched.
#[inline(never)]
pub fn regions_for_pause() -> Regions {
    let mut reserve = [0u8; PAUSE_STACK_RESERVE];
    // The frame's stack probes touch each page; the writes keep the array from being elided.
    for i in (0..reserve.len()).step_by(4096) {
        // SAFETY: an in-bounds write to a local array.
        unsafe { std::ptr::write_volatile(reserve.as_mut_ptr().add(i), 1) };
    }
    std::hint::black_box(&reserve);
    Regions::of_self()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// `MADV_DONTNEED` on the whole pages of `[start, end)`.
///
/// # Safety
/// Nothing may use the memory in that range any more (it reads back as zeros).
unsafe fn discard(start: usize, end: usize) {
    let page = page_size();
    let start = start.div_ceil(page) * page;
    let end = end / page * page;
    if start != 0 && end > start {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}

/// The stack below the caller's frame, minus a margin: pages deeper calls dirtied earlier.
///
/// # Safety
/// Only what lies below the current stack pointer (and the margin) is discarded, which no
/// live frame uses; a later call or signal handler gets fresh zero pages there.
#[inline(never)]
unsafe fn discard_stack_below(regions: &Regions) {
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    if regions.stack_start != 0 && sp > regions.stack_start + STACK_MARGIN {
        discard(regions.stack_start, sp - STACK_MARGIN);
    }
}

/// In the supervisor, when idle: free heap to the kernel, the dead part of the stack too
/// (down to where the stack mapping starts now: it grew during libcontainer's calls).
pub fn trim() {
    let regions = Regions::of_self();
    // SAFETY: malloc_trim only releases free memory; see discard_stack_below.
    unsafe {
        #[cfg(target_env = "gnu")]
        libc::malloc_trim(0);
        discard_stack_below(&regions);
    }
    regions.code.unmap();
}

/// In the pause, before its loop: the heap (it never allocates again), the stack below, and
/// the stack above its caller's frame: the frames of libcontainer's init chain and of the
/// supervisor it was copied from, which it never returns to.
///
/// # Safety
/// The caller must never use the heap again (no allocation, deallocation, or reads of heap
/// data), never return, and keep its own frame small (under `STACK_MARGIN`): it runs a fixed
/// loop of system calls until `_exit`.
#[inline(never)]
pub unsafe fn discard_for_pause(regions: &Regions) {
    if regions.heap_start != 0 {
        let end = libc::sbrk(0) as usize;
        discard(regions.heap_start, end);
    }
    discard_stack_below(regions);
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    if regions.stack_end > sp + STACK_MARGIN {
        discard(sp + STACK_MARGIN, regions.stack_end);
    }
    regions.code.unmap();
}
