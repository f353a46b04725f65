//! Window arithmetic: the one place that says which window a time belongs to.
//!
//! Times are unix seconds (UTC). A window of `len` seconds starts at a multiple of `len` from the
//! epoch; `rem_euclid` keeps this true for negative times. A point belongs to the minute in which the
//! agent received it, or to the minute of its DogStatsD `|T` timestamp.

/// Seconds in a minute window.
pub const MINUTE: i64 = 60;

/// The environment variable that shifts thermo's wall clock by a number of seconds (tests only).
pub const CLOCK_OFFSET_ENV: &str = "THERMO_CLOCK_OFFSET_SECS";

/// thermo's wall clock in unix seconds (0 if the clock is before the epoch).
pub fn now_s() -> i64 {
    now_ms().div_euclid(1000)
}

/// thermo's wall clock in unix milliseconds: the system clock plus [`clock_offset_secs`].
pub fn now_ms() -> i64 {
    system_now_ms() + clock_offset_secs() * 1000
}

/// The system clock in unix milliseconds, unshifted (0 if it is before the epoch).
pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The shift of thermo's wall clock, read once from `THERMO_CLOCK_OFFSET_SECS` (0 when unset or
/// invalid; [`clock_offset_from_env`] tells which). Every time thermo reads (minute windows, the
/// agent's flush, the aggregator's lateness rule, the compactor's lag and grace, retention) comes
/// from this one clock, so the end-to-end tests can place their start at a fixed point of the
/// week and no hour, day or week boundary falls inside a test, whatever the time of day.
pub fn clock_offset_secs() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| clock_offset_from_env().unwrap_or(0))
}

/// `THERMO_CLOCK_OFFSET_SECS` parsed: `Ok(0)` when unset, an error naming the value when it is not
/// an integer number of seconds.
pub fn clock_offset_from_env() -> Result<i64, String> {
    match std::env::var(CLOCK_OFFSET_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(e) => Err(format!("{CLOCK_OFFSET_ENV}: {e}")),
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{CLOCK_OFFSET_ENV}={v:?} is not a whole number of seconds")),
    }
}

/// The start of the window of length `len` that contains `ts`.
pub fn window_start(ts: i64, len: i64) -> i64 {
    debug_assert!(len > 0);
    ts - ts.rem_euclid(len)
}

/// The start of the minute that contains `ts`.
pub fn minute_start(ts: i64) -> i64 {
    window_start(ts, MINUTE)
}

/// A roll-up resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    OneMinute,
    FiveMinutes,
    OneHour,
}

impl Resolution {
    pub const ALL: [Resolution; 3] = [Self::OneMinute, Self::FiveMinutes, Self::OneHour];

    /// Window length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::OneMinute => 60,
            Self::FiveMinutes => 300,
            Self::OneHour => 3600,
        }
    }

    /// Short name: `1m`, `5m`, `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneMinute => "1m",
            Self::FiveMinutes => "5m",
            Self::OneHour => "1h",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The start of this resolution's window that contains `ts`.
    pub fn start(self, ts: i64) -> i64 {
        window_start(ts, self.seconds())
    }

    /// The time one cold object of this resolution covers: an hour of 1m windows, a day of 5m
    /// windows, a week (epoch-aligned, 604800 s) of 1h windows.
    pub fn chunk_seconds(self) -> i64 {
        match self {
            Self::OneMinute => 3600,
            Self::FiveMinutes => 86_400,
            Self::OneHour => 604_800,
        }
    }

    /// The start of the chunk that contains `ts`.
    pub fn chunk_start(self, ts: i64) -> i64 {
        window_start(ts, self.chunk_seconds())
    }

    /// Position in [`Self::ALL`] (0 = 1m, 1 = 5m, 2 = 1h).
    pub fn index(self) -> usize {
        match self {
            Self::OneMinute => 0,
            Self::FiveMinutes => 1,
            Self::OneHour => 2,
        }
    }

    /// The next coarser resolution, the one rolled up from this one.
    pub fn coarser(self) -> Option<Resolution> {
        match self {
            Self::OneMinute => Some(Self::FiveMinutes),
            Self::FiveMinutes => Some(Self::OneHour),
            Self::OneHour => None,
        }
    }

    /// The next finer resolution, the one this resolution is rolled up from.
    pub fn finer(self) -> Option<Resolution> {
        match self {
            Self::OneMinute => None,
            Self::FiveMinutes => Some(Self::OneMinute),
            Self::OneHour => Some(Self::FiveMinutes),
        }
    }

    /// The coarsest resolution whose windows a step of `step` seconds is a multiple of.
    pub fn for_step(step: i64) -> Resolution {
        Self::ALL
            .into_iter()
            .rev()
            .find(|r| step % r.seconds() == 0)
            .unwrap_or(Self::OneMinute)
    }
}

/// The chunk starts of resolution `r` that overlap `[from, to)`.
pub fn chunks_in(r: Resolution, from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = r.chunk_start(from);
    let len = r.chunk_seconds();
    (0..)
        .map(move |i| first + i * len)
        .take_while(move |c| *c < to)
}

/// The minutes `[from, to)` covers, as minute starts: the first minute is the one containing `from`,
/// the last the one containing `to - 1`.
pub fn minutes_in(from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = minute_start(from);
    (0..)
        .map(move |i| first + i * MINUTE)
        .take_while(move |m| *m < to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_times_floor_towards_minus_infinity() {
        assert_eq!(minute_start(-1), -60);
        assert_eq!(minute_start(-60), -60);
        assert_eq!(minute_start(0), 0);
        assert_eq!(minute_start(119), 60);
        assert_eq!(Resolution::OneHour.start(7199), 3600);
        assert_eq!(Resolution::FiveMinutes.start(-1), -300);
    }

    #[test]
    fn minutes_in_is_half_open() {
        assert_eq!(minutes_in(60, 180).collect::<Vec<_>>(), vec![60, 120]);
        assert_eq!(minutes_in(61, 181).collect::<Vec<_>>(), vec![60, 120, 180]);
        assert_eq!(minutes_in(60, 60).count(), 0);
    }

    #[test]
    fn chunks_and_steps() {
        assert_eq!(Resolution::OneMinute.chunk_start(7199), 3600);
        assert_eq!(Resolution::OneHour.chunk_start(-1), -604_800);
        assert_eq!(Resolution::for_step(60), Resolution::OneMinute);
        assert_eq!(Resolution::for_step(600), Resolution::FiveMinutes);
        assert_eq!(Resolution::for_step(7200), Resolution::OneHour);
        assert_eq!(Resolution::for_step(90 * 60), Resolution::FiveMinutes);
        assert_eq!(
            chunks_in(Resolution::OneMinute, 3599, 7201).collect::<Vec<_>>(),
            vec![0, 3600, 7200]
        );
        assert_eq!(Resolution::OneHour.finer(), Some(Resolution::FiveMinutes));
    }

    #[test]
    fn resolution_names_round_trip() {
        for (i, r) in Resolution::ALL.into_iter().enumerate() {
            assert_eq!(Resolution::parse(r.as_str()), Some(r));
            assert_eq!(r.index(), i);
            assert_eq!(
                r.coarser().and_then(Resolution::finer),
                r.coarser().map(|_| r)
            );
        }
        assert_eq!(Resolution::parse("2m"), None);
    }
}
