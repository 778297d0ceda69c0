//! A per-route circuit breaker for the service side: after N consecutive failures it opens and
//! sends the route's traffic to the monolith; after a pause one trial request may go to the
//! service, and its outcome closes or reopens the circuit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_out: bool },
}

/// The breaker of one route.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

/// What the breaker says, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `open_ms`.
    pub fn new(threshold: u32, open_ms: u64) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for: Duration::from_millis(open_ms),
        }
    }

    /// (threshold, open_ms), to tell whether a reload changed the settings.
    pub fn settings(&self) -> (u32, u64) {
        (self.threshold, self.open_for.as_millis() as u64)
    }

    /// Whether a request may go to the service now (a half-open breaker lets one through).
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().expect("breaker lock");
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen { trial_out: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { trial_out: false } => {
                *s = State::HalfOpen { trial_out: true };
                true
            }
            State::HalfOpen { trial_out: true } => false,
        }
    }

    /// Records the outcome of a request sent to the service; returns the new state.
    pub fn record(&self, success: bool) -> BreakerState {
        let mut s = self.state.lock().expect("breaker lock");
        *s = match (*s, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => State::Open {
                until: Instant::now() + self.open_for,
            },
        };
        Self::public(*s)
    }

    fn public(s: State) -> BreakerState {
        match s {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        Self::public(*self.state.lock().expect("breaker lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        let b = Breaker::new(3, 30);
        assert!(b.allow());
        b.record(false);
        b.record(false);
        b.record(true); // a success resets the count
        b.record(false);
        b.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.record(false), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one trial after the pause");
        assert!(!b.allow(), "only one trial at a time");
        assert_eq!(
            b.record(false),
            BreakerState::Open,
            "a failed trial reopens"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        assert_eq!(b.record(true), BreakerState::Closed);
        assert!(b.allow());
    }
}
