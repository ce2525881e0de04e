//! The agent thread's own event loop: the executor parks in an epoll of its own, which also
//! waits for the hot paths' sockets and timers (probes, the agent loop's wake-up).
//!
//! With async-io's shared reactor every such event woke its reactor thread, which then woke
//! the executor thread (two context switches), and every timer armed from the executor woke
//! the reactor thread once more to recompute its wait. Here the executor thread waits for
//! them itself: one wake-up per event, none per timer. Everything else (the API, supervisor
//! sockets, child processes) stays on async-io; a wake from another thread reaches this one
//! through an eventfd, written only while this thread is parked.
//!
//! Sources and timers belong to the thread running [`block_on`]. Made on any other thread
//! (unit tests under `smol::block_on`, one-shot commands) they fall back to async-io.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// Token of the wake-up eventfd; sources and timers take ids from [`next_id`].
const NOTIFY: u64 = 0;
/// Consecutive polls without parking after which I/O is checked anyway (zero timeout), so a
/// busy executor cannot starve the sockets.
const CHECK_IO_EVERY: u32 = 16;
/// The longest single wait; the loop simply waits again.
const MAX_WAIT: Duration = Duration::from_secs(3600);

// The waker's states. RUNNING: the thread polls; NOTIFIED: woken since the last poll began;
// PARKED: in epoll_wait, so a wake must write the eventfd.
const RUNNING: u8 = 0;
const NOTIFIED: u8 = 1;
const PARKED: u8 = 2;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// Ids unique in the process, so a source or timer of one reactor is never mistaken for
/// another's (tests run several [`block_on`]s on one thread).
pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(NOTIFY + 1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `fut` to completion on this thread, parked in this thread's own reactor between
/// polls. Fails only when the epoll or eventfd cannot be made.
pub fn block_on<T>(fut: impl Future<Output = T>) -> io::Result<T> {
    let reactor = Rc::new(Reactor::new()?);
    let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
    let notify = Arc::new(Notify {
        state: AtomicU8::new(RUNNING),
        fd: EventFd::from_flags(flags)?,
        #[cfg(test)]
        writes: reactor.eventfd_writes.clone(),
    });
    reactor.epoll.add(
        notify.fd.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, NOTIFY),
    )?;
    let _current = Enter::new(reactor.clone());
    let waker = Waker::from(notify.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let mut events = vec![EpollEvent::empty(); 64];
    let mut busy = 0u32;
    loop {
        notify.state.store(RUNNING, Ordering::SeqCst);
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        let until = reactor.next_timer().map(|at| at.saturating_duration_since(Instant::now()));
        let notified = notify.state.load(Ordering::SeqCst) == NOTIFIED;
        if notified || until == Some(Duration::ZERO) {
            busy += 1;
            if busy.is_multiple_of(CHECK_IO_EVERY) {
                reactor.wait(&mut events, Some(Duration::ZERO), &notify)?;
            }
        } else if notify
            .state
            .compare_exchange(RUNNING, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            busy = 0;
            reactor.wait(&mut events, until, &notify)?;
        }
        reactor.fire_timers(Instant::now());
    }
}

/// The thread's reactor, if it runs [`block_on`].
pub(super) fn current() -> Option<Rc<Reactor>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// Makes a reactor the thread's current one, and restores the previous one when dropped.
struct Enter(Option<Rc<Reactor>>);

impl Enter {
    fn new(reactor: Rc<Reactor>) -> Self {
        Self(CURRENT.with(|c| c.borrow_mut().replace(reactor)))
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
    }
}

/// The executor's waker: wakes the thread only when it is parked.
struct Notify {
    state: AtomicU8,
    fd: EventFd,
    /// eventfd writes, for tests.
    #[cfg(test)]
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.swap(NOTIFIED, Ordering::SeqCst) == PARKED {
            // Cannot fail short of a full counter (2^64 - 1 unread wakes).
            let _ = self.fd.write(1);
            #[cfg(test)]
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(super) struct Reactor {
    id: u64,
    epoll: Epoll,
    /// Tasks waiting for a registered source, by its token.
    waiting: RefCell<HashMap<u64, Interest>>,
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    /// Wakers to call once the tables are no longer borrowed.
    due: Cell<Vec<Waker>>,
    #[cfg(test)]
    pub(super) eventfd_writes: Arc<std::sync::atomic::AtomicUsize>,
}

/// Who waits for a source to turn readable or writable.
#[derive(Default)]
struct Interest {
    read: Option<Waker>,
    write: Option<Waker>,
}

/// Which readiness a task waits for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The epoll flags of a registration for this direction (edge-triggered).
    fn flags(self) -> EpollFlags {
        EpollFlags::EPOLLET
            | match self {
                Direction::Read => EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
                Direction::Write => EpollFlags::EPOLLOUT,
            }
    }
}

impl Reactor {
    fn new() -> io::Result<Self> {
        Ok(Self {
            id: next_id(),
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            waiting: RefCell::default(),
            timers: RefCell::default(),
            due: Cell::default(),
            #[cfg(test)]
            eventfd_writes: Arc::default(),
        })
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Registers `fd` edge-triggered for `direction` only: registered for writes too, an idle
    /// connected socket would report its writability at once, an epoll round that wakes
    /// nobody. Closing the fd removes it from the epoll.
    pub(super) fn register(&self, fd: BorrowedFd<'_>, direction: Direction) -> io::Result<u64> {
        let token = next_id();
        self.epoll.add(fd, EpollEvent::new(direction.flags(), token))?;
        self.waiting.borrow_mut().insert(token, Interest::default());
        Ok(token)
    }

    /// Extends a registration to both directions. Like a new registration, it reports
    /// readiness already there.
    pub(super) fn register_both(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let flags = Direction::Read.flags() | Direction::Write.flags();
        Ok(self.epoll.modify(fd, &mut EpollEvent::new(flags, token))?)
    }

    /// Wakes `waker` at the source's next edge in `direction`. Edges are only read by
    /// [`block_on`] on this same thread, so one that came before this call is not lost: it
    /// is still queued in the epoll (callers retry their syscall before waiting anyway).
    pub(super) fn wait_for(&self, token: u64, direction: Direction, waker: &Waker) {
        if let Some(interest) = self.waiting.borrow_mut().get_mut(&token) {
            let slot = match direction {
                Direction::Read => &mut interest.read,
                Direction::Write => &mut interest.write,
            };
            match slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }

    pub(super) fn deregister(&self, token: u64) {
        self.waiting.borrow_mut().remove(&token);
    }

    pub(super) fn add_timer(&self, at: Instant, id: u64, waker: &Waker) {
        let mut timers = self.timers.borrow_mut();
        match timers.get_mut(&(at, id)) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                timers.insert((at, id), waker.clone());
            }
        }
    }

    pub(super) fn remove_timer(&self, at: Instant, id: u64) {
        self.timers.borrow_mut().remove(&(at, id));
    }

    #[cfg(test)]
    pub(super) fn timer_count(&self) -> usize {
        self.timers.borrow().len()
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.borrow().keys().next().map(|&(at, _)| at)
    }

    fn fire_timers(&self, now: Instant) {
        let mut due = self.due.take();
        {
            let mut timers = self.timers.borrow_mut();
            while let Some(entry) = timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
        }
        self.wake_all(due);
    }

    /// One epoll wait (`None`: no timer, wait for events only), then wakes who waited.
    fn wait(
        &self,
        events: &mut [EpollEvent],
        timeout: Option<Duration>,
        notify: &Notify,
    ) -> io::Result<()> {
        let ms = timeout.map_or(MAX_WAIT, |t| t.min(MAX_WAIT)).as_micros().div_ceil(1000);
        let timeout = EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX);
        let n = match self.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        // Awake again: the wakes below (and any until the next poll) need no eventfd write.
        notify.state.store(RUNNING, Ordering::SeqCst);
        let mut due = self.due.take();
        {
            let mut waiting = self.waiting.borrow_mut();
            for event in &events[..n] {
                let token = event.data();
                if token == NOTIFY {
                    // Drained so the next edge is a new write; EAGAIN: already drained.
                    let _ = notify.fd.read();
                    continue;
                }
                let Some(interest) = waiting.get_mut(&token) else { continue };
                let flags = event.events();
                let error = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
                if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | error) {
                    due.extend(interest.read.take());
                }
                if flags.intersects(EpollFlags::EPOLLOUT | error) {
                    due.extend(interest.write.take());
                }
            }
        }
        self.wake_all(due);
        Ok(())
    }

    /// Wakes outside the tables' borrows (a waker may drop a source or timer), keeping the
    /// vector's allocation for the next round.
    fn wake_all(&self, mut due: Vec<Waker>) {
        for waker in due.drain(..) {
            waker.wake();
        }
        self.due.set(due);
    }
}
