//! Wall-clock time for the engine. The engine reads no clock; the agent is where `now` comes
//! from (k8s-openapi's jiff is built without its own clock).

use std::time::SystemTime;

use crate::engine::Timestamp;

pub fn now() -> Timestamp {
    timestamp(SystemTime::now())
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    #[test]
    fn converts_with_nanoseconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123);
        let ts = super::timestamp(t);
        assert_eq!((ts.as_second(), ts.subsec_nanosecond()), (1_700_000_000, 123));
    }
}
