//! The one retry policy of every KMS backend: exponential backoff from
//! 100 ms, doubling up to 2 s between attempts, never past the store's KMS
//! timeout (`kms_timeout`) from the first attempt. The embedded keystore's
//! [`super::Retrying`] and the KMIP client's rounds over its servers both
//! wait through it, so an outage costs the same bounded time whichever
//! backend answers.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(100);
const MOST: Duration = Duration::from_secs(2);

/// Attempts of one call, bounded by a budget.
pub struct Backoff {
    start: Instant,
    delay: Duration,
    budget: Duration,
}

impl Backoff {
    /// Starts the clock of one call allowed `budget` in all.
    pub fn new(budget: Duration) -> Self {
        Self {
            start: Instant::now(),
            delay: FIRST,
            budget,
        }
    }

    /// Time since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether the budget is spent.
    pub fn spent(&self) -> bool {
        self.elapsed() >= self.budget
    }

    /// The wait before the next attempt, taken; `false` (and no wait) if
    /// the attempt after it would start past the budget.
    pub fn wait(&mut self) -> bool {
        if self.elapsed() + self.delay > self.budget {
            return false;
        }
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(MOST);
        true
    }

    /// The wait `wait` would take next (for the log).
    pub fn next_delay(&self) -> Duration {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_and_stop_at_the_budget() {
        let mut b = Backoff::new(Duration::from_millis(750));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert!(b.wait());
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        assert!(b.wait());
        assert_eq!(b.next_delay(), Duration::from_millis(400));
        assert!(b.wait(), "300 + 400 ms fits 750 ms");
        assert!(!b.wait(), "300 + 400 + 800 ms does not");
        assert!(b.elapsed() < Duration::from_millis(1500));
    }
}
