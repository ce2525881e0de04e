//! Probe timeouts on one shared timer.
//!
//! Arming an async-io timer wakes its reactor thread (to recompute its wait), and an httpGet
//! probe that armed its own timeout paid that wake-up on every run. Here deadlines are rounded
//! up to a [`GRAIN`] and kept in one map; a single driver task on the agent's executor keeps
//! one timer armed for the earliest, so the reactor hears about a new timer a few times per
//! second at most, however many probes run. Timeouts are whole seconds (`timeoutSeconds`): a
//! probe may time out up to a grain late.
//!
//! Process-wide because deadlines are only worth sharing across all of the agent's probes:
//! [`start`] spawns the driver; without it (unit tests, one-shot commands) each [`Deadline`]
//! falls back to a timer of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Deadlines are rounded up to a multiple of this (from the clock's start).
pub const GRAIN: Duration = Duration::from_millis(100);

static CLOCK: OnceLock<Clock> = OnceLock::new();

struct Clock {
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    waiting: BTreeMap<(Instant, u64), Waker>,
    /// When the driver's timer fires; `None` when it is not armed.
    armed: Option<Instant>,
    driver: Option<Waker>,
}

impl Clock {
    fn new() -> Self {
        Self { epoch: Instant::now(), state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn round_up(&self, at: Instant) -> Instant {
        let grain = GRAIN.as_nanos();
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let steps = since.div_ceil(grain);
        self.epoch + Duration::from_nanos(u64::try_from(steps * grain).unwrap_or(u64::MAX))
    }
}

/// Starts the shared clock's driver on `ex` (once per process; later calls do nothing).
pub fn start(ex: &smol::Executor<'static>) {
    if CLOCK.set(Clock::new()).is_ok() {
        if let Some(clock) = CLOCK.get() {
            ex.spawn(drive(clock)).detach();
        }
    }
}

/// Wakes expired deadlines and keeps one timer armed for the earliest of the rest.
async fn drive(clock: &'static Clock) {
    let mut timer = smol::Timer::never();
    std::future::poll_fn(|cx| loop {
        let mut s = clock.state();
        s.driver = Some(cx.waker().clone());
        let now = Instant::now();
        while let Some(entry) = s.waiting.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove().wake();
        }
        let Some(&(next, _)) = s.waiting.keys().next() else {
            s.armed = None;
            return Poll::<()>::Pending;
        };
        if s.armed != Some(next) {
            timer.set_at(next);
            s.armed = Some(next);
        }
        drop(s);
        match Pin::new(&mut timer).poll(cx) {
            Poll::Pending => return Poll::Pending,
            // Fired: the next round wakes what expired and arms the next.
            Poll::Ready(_) => clock.state().armed = None,
        }
    })
    .await
}

/// Resolves once `timeout` has passed (on the shared clock: up to a [`GRAIN`] later).
pub struct Deadline {
    inner: Inner,
}

enum Inner {
    Shared { clock: &'static Clock, at: Instant, id: Option<u64> },
    Own(smol::Timer),
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        match CLOCK.get() {
            Some(clock) => Self::on(clock, timeout),
            None => Self { inner: Inner::Own(smol::Timer::after(timeout)) },
        }
    }

    fn on(clock: &'static Clock, timeout: Duration) -> Self {
        let at = clock.round_up(Instant::now() + timeout);
        Self { inner: Inner::Shared { clock, at, id: None } }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (clock, at, id) = match &mut self.inner {
            Inner::Own(timer) => return Pin::new(timer).poll(cx).map(drop),
            Inner::Shared { clock, at, id } => (*clock, *at, id),
        };
        let mut s = clock.state();
        if Instant::now() >= at {
            if let Some(id) = id.take() {
                s.waiting.remove(&(at, id));
            }
            return Poll::Ready(());
        }
        match id {
            Some(id) => {
                if let Some(w) = s.waiting.get_mut(&(at, *id)) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                let new = s.next_id;
                s.next_id += 1;
                *id = Some(new);
                s.waiting.insert((at, new), cx.waker().clone());
                // Only a deadline earlier than the armed timer needs the driver.
                if s.armed.is_none_or(|armed| at < armed) {
                    if let Some(driver) = &s.driver {
                        driver.wake_by_ref();
                    }
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Inner::Shared { clock, at, id: Some(id) } = &self.inner {
            clock.state().waiting.remove(&(*at, *id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Many deadlines on the shared clock: each resolves after its timeout (within a grain),
    /// none before, and a dropped one leaves nothing behind.
    #[test]
    fn shared_deadlines_resolve_in_order_within_a_grain() {
        // A clock of its own: the process-wide one would outlive this test's executor.
        let clock: &'static Clock = Box::leak(Box::new(Clock::new()));
        let ex = Arc::new(smol::Executor::new());
        ex.spawn(drive(clock)).detach();
        let done = Arc::new(Mutex::new(Vec::new()));
        let begin = Instant::now();
        let tasks: Vec<_> = [300u64, 100, 200, 100]
            .into_iter()
            .enumerate()
            .map(|(i, ms)| {
                let done = done.clone();
                ex.spawn(async move {
                    Deadline::on(clock, Duration::from_millis(ms)).await;
                    done.lock().unwrap().push((i, begin.elapsed()));
                })
            })
            .collect();
        let dropped = ex.spawn(Deadline::on(clock, Duration::from_millis(150)));
        let all = ex.run(async {
            smol::Timer::after(Duration::from_millis(20)).await;
            drop(dropped);
            for t in tasks {
                t.await;
            }
        });
        let stuck = async {
            smol::Timer::after(Duration::from_secs(5)).await;
            panic!("the deadlines never resolved");
        };
        smol::future::block_on(smol::future::or(all, stuck));
        let done = done.lock().unwrap();
        let order: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        assert_eq!(&order[2..], [2, 0], "{done:?}");
        for (i, elapsed) in done.iter() {
            let want = Duration::from_millis([300, 100, 200, 100][*i]);
            assert!(*elapsed >= want, "deadline {i} early: {elapsed:?} < {want:?}");
            assert!(*elapsed < want + GRAIN + Duration::from_millis(200), "{i} late: {elapsed:?}");
        }
        assert!(clock.state().waiting.is_empty(), "entries left behind");
    }
}
