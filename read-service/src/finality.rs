//! Which minutes are final: those no more data will reach, so that a rule engine or any program
//! reading the latest minutes never reads one half filled.
//!
//! A minute reaches the aggregators once every agent has flushed it (`flush_delay_secs` after it
//! ends, 5 by default) and the aggregators have applied the batches (their lag, usually well under
//! a second). The read service counts a minute final once `final_delay_secs` (15 by default) have
//! passed since its end. Every answer of both APIs says where that line is (the header
//! [`HEADER`], and `final_until` in the native API's JSON): unix seconds, the end of the last final
//! minute, so every window that ends at or before it is final. The Prometheus API leaves windows
//! that end after it out of every answer unless asked `final_only=false`; the native API includes
//! them unless asked `final_only=true`. A minute an agent sends later than that (a host that was
//! down) still changes it, as any late data does.

use thermo_core::window::minute_start;

/// The response header naming the end of the last final minute, unix seconds.
pub const HEADER: &str = "x-thermo-final-until";

/// The end of the last final minute at `now` (unix seconds), `delay` seconds after a minute ends.
pub fn final_until(now: i64, delay: i64) -> i64 {
    minute_start(now - delay.max(0))
}

/// Whether a window of `seconds` starting at `start` is final at `until`.
pub fn is_final(start: i64, seconds: i64, until: i64) -> bool {
    start + seconds <= until
}

/// The `final_only` parameter: `true`/`1` or `false`/`0`; absent: `default`.
pub fn final_only(value: Option<&str>, default: bool) -> Result<bool, String> {
    match value {
        None | Some("") => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(format!("{other:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_is_final_once_the_delay_has_passed_since_its_end() {
        let m = 1_800_000_000; // a minute start
                               // At m + 60 + 14 the minute [m, m + 60) is not final yet; at m + 60 + 15 it is.
        assert_eq!(final_until(m + 74, 15), m);
        assert_eq!(final_until(m + 75, 15), m + 60);
        assert!(!is_final(m, 60, final_until(m + 74, 15)));
        assert!(is_final(m, 60, final_until(m + 75, 15)));
        // A 5m window is final when its last minute is.
        assert!(!is_final(m, 300, m + 240));
        assert!(is_final(m, 300, m + 300));
        assert_eq!(final_until(m + 30, -5), m, "a negative delay counts as 0");
        assert_eq!(final_only(None, true), Ok(true));
        assert_eq!(final_only(Some("0"), true), Ok(false));
        assert_eq!(final_only(Some("true"), false), Ok(true));
        assert!(final_only(Some("yes"), false).is_err());
    }
}
