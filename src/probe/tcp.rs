use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Succeeds when a TCP connection opens within `timeout`; the connection is closed at once.
pub async fn tcp_socket(
    addr: SocketAddr,
    netns: Option<&Path>,
    timeout: Duration,
) -> Result<(), String> {
    super::with_timeout(timeout, || format!("dial tcp {addr}"), async {
        super::connect::connect_and_close(addr, netns)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", super::io_message(&e)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the agent's own reactor, and on async-io's (a thread without one).
    #[test]
    fn open_port_succeeds_closed_port_fails() {
        crate::probe::tests_support::run(open_then_closed());
        smol::block_on(open_then_closed());
    }

    async fn open_then_closed() {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(tcp_socket(addr, None, Duration::from_secs(1)).await, Ok(()));
        drop(listener);
        let err = tcp_socket(addr, None, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err, format!("dial tcp {addr}: connect: connection refused"));
    }

    /// Without a pod IP, probes reach the pod's loopback from inside its namespace.
    #[test]
    fn connects_inside_a_network_namespace() {
        assert!(nix::unistd::Uid::effective().is_root(), "this test needs root (unshare)");
        // A thread in a fresh namespace with lo up and a listener, like a pod without CNI.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            crate::probe::tests_support::loopback_up();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let ns = format!("/proc/{}/task/{}/ns/net", std::process::id(), nix::unistd::gettid());
            tx.send((ns, port)).unwrap();
            let _ = done_rx.recv();
            drop(listener);
        });
        let (ns, port) = rx.recv().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Duration::from_secs(2);
        crate::probe::tests_support::run(async {
            assert_eq!(tcp_socket(addr, Some(Path::new(&ns)), t).await, Ok(()));
        });
        done_tx.send(()).unwrap();
    }
}
