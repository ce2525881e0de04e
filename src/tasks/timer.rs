//! Timers on the thread's own reactor: arming one is a map insert, not a wake-up of
//! async-io's reactor thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::reactor;

/// Resolves at `at`, on the reactor of the thread that polls it ([`super::block_on`]), else
/// on an async-io timer.
pub struct Sleep {
    at: Instant,
    armed: Armed,
}

enum Armed {
    No,
    /// In the timer table of reactor `reactor` under `(at, id)`.
    Local {
        reactor: u64,
        id: u64,
    },
    Shared(smol::Timer),
}

/// Resolves once `after` has passed.
pub fn sleep(after: Duration) -> Sleep {
    Sleep { at: Instant::now() + after, armed: Armed::No }
}

impl Sleep {
    fn disarm(&mut self) {
        if let Armed::Local { reactor, id } = std::mem::replace(&mut self.armed, Armed::No) {
            if let Some(r) = reactor::current().filter(|r| r.id() == reactor) {
                r.remove_timer(self.at, id);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Armed::Shared(timer) = &mut self.armed {
            return Pin::new(timer).poll(cx).map(drop);
        }
        if Instant::now() >= self.at {
            self.disarm();
            return Poll::Ready(());
        }
        let at = self.at;
        match (reactor::current(), &self.armed) {
            (Some(r), Armed::Local { reactor, id }) if r.id() == *reactor => {
                r.add_timer(at, *id, cx.waker())
            }
            (Some(r), _) => {
                self.disarm();
                let id = reactor::next_id();
                r.add_timer(at, id, cx.waker());
                self.armed = Armed::Local { reactor: r.id(), id };
            }
            (None, _) => {
                self.disarm();
                let mut timer = smol::Timer::at(at);
                let _ = Pin::new(&mut timer).poll(cx);
                self.armed = Armed::Shared(timer);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}
