//! Probe and hook executors for the network handlers (tcpSocket, httpGet), with the
//! kubelet's success rules and messages. Exec handlers go through the runtime's exec path.
//!
//! Probes are futures on the agent's executor with timers: no thread per probe.

mod http;
mod tcp;

pub use http::{http_get, HttpGet};
pub use tcp::tcp_socket;

use std::future::Future;
use std::time::Duration;

/// Runs `fut`, or fails with the kubelet's timeout wording after `timeout`.
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    smol::future::or(fut, async {
        smol::Timer::after(timeout).await;
        Err(format!("{what}: context deadline exceeded (timeout {}s)", timeout.as_secs_f64()))
    })
    .await
}
