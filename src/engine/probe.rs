//! Probe schedule and threshold bookkeeping for one container instance (the kubelet's prober
//! worker): one probe of a kind in flight, fixed cadence from `initialDelaySeconds` after start.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};

use super::backoff::add;
use super::{ProbeKind, Timestamp};

#[derive(Clone, Debug)]
pub(crate) struct Prober {
    pub kind: ProbeKind,
    pub spec: Probe,
    in_flight: Option<u64>,
    next_due: Timestamp,
    last: Option<bool>,
    run: i32,
    /// After thresholds; `None` = not known yet.
    pub result: Option<bool>,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl Prober {
    fn new(kind: ProbeKind, spec: &Probe, started_at: Timestamp) -> Self {
        // Initial results as in the kubelet: liveness Success, readiness Failure, startup Unknown.
        let result = match kind {
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
            ProbeKind::Startup => None,
        };
        Self {
            kind,
            spec: spec.clone(),
            in_flight: None,
            next_due: add(started_at, secs(spec.initial_delay_seconds, 0)),
            last: None,
            run: 0,
            result,
        }
    }

    fn period(&self) -> Duration {
        secs(self.spec.period_seconds, 10).max(Duration::from_secs(1))
    }

    pub fn timeout(&self) -> Duration {
        secs(self.spec.timeout_seconds, 1).max(Duration::from_secs(1))
    }

    fn thresholds(&self) -> (i32, i32) {
        let success = match self.kind {
            ProbeKind::Readiness => self.spec.success_threshold.unwrap_or(1).max(1),
            _ => 1, // must be 1 for liveness and startup
        };
        (success, self.spec.failure_threshold.unwrap_or(3).max(1))
    }

    /// The probe to run now, if one is due and none is in flight. `seq` is engine-wide, so a
    /// late result can never be taken for another instance's (even of a reborn pod UID); not
    /// across agent restarts, whose lost requests are never answered.
    pub fn due(&mut self, now: Timestamp, seq: &mut u64) -> Option<u64> {
        if self.in_flight.is_some() || now < self.next_due {
            return None;
        }
        *seq += 1;
        self.in_flight = Some(*seq);
        // Every missed period is skipped at once: after a forward clock jump (a device without
        // a real-time clock setting its time at boot) decades of them may be behind.
        let period = self.period().as_nanos() as i128;
        let behind = now.as_nanosecond() - self.next_due.as_nanosecond();
        let skipped = (behind / period + 1) * period;
        self.next_due = Timestamp::from_nanosecond(self.next_due.as_nanosecond() + skipped)
            .unwrap_or_else(|_| add(now, self.period()));
        self.in_flight
    }

    pub fn wake(&self) -> Option<Timestamp> {
        self.in_flight.is_none().then_some(self.next_due)
    }

    /// Returns whether the thresholded result changed; stale results are ignored.
    pub fn record(&mut self, seq: u64, ok: bool) -> Option<bool> {
        if self.in_flight != Some(seq) {
            return None;
        }
        self.in_flight = None;
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let (success, failure) = self.thresholds();
        let before = self.result;
        if (ok && self.run >= success) || (!ok && self.run >= failure) {
            self.result = Some(ok);
        }
        Some(before != self.result)
    }
}

/// The probes of one running instance.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probes {
    pub startup: Option<Prober>,
    pub liveness: Option<Prober>,
    pub readiness: Option<Prober>,
}

impl Probes {
    pub fn new(c: &Container, started_at: Timestamp) -> Self {
        let mk = |k, p: &Option<Probe>| p.as_ref().map(|p| Prober::new(k, p, started_at));
        Self {
            startup: mk(ProbeKind::Startup, &c.startup_probe),
            liveness: mk(ProbeKind::Liveness, &c.liveness_probe),
            readiness: mk(ProbeKind::Readiness, &c.readiness_probe),
        }
    }

    /// An instance found running after an agent restart, like the kubelet's new prober workers:
    /// every probe runs at once (past its initial delay), thresholds count afresh, a startup
    /// that passed is not probed again, and readiness keeps its last known result until the
    /// first probe answers (`false` when unknown, as the kubelet has it).
    pub fn adopted(
        c: &Container,
        started_at: Timestamp,
        now: Timestamp,
        was: (bool, bool),
    ) -> Self {
        let mut p = Self::new(c, started_at);
        for w in [&mut p.startup, &mut p.liveness, &mut p.readiness].into_iter().flatten() {
            w.next_due = w.next_due.max(now);
        }
        if let Some(s) = &mut p.startup {
            s.result = was.0.then_some(true);
        }
        if let Some(r) = &mut p.readiness {
            r.result = Some(was.0 && was.1);
        }
        p
    }

    /// Startup probe passed (or there is none): liveness and readiness may run.
    pub fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|p| p.result == Some(true))
    }

    pub fn ready(&self) -> bool {
        self.started() && self.readiness.as_ref().is_none_or(|p| p.result == Some(true))
    }

    pub fn get_mut(&mut self, kind: ProbeKind) -> Option<&mut Prober> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }

    /// The probers that may run now: only startup until it has passed.
    pub fn active(&mut self) -> Vec<&mut Prober> {
        if !self.started() {
            return self.startup.iter_mut().collect();
        }
        self.liveness.iter_mut().chain(self.readiness.iter_mut()).collect()
    }

    pub fn failed(&self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Startup => self.startup.as_ref().is_some_and(|p| p.result == Some(false)),
            ProbeKind::Liveness => self.liveness.as_ref().is_some_and(|p| p.result == Some(false)),
            ProbeKind::Readiness => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container started before a forward clock jump (a device without a real-time clock
    /// boots in 1970, then NTP sets 2026): the next probe is one period after now, reached
    /// at once rather than by stepping through fifty years of missed periods.
    #[test]
    fn a_clock_jump_skips_missed_periods_at_once() {
        let spec = Probe { period_seconds: Some(1), ..Probe::default() };
        let mut p = Prober::new(ProbeKind::Readiness, &spec, Timestamp::UNIX_EPOCH);
        let now = Timestamp::from_second(1_796_000_000).unwrap();
        let started = std::time::Instant::now();
        let mut seq = 0;
        assert_eq!(p.due(now, &mut seq), Some(1));
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        assert_eq!(p.next_due, Timestamp::from_second(1_796_000_001).unwrap());
        p.record(1, true);
        assert_eq!(p.due(now, &mut seq), None, "not due again within the period");
    }
}
