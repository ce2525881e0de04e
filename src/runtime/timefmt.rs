//! RFC 3339 UTC timestamps with nanoseconds, as CRI log lines carry them.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2024-01-02T03:04:05.000000006Z`: always 9 fraction digits, so lines sort as text.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(secs: u64, nanos: u32, expected: &str) {
        let t = UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(rfc3339_nanos(t), expected);
    }

    #[test]
    fn formats() {
        check(0, 0, "1970-01-01T00:00:00.000000000Z");
        check(951_782_400, 5, "2000-02-29T00:00:00.000000005Z");
        check(1_704_164_645, 123_456_789, "2024-01-02T03:04:05.123456789Z");
        check(4_102_444_799, 999_999_999, "2099-12-31T23:59:59.999999999Z");
    }
}
