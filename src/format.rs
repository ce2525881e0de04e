//! Time and text as Kubernetes prints and parses them, shared by the agent, the API and the
//! client: the wall clock as a timestamp, Go durations, kubectl's ages, and cuts of UTF-8 text.
//! A leaf: it imports nothing from the crate.

use std::time::{Duration, SystemTime};

pub use k8s_openapi::jiff::Timestamp;

/// The wall clock (k8s-openapi's jiff is built without one). Only the agent and the client
/// read it; the engine is handed `now`.
pub fn now() -> Timestamp {
    timestamp(SystemTime::now())
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Why a duration flag does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected a duration like 10s, 5m or 1m30s (housekeeping: at least 100ms)")]
pub struct DurationError(String);

/// Go's `time.ParseDuration` for whole h/m/s/ms amounts, as the kubelet's flags take them.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(s.into());
    let (mut total, mut rest) = (Duration::ZERO, s.trim());
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        total += match &rest[..unit] {
            "h" => Duration::from_secs(n * 3600),
            "m" => Duration::from_secs(n * 60),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

/// A housekeeping interval: a duration of at least 100 ms.
pub fn parse_interval(s: &str) -> Result<Duration, DurationError> {
    parse_go_duration(s).and_then(|d| {
        if d < Duration::from_millis(100) {
            Err(DurationError(s.into()))
        } else {
            Ok(d)
        }
    })
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

/// Go's `duration.HumanDuration` (apimachinery), which kubectl uses for ages: `45s`, `3m20s`,
/// `15m`, `5h30m`, `2d3h`, `1y20d`. `negative` beyond the 2 s tolerance is `<invalid>`.
pub fn human_duration(d: std::time::Duration, negative: bool) -> String {
    if negative {
        return "<invalid>".into();
    }
    let seconds = d.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The largest index at most `max` that is a char boundary of `s`: where to cut it.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len())).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0)
}

/// The smallest index at least `min` that is a char boundary of `s` (`s.len()` at most).
pub fn ceil_char_boundary(s: &str, min: usize) -> usize {
    (min..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_nanoseconds() {
        let t = std::time::UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        let ts = timestamp(t);
        assert_eq!((ts.as_second(), ts.subsec_nanosecond()), (1_700_000_000, 123));
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
    fn durations_parse_like_go() {
        let ok = [
            ("10s", 10_000),
            ("5m", 300_000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("0", 0),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_go_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "10", "s", "1d", "-1s", "1.5s"] {
            assert_eq!(parse_go_duration(s), Err(DurationError(s.into())), "{s}");
        }
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0s"), Err(DurationError("0s".into())));
    }

    #[test]
    fn human_durations_like_kubectl() {
        let h = |s: u64| human_duration(Duration::from_secs(s), false);
        assert_eq!(
            [h(0), h(119), h(120), h(200), h(600), h(7199), h(3 * 3600 + 60), h(10 * 3600)],
            ["0s", "119s", "2m", "3m20s", "10m", "119m", "3h1m", "10h"]
        );
        assert_eq!(
            [h(50 * 3600), h(48 * 3600), h(30 * 86400), h(800 * 86400)],
            ["2d2h", "2d", "30d", "2y70d"]
        );
        assert_eq!(human_duration(Duration::ZERO, true), "<invalid>");
    }

    #[test]
    fn cuts_fall_on_char_boundaries() {
        let s = "aé€";
        assert_eq!(floor_char_boundary(s, 2), 1);
        assert_eq!(floor_char_boundary(s, 3), 3);
        assert_eq!(floor_char_boundary(s, 99), s.len());
        assert_eq!(ceil_char_boundary(s, 2), 3);
        assert_eq!(ceil_char_boundary(s, 4), 6);
        assert_eq!(ceil_char_boundary(s, 99), s.len());
    }
}
