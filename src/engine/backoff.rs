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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
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
