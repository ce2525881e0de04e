use std::net::SocketAddr;
use std::time::Duration;

/// Succeeds when a TCP connection opens within `timeout`; the connection is closed at once.
pub async fn tcp_socket(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let what = format!("dial tcp {addr}");
    super::with_timeout(timeout, &what, async {
        smol::net::TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {addr}: connect: {e}"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_port_succeeds_closed_port_fails() {
        smol::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            assert_eq!(tcp_socket(addr, Duration::from_secs(1)).await, Ok(()));
            drop(listener);
            let err = tcp_socket(addr, Duration::from_secs(1)).await.unwrap_err();
            assert!(err.starts_with(&format!("dial tcp {addr}: connect: ")), "{err}");
            assert!(err.contains("refused"), "{err}");
        });
    }
}
