//! The kubelet's `flowcontrol.Backoff` for one key, without jitter (the kubelet uses none).

use std::time::Duration;

use super::Timestamp;

pub(crate) const INITIAL: Duration = Duration::from_secs(10);
pub(crate) const MAX: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Backoff {
    entry: Option<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// An entry untouched for 2×MAX is forgotten: that is the "reset after 10 minutes".
fn expired(event: Timestamp, last_update: Timestamp) -> bool {
    since(event, last_update) > 2 * MAX
}

pub(crate) fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or_default()
}

pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

impl Backoff {
    /// `IsInBackOffSince(event)`: still waiting after something that happened at `event`?
    /// Returns when the wait ends.
    pub fn until_since(&self, event: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let e = self.entry?;
        if expired(event, e.last_update) {
            return None;
        }
        let until = add(event, e.backoff);
        (now < until).then_some(until)
    }

    /// `IsInBackOffSinceUpdate(now)`: used for image pulls.
    pub fn until(&self, now: Timestamp) -> Option<Timestamp> {
        let e = self.entry?;
        if expired(now, e.last_update) {
            return None;
        }
        let until = add(e.last_update, e.backoff);
        (now < until).then_some(until)
    }

    /// `Next(event)`: first call 10 s, then doubling up to 5 min.
    pub fn next(&mut self, event: Timestamp, now: Timestamp) {
        let backoff = match self.entry {
            Some(e) if !expired(event, e.last_update) => (e.backoff * 2).min(MAX),
            _ => INITIAL,
        };
        self.entry = Some(Entry { backoff, last_update: now });
    }

    pub fn last_update(&self) -> Option<Timestamp> {
        self.entry.map(|e| e.last_update)
    }

    pub fn current(&self) -> Duration {
        self.entry.map(|e| e.backoff).unwrap_or_default()
    }
}

/// Go's `time.Duration.String()`: `850ms`, `1.5µs`, `10.004s`, `1m5s`, `5m0s`,
/// `24h0m0.475171824s` (back-off delays, pull times; `metav1.Duration` is parsed by Go's
/// `ParseDuration` on the client side).
pub fn go_duration(d: Duration) -> String {
    /// `whole.frac` with the fraction's trailing zeros dropped.
    fn decimal(whole: u128, frac: u128, digits: usize) -> String {
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:0digits$}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
    let ns = d.as_nanos();
    match ns {
        0 => "0s".into(),
        1..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{}µs", decimal(ns / 1_000, ns % 1_000, 3)),
        1_000_000..=999_999_999 => format!("{}ms", decimal(ns / 1_000_000, ns % 1_000_000, 6)),
        _ => {
            let total = ns / 1_000_000_000;
            let (h, m) = (total / 3600, total / 60 % 60);
            let secs = decimal(total % 60, ns % 1_000_000_000, 9);
            match (h, m) {
                (0, 0) => format!("{secs}s"),
                (0, m) => format!("{m}m{secs}s"),
                (h, m) => format!("{h}h{m}m{secs}s"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn go_duration_formats_like_go() {
        let ns = |n| go_duration(Duration::from_nanos(n));
        assert_eq!(ns(0), "0s");
        assert_eq!(ns(999), "999ns");
        assert_eq!(ns(1_500), "1.5µs");
        assert_eq!(ns(850_000_000), "850ms");
        assert_eq!(ns(1_250_000), "1.25ms");
        assert_eq!(ns(10_004_000_000), "10.004s");
        assert_eq!(ns(10_500_000_000), "10.5s");
        assert_eq!(ns(86_400_475_171_824), "24h0m0.475171824s");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3661)), "1h1m1s");
    }

    #[test]
    fn doubles_caps_and_forgets_after_ten_minutes() {
        let mut b = Backoff::default();
        assert_eq!(b.until_since(t(0), t(0)), None);
        let mut seen = vec![];
        for i in 0..8 {
            b.next(t(i), t(i));
            seen.push(b.current().as_secs());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
        // Event 601 s after the last update: forgotten, next starts over.
        assert_eq!(b.until_since(t(7 + 601), t(7 + 601)), None);
        b.next(t(7 + 601), t(7 + 601));
        assert_eq!(b.current(), INITIAL);
    }
}
