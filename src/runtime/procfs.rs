//! Process identity from /proc: a pid plus its start time names one process for good.

/// The start time (clock ticks since boot) of a live process; `None` when the pid is gone or
/// is a zombie (dead, only not reaped yet: its stat still shows the old start time).
pub fn live_starttime(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = fields_from_state(&stat)?;
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // starttime is field 22; `rest` starts at field 3.
    fields.nth(18)?.parse().ok()
}

/// The process `pid` is alive and is the one that had `starttime`.
pub fn is_same_process(pid: i32, starttime: u64) -> bool {
    live_starttime(pid) == Some(starttime)
}

/// Numbered fields (1-based, as in proc(5)) of `/proc/self/stat` that are numbers, such as
/// 48–51: where the command line and the environment lie.
pub fn own_stat_fields<const N: usize>(numbers: [usize; N]) -> [Option<usize>; N] {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = fields_from_state(&stat).map(Iterator::collect).unwrap_or_default();
    numbers.map(|n| fields.get(n.checked_sub(3)?)?.trim().parse().ok())
}

/// A `/proc/<pid>/stat` text's fields from field 3 (the state) on. The command name before
/// them may contain spaces and parentheses: they start after the last ')'.
fn fields_from_state(stat: &str) -> Option<std::str::Split<'_, char>> {
    Some(stat.get(stat.rfind(')')? + 2..)?.split(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_stable() {
        let me = std::process::id() as i32;
        let t = live_starttime(me).expect("own stat");
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
    }

    #[test]
    fn reaped_child_is_gone_and_zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id() as i32;
        // Wait until it is a zombie without reaping it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only reads the child's state into `info`.
        let r = unsafe {
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        assert_eq!(r, 0);
        assert_eq!(live_starttime(pid), None, "a zombie counts as dead");
        child.wait().expect("reap");
        assert_eq!(live_starttime(pid), None);
    }
}
