//! The compliance clock: the time retention locks are judged by. It never
//! goes backwards and cannot be wound forward to expire locks: it starts
//! from the last time the store saw (kept in the catalog), believes the
//! system clock only when it is ahead by less than [`SKEW`], and then
//! advances by the monotonic clock. A larger jump forward waits for an
//! explicit `kmsfs worm clock --confirm`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// How far ahead of the store's last time the system clock may be and
/// still be believed at open (a machine off for a weekend).
pub const SKEW_NS: i64 = 24 * 3600 * 1_000_000_000;

/// The system clock as kmsfs reads it. Test builds (the `failpoints`
/// feature) may shift it by `KMSFS_TEST_CLOCK_OFFSET_SECS`, to show that
/// a clock wound forward expires nothing; a release build has no override.
pub fn system_ns() -> i64 {
    let now = crate::util::clock::now_ns();
    #[cfg(feature = "failpoints")]
    {
        let offset: i64 = std::env::var("KMSFS_TEST_CLOCK_OFFSET_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        now.saturating_add(offset.saturating_mul(1_000_000_000))
    }
    #[cfg(not(feature = "failpoints"))]
    now
}

/// The clock of one open store.
pub struct ComplianceClock {
    base_ns: AtomicI64,
    base: Mutex<Instant>,
    /// How far ahead the system clock was at open, when not believed.
    refused_ns: AtomicI64,
}

impl ComplianceClock {
    /// Starts from `last`, the store's last time (none: a new store).
    pub fn start(last: Option<i64>) -> Self {
        let sys = system_ns();
        let (base, refused) = match last {
            None => (sys, 0),
            Some(last) if sys < last => (last, 0),
            Some(last) if sys - last > SKEW_NS => (last, sys - last),
            Some(_) => (sys, 0),
        };
        if refused > 0 {
            tracing::warn!(
                ahead_secs = refused / 1_000_000_000,
                "the system clock is ahead of the store's compliance clock by more than a day: \
                 not believed until `kmsfs worm clock --confirm`"
            );
        }
        Self {
            base_ns: AtomicI64::new(base),
            base: Mutex::new(Instant::now()),
            refused_ns: AtomicI64::new(refused),
        }
    }

    /// Now, by the compliance clock.
    pub fn now_ns(&self) -> i64 {
        let elapsed = self.base.lock().elapsed().as_nanos() as i64;
        self.base_ns.load(Ordering::SeqCst).saturating_add(elapsed)
    }

    /// How far ahead the system clock was when the store opened, if it
    /// was not believed (0: believed).
    pub fn refused_ns(&self) -> i64 {
        self.refused_ns.load(Ordering::SeqCst)
    }

    /// Believes the system clock from now on (an audited operator action);
    /// never moves the clock backwards. Returns the new time.
    pub fn confirm(&self) -> i64 {
        let mut base = self.base.lock();
        let now = self
            .base_ns
            .load(Ordering::SeqCst)
            .saturating_add(base.elapsed().as_nanos() as i64);
        let to = system_ns().max(now);
        self.base_ns.store(to, Ordering::SeqCst);
        *base = Instant::now();
        self.refused_ns.store(0, Ordering::SeqCst);
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_goes_back_and_a_big_jump_forward_waits_for_confirmation() {
        let sys = system_ns();
        let future = sys + 10 * SKEW_NS;
        let c = ComplianceClock::start(Some(future));
        assert!(
            c.now_ns() >= future,
            "a clock behind the store's time is not believed"
        );
        let past = sys - 10 * SKEW_NS;
        let c = ComplianceClock::start(Some(past));
        assert!(
            c.now_ns() < past + SKEW_NS,
            "a jump of ten days is not believed"
        );
        assert!(c.refused_ns() > 9 * SKEW_NS);
        assert!(c.confirm() >= sys);
        assert_eq!(c.refused_ns(), 0);
        let near = sys - 3_600_000_000_000;
        let c = ComplianceClock::start(Some(near));
        assert!(c.now_ns() >= sys, "an hour ahead is believed");
    }
}
