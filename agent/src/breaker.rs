//! The sender's circuit breaker: after `breaker_failures` failed sends in a row (time-outs,
//! connection errors, 5xx; not a 429, which is the partitioner pacing a tenant) it opens and the
//! sender sends nothing for `breaker_open_ms`; then it is half-open: one send probes the
//! partitioner, closing the breaker on success or opening it again on failure. So a partitioner
//! that is down gets one request per `breaker_open_ms` from each agent, whatever the backlog.
//! Its state is the gauge `thermo_agent_breaker_state` (0 closed, 1 open, 2 half-open), and
//! `thermo_agent_breaker_opens_total` counts the times it opened.

use std::time::Duration;
use tokio::time::Instant;

/// How often a send waiting for the probe's answer looks again.
const PROBE_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl State {
    /// The gauge's value.
    pub fn code(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open { .. } => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// A breaker over consecutive failures.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    state: State,
    /// Half-open with its probe sent: the other sends wait for its answer.
    probing: bool,
}

impl Breaker {
    /// Opens after `threshold` failures in a row (at least 1), for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            state: State::Closed,
            probing: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// How long to wait before the next send may go (`None`: now). An open breaker past its
    /// time becomes half-open: the next send is the probe, and the others wait for its answer.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open { until } if now < until => Some(until - now),
            State::Open { .. } => {
                self.state = State::HalfOpen;
                self.probing = true;
                None
            }
            State::HalfOpen if self.probing => Some(PROBE_POLL),
            State::HalfOpen => {
                self.probing = true;
                None
            }
            State::Closed => None,
        }
    }

    /// Whether sends go at will (more than one at a time).
    pub fn closed(&self) -> bool {
        self.state == State::Closed
    }

    /// A send reached the partitioner (any answer but a 5xx).
    pub fn success(&mut self) {
        self.probing = false;
        self.failures = 0;
        self.state = State::Closed;
    }

    /// A send failed; true when the breaker opened because of it.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.probing = false;
        self.failures = self.failures.saturating_add(1);
        let open = matches!(self.state, State::HalfOpen) || self.failures >= self.threshold;
        if open {
            self.state = State::Open {
                until: now + self.open_for,
            };
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut b = Breaker::new(3, 10 * s);
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        b.success();
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert_eq!(b.wait(t0), None);
        assert!(b.failure(t0), "third in a row");
        assert_eq!(b.state().code(), 1);
        assert_eq!(b.wait(t0 + 4 * s), Some(6 * s));
        assert_eq!(b.wait(t0 + 10 * s), None);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.wait(t0 + 10 * s), Some(PROBE_POLL), "one probe at a time");
        assert!(b.failure(t0 + 10 * s), "a failed probe opens it again");
        assert_eq!(b.wait(t0 + 15 * s), Some(5 * s));
        assert_eq!(b.wait(t0 + 20 * s), None);
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert!(!b.failure(t0 + 21 * s), "counting starts again");
    }
}
