//! The loop: step, then wait for the next input (a manifest change, an action's outcome, a
//! runtime event, or the engine's wake-up on the tick grid), and tell systemd how it goes.

use std::time::Duration;

use smol::channel::Receiver;

use crate::runtime::{Event, Runtime};
use crate::sd_notify::Notifier;

use super::outcome::Outcome;
use super::state::Agent;
use super::AgentError;

/// The grid engine wake-ups are rounded up to, and the longest a quiet input waits for its
/// step: reactions to timers are at most this late (the kubelet's are seconds).
pub(super) const TICK: Duration = Duration::from_millis(100);

/// Time until the next point of the tick grid.
fn until_next_tick(now: crate::format::Timestamp) -> Duration {
    let tick = TICK.as_millis() as i64;
    let ms = now.as_millisecond();
    Duration::from_millis((tick - ms.rem_euclid(tick)) as u64)
}

/// Everything the loop reacts to.
enum Input {
    Desired(crate::watch::Update),
    Outcome(Outcome),
    Runtime(Event),
    /// The engine's wake-up (or the watchdog's) is due, or a quiet input's deferred step.
    Tick,
    /// The manifest watcher or the runtime stopped: the agent cannot go on.
    Closed(&'static str),
}

/// Runs until the watcher or the runtime goes away.
pub(super) async fn run<R: Runtime + 'static>(
    mut agent: Agent<R>,
    updates: Receiver<crate::watch::Update>,
    outcome_rx: Receiver<Outcome>,
    runtime_events: Receiver<Event>,
) -> Result<(), AgentError> {
    let notifier = Notifier::from_env();
    let mut ready = false;
    let mut last_watchdog = std::time::Instant::now();
    // A quiet probe result (nothing changed) leaves the step to the next tick, so thousands of
    // probes cost a few steps per second rather than one engine pass each.
    let mut deferred = false;
    let (mut updates, mut outcome_rx) = (std::pin::pin!(updates), std::pin::pin!(outcome_rx));
    let mut runtime_events = std::pin::pin!(runtime_events);
    loop {
        if !deferred {
            agent.step();
        }
        if !ready && updates.is_empty() {
            ready = true;
            let _ = notifier.ready(&agent.status_line()).map_err(|e| log::warn!("{e}"));
        }
        if let Some(interval) = notifier.watchdog_interval() {
            if last_watchdog.elapsed() >= interval {
                let _ = notifier.watchdog();
                last_watchdog = std::time::Instant::now();
            }
        }
        let mut sleep = agent.sleep_for(notifier.watchdog_interval());
        if deferred {
            sleep = sleep.min(until_next_tick(crate::format::now()));
        }
        // On the thread's own reactor: a new timer per round costs a map insert.
        let wake = crate::tasks::sleep(sleep);
        let mut wake = std::pin::pin!(wake);
        // The channels polled as streams: a receiver keeps its listener between rounds,
        // rather than a new `recv()` registering (and dropping) one per round and channel.
        let input = std::future::poll_fn(|cx| {
            use smol::stream::Stream;
            use std::future::Future;
            use std::task::Poll::{Pending, Ready};
            if let Ready(u) = updates.as_mut().poll_next(cx) {
                return Ready(u.map_or(Input::Closed("the manifest watcher"), Input::Desired));
            }
            if let Ready(o) = outcome_rx.as_mut().poll_next(cx) {
                // The agent holds a sender: this channel never closes.
                return Ready(o.map_or(Input::Tick, Input::Outcome));
            }
            if let Ready(e) = runtime_events.as_mut().poll_next(cx) {
                return Ready(
                    e.map_or(Input::Closed("the runtime's event stream"), Input::Runtime),
                );
            }
            match wake.as_mut().poll(cx) {
                Ready(()) => Ready(Input::Tick),
                Pending => Pending,
            }
        })
        .await;
        match input {
            Input::Desired(update) => {
                deferred = false;
                agent.changed = true;
                agent.on_desired(update);
            }
            Input::Outcome(outcome) => {
                let quiet = agent.on_outcome(outcome);
                agent.changed |= !quiet;
                // Under a stream of quiet inputs a step still runs at least once per tick.
                deferred = quiet && agent.stepped_recently();
            }
            Input::Runtime(event) => {
                deferred = false;
                agent.changed = true;
                agent.on_runtime_event(event);
            }
            Input::Tick => deferred = false,
            Input::Closed(what) => {
                log::error!("{what} stopped; exiting so the service manager restarts the agent");
                return Ok(());
            }
        }
    }
}

impl<R: Runtime + 'static> Agent<R> {
    /// How long to sleep: until the engine's next wake-up, on the tick grid so that wake-ups
    /// close together (probes of many pods) share one step, capped by the watchdog.
    pub(super) fn sleep_for(&self, watchdog: Option<Duration>) -> Duration {
        let cap = watchdog.unwrap_or(Duration::from_secs(60));
        let cap = cap.min(self.until_chores());
        let Some(wake) = self.engine.next_wakeup() else { return cap };
        let now = crate::format::now().as_millisecond();
        let tick = TICK.as_millis() as i64;
        let wake = wake.as_millisecond();
        let on_grid = if wake <= now { wake } else { (wake + tick - 1) / tick * tick };
        Duration::from_millis((on_grid - now).max(0) as u64).min(cap)
    }

    /// A step ran within the last tick: a quiet input can wait for the next one.
    pub(super) fn stepped_recently(&self) -> bool {
        self.last_step.elapsed() < TICK
    }

    pub(super) fn status_line(&self) -> String {
        let pods = self.engine.pods().count();
        format!("{pods} pods")
    }
}
