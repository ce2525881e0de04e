//! Probe and hook executors for the network handlers (tcpSocket, httpGet, grpc), with the
//! kubelet's success rules and messages. Exec handlers go through the runtime's exec path.
//!
//! Probes are futures on the agent's executor with timers: no thread per probe.

mod connect;
pub(crate) mod grpc;
mod http;
pub mod target;
mod tcp;
mod tls;

pub use connect::connect;
pub use grpc::grpc;
pub use http::{http_get, http_get_any, HttpGet};
pub use tcp::tcp_socket;

use std::future::Future;
use std::time::Duration;

/// Runs `fut`, or fails with the kubelet's timeout wording after `timeout` (`what` names
/// the request; formatted only on a timeout).
///
/// The timer is set only when `fut` cannot finish at once (most tcpSocket probes finish in
/// their first poll).
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let mut fut = std::pin::pin!(fut);
    if let Some(done) = smol::future::poll_once(fut.as_mut()).await {
        return done;
    }
    smol::future::or(fut, async {
        crate::tasks::sleep(timeout).await;
        Err(format!("{}: context deadline exceeded (timeout {}s)", what(), timeout.as_secs_f64()))
    })
    .await
}

/// An I/O error as Go prints a syscall error: `connection refused`, not
/// `Connection refused (os error 111)`.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let desc = nix::errno::Errno::from_raw(code).desc();
            let mut chars = desc.chars();
            chars.next().map(|f| f.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Runs a probe on the thread's own reactor, as the agent does.
    pub fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        crate::tasks::block_on(fut).expect("a reactor for the test")
    }

    /// Brings `lo` up in the calling thread's network namespace (SIOCSIFFLAGS).
    pub fn loopback_up() {
        // SAFETY: a zeroed ifreq with a NUL-terminated name, passed to ioctls on a socket we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0, "socket");
            let mut req: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                req.ifr_name[i] = *b as libc::c_char;
            }
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0, "SIOCGIFFLAGS lo");
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "SIOCSIFFLAGS lo");
            libc::close(fd);
        }
    }
}
