//! The agent thread's reactor: timers, wakes from other threads, sockets, fairness.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::io::AsyncReadExt;

use super::*;

/// Runs `fut` on a thread of its own with the reactor, failing the test if it is stuck
/// (a lost wake-up hangs rather than fails).
fn within<T: Send + 'static>(limit: Duration, fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(block_on(fut).expect("reactor"));
    });
    rx.recv_timeout(limit).expect("the future never completed: a wake-up was lost")
}

/// Each sleep resolves after its time and in order; a dropped one leaves nothing behind.
#[test]
fn sleeps_resolve_in_order_and_dropped_ones_leave_nothing() {
    let done = within(Duration::from_secs(5), async {
        let ex = Arc::new(smol::Executor::new());
        let done = Arc::new(Mutex::new(Vec::new()));
        let begin = Instant::now();
        let tasks: Vec<_> = [300u64, 100, 200, 150]
            .into_iter()
            .enumerate()
            .map(|(i, ms)| {
                let done = done.clone();
                ex.spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    done.lock().unwrap().push((i, begin.elapsed()));
                })
            })
            .collect();
        let dropped = ex.spawn(sleep(Duration::from_millis(120)));
        ex.run(async {
            sleep(Duration::from_millis(20)).await;
            drop(dropped);
            for t in tasks {
                t.await;
            }
        })
        .await;
        let timers = reactor::current().expect("on the reactor").timer_count();
        let done = done.lock().unwrap().clone();
        (done, timers)
    });
    let (done, timers_left) = done;
    let order: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [1, 3, 2, 0], "{done:?}");
    for (i, elapsed) in &done {
        let want = Duration::from_millis([300, 100, 200, 150][*i]);
        assert!(*elapsed >= want, "sleep {i} early: {elapsed:?} < {want:?}");
        assert!(*elapsed < want + Duration::from_millis(200), "sleep {i} late: {elapsed:?}");
    }
    assert_eq!(timers_left, 0, "timers left behind");
}

/// A parked reactor thread wakes for a channel sent to from another thread (the eventfd).
#[test]
fn wakes_from_other_threads_reach_a_parked_thread() {
    let got = within(Duration::from_secs(5), async {
        let (tx, rx) = smol::channel::bounded(1);
        std::thread::spawn(move || {
            for i in 0..3u32 {
                std::thread::sleep(Duration::from_millis(30));
                tx.send_blocking(i).unwrap();
            }
        });
        let mut got = Vec::new();
        while let Ok(i) = rx.recv().await {
            got.push(i);
        }
        got
    });
    assert_eq!(got, [0, 1, 2]);
}

/// A peer on loopback that writes `chunks`, `gap` apart, then closes.
fn slow_peer(chunks: &'static [&'static [u8]], gap: Duration) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for chunk in chunks {
            std::thread::sleep(gap);
            s.write_all(chunk).unwrap();
        }
    });
    addr
}

/// Reads all the peer sends through a [`TcpStream`] on the thread's reactor.
async fn read_all(addr: std::net::SocketAddr) -> String {
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = TcpStream::new(socket).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// A read waits for the peer's data through the reactor's epoll, while another task keeps
/// the executor busy (yielding forever): I/O is still checked now and then.
#[test]
fn sockets_wake_their_task_even_when_the_executor_is_busy() {
    let addr = slow_peer(&[b"hel", b"lo"], Duration::from_millis(50));
    let text = within(Duration::from_secs(5), async move {
        let ex = smol::Executor::new();
        let spinner = ex.spawn(async {
            loop {
                smol::future::yield_now().await;
            }
        });
        // A task of its own: polled only when its waker fires, that is when the epoll says.
        let reader = ex.spawn(read_all(addr));
        let text = ex.run(reader).await;
        drop(spinner);
        text
    });
    assert_eq!(text, "hello");
}

/// An event that wakes the parked thread through its epoll wakes the waiting task without
/// writing the eventfd (only wakes from other threads need it).
#[test]
fn socket_wakes_on_the_reactor_thread_write_no_eventfd() {
    let addr = slow_peer(&[b"x", b"x", b"x"], Duration::from_millis(30));
    let writes = within(Duration::from_secs(5), async move {
        let ex = smol::Executor::new();
        // A task of its own, woken by the reactor (as a probe is).
        let text = ex.run(ex.spawn(read_all(addr))).await;
        assert_eq!(text, "xxx");
        let writes = reactor::current().expect("on the reactor").eventfd_writes.clone();
        writes.load(std::sync::atomic::Ordering::Relaxed)
    });
    assert_eq!(writes, 0, "eventfd writes for wakes on the reactor's own thread");
}

/// Resolves at the first wake of a wait for `direction` on the registration `token`. Run as
/// an executor task, it is polled again only when woken.
async fn woken(token: u64, direction: reactor::Direction) {
    let mut waiting = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut waiting, true) {
            return std::task::Poll::Ready(());
        }
        reactor::current().expect("on the reactor").wait_for(token, direction, cx.waker());
        std::task::Poll::Pending
    })
    .await
}

/// A registration, new or extended to both directions, reports readiness already there: a
/// socket that turned ready between a syscall's EAGAIN and its registration is not missed
/// (the sockets do not retry the syscall after registering).
#[test]
fn registrations_report_readiness_already_there() {
    use reactor::Direction::{Read, Write};
    use std::os::fd::AsFd;
    let done = within(Duration::from_secs(5), async {
        let ex = smol::Executor::new();
        let register = |fd: std::os::fd::BorrowedFd<'_>, d| {
            reactor::current().expect("on the reactor").register(fd, d).expect("register")
        };
        // For reads, with a byte already waiting.
        let (a, mut peer_a) = std::os::unix::net::UnixStream::pair().unwrap();
        peer_a.write_all(b"x").unwrap();
        let token = register(a.as_fd(), Read);
        ex.run(ex.spawn(woken(token, Read))).await;
        // For writes (ready at once), then for both while a byte waits.
        let (b, mut peer_b) = std::os::unix::net::UnixStream::pair().unwrap();
        let token = register(b.as_fd(), Write);
        ex.run(ex.spawn(woken(token, Write))).await;
        peer_b.write_all(b"x").unwrap();
        reactor::current().unwrap().register_both(b.as_fd(), token).expect("modify");
        ex.run(ex.spawn(woken(token, Read))).await;
        true
    });
    assert!(done);
}
