//! Failed authentications per source address: a token bucket each. A guess costs a token;
//! an empty bucket answers 429 without checking anything, so guessing tokens from one address
//! runs at the refill rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed in a burst.
pub const BURST: f64 = 10.0;
/// Then one more per this long.
pub const REFILL: Duration = Duration::from_secs(6);
/// Addresses tracked at most: beyond, those that have refilled are forgotten first.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Default)]
pub struct FailureLimiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl FailureLimiter {
    fn level(&self, ip: IpAddr, now: Instant) -> f64 {
        self.buckets.get(&ip).map_or(BURST, |&(tokens, at)| {
            let refilled = now.saturating_duration_since(at).as_secs_f64() / REFILL.as_secs_f64();
            (tokens + refilled).min(BURST)
        })
    }

    /// May `ip` try to authenticate now? When not, how long until it may.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let level = self.level(ip, now);
        if level >= 1.0 {
            return Ok(());
        }
        Err(REFILL.mul_f64(1.0 - level))
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.buckets.len() >= MAX_ADDRESSES && !self.buckets.contains_key(&ip) {
            let full = |&(tokens, at): &(f64, Instant)| {
                tokens + now.saturating_duration_since(at).as_secs_f64() / REFILL.as_secs_f64()
                    >= BURST
            };
            self.buckets.retain(|_, b| !full(b));
            if self.buckets.len() >= MAX_ADDRESSES {
                // Under a spread attack: forget the oldest half rather than grow.
                let mut ats: Vec<Instant> = self.buckets.values().map(|b| b.1).collect();
                ats.sort();
                let cut = ats[ats.len() / 2];
                self.buckets.retain(|_, b| b.1 > cut);
            }
        }
        let level = self.level(ip, now);
        self.buckets.insert(ip, ((level - 1.0).max(0.0), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_then_one_per_refill_per_address() {
        let mut limiter = FailureLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            assert_eq!(limiter.check(a, t0), Ok(()));
            limiter.failed(a, t0);
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(wait <= REFILL && wait > REFILL / 2, "{wait:?}");
        assert_eq!(limiter.check(b, t0), Ok(()), "another address is not limited");
        assert!(limiter.check(a, t0 + REFILL / 2).is_err());
        let later = t0 + REFILL;
        assert_eq!(limiter.check(a, later), Ok(()), "one more after a refill period");
        limiter.failed(a, later);
        assert!(limiter.check(a, later).is_err());
        assert_eq!(limiter.check(a, later + REFILL * 100), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let mut limiter = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 * MAX_ADDRESSES as u32 {
            limiter.failed(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(i.into()));
        }
        assert!(limiter.buckets.len() <= MAX_ADDRESSES);
    }
}
