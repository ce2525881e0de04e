//! systemd's notify protocol (sd_notify(3)): READY, STATUS and watchdog pings, sent as
//! datagrams to `$NOTIFY_SOCKET`. Without that variable (not under systemd) every call is a
//! no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The socket systemd named could not be reached.
    #[error("sd_notify to {socket}: {source}")]
    Send { socket: String, source: std::io::Error },
}

#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// Linux abstract namespace (`@name`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::new(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id())
    }

    fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Self {
        let target = socket.filter(|s| !s.is_empty()).map(|s| match s.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(PathBuf::from(s)),
        });
        let socket = target.and_then(|t| UnixDatagram::unbound().ok().map(|s| (s, t)));
        // The watchdog is ours only if WATCHDOG_PID is unset or names this process.
        let for_us = watchdog_pid.is_none_or(|p| p.parse() == Ok(own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!("READY=1\nSTATUS={status}\n"))
    }

    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!("STATUS={status}\n"))
    }

    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1\n")
    }

    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1\n")
    }

    fn send(&self, message: &str) -> Result<(), NotifyError> {
        let Some((socket, target)) = &self.socket else { return Ok(()) };
        let result = match target {
            Target::Path(p) => socket.send_to(message.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        result.map(drop).map_err(|source| NotifyError::Send {
            socket: match target {
                Target::Path(p) => p.display().to_string(),
                Target::Abstract(n) => format!("@{}", String::from_utf8_lossy(n)),
            },
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_systemd() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, server, path.display().to_string())
    }

    fn recv(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_status_and_watchdog_reach_the_socket() {
        let (_dir, server, path) = fake_systemd();
        let n = Notifier::new(Some(&path), Some("30000000"), None, 1);
        n.ready("3 pods running").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=3 pods running\n");
        n.status("4 pods running").unwrap();
        assert_eq!(recv(&server), "STATUS=4 pods running\n");
        n.watchdog().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1\n");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn abstract_sockets_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("outpost-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(Some(&format!("@{name}")), None, None, 1).ready("up").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=up\n");
    }

    #[test]
    fn without_systemd_everything_is_a_no_op() {
        let n = Notifier::new(None, None, None, 1);
        assert!(n.ready("x").is_ok());
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn watchdog_for_another_pid_is_not_ours() {
        let n = Notifier::new(None, Some("1000000"), Some("42"), 1);
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::new(None, Some("1000000"), Some("42"), 42);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it() {
        let n = Notifier::new(Some("/nonexistent/notify.sock"), None, None, 1);
        let e = n.ready("x").unwrap_err().to_string();
        assert!(e.starts_with("sd_notify to /nonexistent/notify.sock: "), "{e}");
    }
}
