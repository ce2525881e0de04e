//! How `ps` names a supervisor forked by the fork server: it is a copy of the agent, whose
//! command line it would otherwise show.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `comm` of a forked supervisor; an exec'd one (the fallback) is `outpost`.
const SUPERVISOR_NAME: &[u8] = b"outpost-sup\0";

/// Where a forked supervisor's command line lives when it can be moved: not on the heap or
/// the stack, parts of which the pause (a copy of the supervisor) discards.
struct Title(std::cell::UnsafeCell<[u8; 512]>);
// SAFETY: written once, in a single-threaded child, before anything reads it.
unsafe impl Sync for Title {}
static TITLE: Title = Title(std::cell::UnsafeCell::new([0; 512]));

/// Names the process for `ps`: `comm` "outpost-sup", and the command line an exec'd one
/// would have, `<exe> supervise --pod-dir DIR` (tools and tests find a pod's supervisor by
/// it). Where the process may (`CAP_SYS_RESOURCE`) the kernel is pointed at a static buffer
/// (`PR_SET_MM`); else the agent's command line is overwritten in place, as setproctitle does.
pub(super) fn set(pod_dir: &Path) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, SUPERVISOR_NAME.as_ptr(), 0, 0, 0) };
    let exe = std::env::args_os().next().unwrap_or_else(|| "outpost".into());
    let mut line = Vec::new();
    for arg in
        [exe.as_os_str(), OsStr::new("supervise"), OsStr::new("--pod-dir"), pod_dir.as_os_str()]
    {
        line.extend_from_slice(arg.as_bytes());
        line.push(0);
    }
    if !point_to_static(&line) {
        overwrite_in_place(line);
    }
}

fn point_to_static(line: &[u8]) -> bool {
    // SAFETY: single-threaded, and nothing else writes or reads the buffer.
    let buf = unsafe { &mut *TITLE.0.get() };
    if line.len() > buf.len() {
        return false;
    }
    buf[..line.len()].copy_from_slice(line);
    let start = buf.as_ptr() as libc::c_ulong;
    let end = start + line.len() as libc::c_ulong;
    let set = |option: libc::c_int, value: libc::c_ulong| {
        let (option, zero) = (option as libc::c_ulong, 0 as libc::c_ulong);
        // SAFETY: PR_SET_MM only changes where the kernel reads this process's command line.
        unsafe { libc::prctl(libc::PR_SET_MM, option, value, zero, zero) == 0 }
    };
    // The kernel keeps arg_start <= arg_end at every step: the buffer lies below the stack.
    set(libc::PR_SET_MM_ARG_START, start) && set(libc::PR_SET_MM_ARG_END, end)
}

/// setproctitle: the title goes over the agent's arguments, NUL-separated if it fits there;
/// else over the arguments and the environment (moved to the heap first) as one string, which
/// the kernel reads up to its NUL because the original last byte is no longer one.
fn overwrite_in_place(mut line: Vec<u8>) {
    let [Some(arg_start), Some(arg_end), Some(env_start), Some(env_end)] =
        super::super::procfs::own_stat_fields([48, 49, 50, 51])
    else {
        return;
    };
    if line.len() <= arg_end.saturating_sub(arg_start) {
        line.resize(arg_end - arg_start, 0);
    } else {
        if env_start != arg_end || env_end <= env_start || !move_environment(env_start..env_end) {
            return;
        }
        line.pop();
        for b in &mut line {
            if *b == 0 {
                *b = b' ';
            }
        }
        line.truncate(env_end - arg_start - 1);
        line.push(0);
    }
    // SAFETY: [arg_start, arg_start + line.len()) lies in the area the kernel set up for the
    // argv and envp strings, mapped and writable; nothing reads the agent's arguments in a
    // supervisor, and the environment strings were moved out of it.
    unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), arg_start as *mut u8, line.len()) };
}

extern "C" {
    static mut environ: *mut *mut libc::c_char;
}

/// Copies the environment strings in `area` to the heap (leaked: they live as long as the
/// process) and points `environ` at the copies.
fn move_environment(area: std::ops::Range<usize>) -> bool {
    // SAFETY: single-threaded; `environ` is a NULL-terminated array of C strings.
    unsafe {
        let env = std::ptr::addr_of!(environ).read();
        if env.is_null() {
            return false;
        }
        let mut i = 0;
        while !(*env.add(i)).is_null() {
            let var = *env.add(i);
            if area.contains(&(var as usize)) {
                *env.add(i) = std::ffi::CStr::from_ptr(var).to_owned().into_raw();
            }
            i += 1;
        }
    }
    true
}
