//! The compliance clock: the time retention locks are judged by. It never
//! goes backwards and cannot be wound forward to expire locks: it starts
//! from the last time the store saw (kept in the catalog), believes the
//! system clock only when it is ahead by less than [`SKEW`], and then
//! advances by the monotonic clock. A larger jump forward waits for an
//! explicit `kmsfs worm clock --confirm`, which moves every active lock
//! along with it, so no jump of the clock expires a lock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use sha2::Digest;

/// How far ahead of the store's last time the system clock may be and
/// still be believed at the first open after a reboot (a machine off over
/// night), unless the store is set to less (`kmsfs worm clock --skew`);
/// within one boot, only the real time that passed is believed. It is
/// also the most a store may be set to: a longer skew would let every
/// reboot wind the locks' clock further forward.
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

/// Nanoseconds since boot, counting suspend (CLOCK_BOOTTIME), and this
/// boot's id: together they say how much real time passed since the store
/// last stamped its clock in the same boot, whatever the wall clock says.
pub fn boot() -> (u64, i64) {
    static ID: std::sync::OnceLock<(u64, bool)> = std::sync::OnceLock::new();
    let (id, timens) = *ID.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let id = u64::from_le_bytes(
            sha2::Sha256::digest(id.trim().as_bytes())[..8]
                .try_into()
                .expect("8 bytes"),
        );
        (id, own_time_namespace())
    });
    // In a time namespace of its own CLOCK_BOOTTIME can be offset at will:
    // its reading is not given (0: unknown), and [`starting_point`]
    // believes no time passed within the boot.
    (id, if timens { 0 } else { boottime_ns() })
}

/// The inode of the initial time namespace (PROC_TIME_INIT_INO).
const TIME_INIT_INO: &str = "time:[4026531834]";

/// Whether this process runs in a time namespace other than the initial
/// one (where the boot clock may be offset at will). A kernel without
/// time namespaces has none; any other doubt counts as one.
fn own_time_namespace() -> bool {
    match std::fs::read_link("/proc/self/ns/time") {
        Ok(link) => link.as_os_str() != TIME_INIT_INO,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

#[allow(unsafe_code)]
fn boottime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// Where the store's clock stood when it was last stamped.
#[derive(Debug, Clone, Copy)]
pub struct LastStamp {
    pub clock_ns: i64,
    pub boot_id: u64,
    pub boottime_ns: i64,
}

/// The clock of one open store.
pub struct ComplianceClock {
    base_ns: AtomicI64,
    base: Mutex<Instant>,
    /// How far ahead the system clock was at open, when not believed.
    refused_ns: AtomicI64,
}

/// Where the clock starts: the store's last time, moved forward by the
/// system clock only as far as real time can have passed (in the same
/// boot: the boot clock's advance; after a reboot: at most `skew`).
fn starting_point(
    last: Option<LastStamp>,
    sys: i64,
    now_boot: (u64, i64),
    skew: i64,
) -> (i64, i64) {
    let Some(last) = last else { return (sys, 0) };
    // Exactly the real time that passed: a slack added at every open
    // would add up over many opens.
    let same_boot = last.boot_id == now_boot.0;
    let room = if same_boot && (now_boot.1 == 0 || last.boottime_ns == 0) {
        0 // a boot clock not known on one side (a time namespace)
    } else if same_boot && now_boot.1 >= last.boottime_ns {
        now_boot.1 - last.boottime_ns
    } else {
        skew
    };
    let believed = last.clock_ns.saturating_add(room);
    if sys <= last.clock_ns {
        (last.clock_ns, 0)
    } else if sys <= believed {
        (sys, 0)
    } else {
        (believed.min(sys).max(last.clock_ns), sys - believed)
    }
}

impl ComplianceClock {
    /// Starts from `last`, the store's last stamp (none: a new store),
    /// believing after a reboot at most `skew` ns ahead of it.
    pub fn start(last: Option<LastStamp>, skew: i64) -> Self {
        let skew = skew.clamp(0, SKEW_NS);
        if own_time_namespace() {
            tracing::warn!(
                "kmsfs runs in a time namespace of its own: the boot clock is not believed, \
                 and the compliance clock advances only while the daemon runs"
            );
        }
        let (base, refused) = starting_point(last, system_ns(), boot(), skew);
        if refused >= 1_000_000_000 {
            tracing::warn!(
                ahead_secs = refused / 1_000_000_000,
                "the system clock is further ahead of the store's compliance clock than real \
                 time can have passed: not believed (kmsfs worm clock --confirm moves the clock; \
                 locks keep their remaining time)"
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

    /// Moves the clock to `to` (never backwards). Returns how far it moved:
    /// the caller moves every active lock by as much, so a confirmed jump
    /// expires nothing.
    pub fn confirm_to(&self, to: i64) -> i64 {
        let mut base = self.base.lock();
        let now = self
            .base_ns
            .load(Ordering::SeqCst)
            .saturating_add(base.elapsed().as_nanos() as i64);
        let to = to.max(now);
        self.base_ns.store(to, Ordering::SeqCst);
        *base = Instant::now();
        self.refused_ns.store(0, Ordering::SeqCst);
        to - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_believes_no_more_time_than_has_passed() {
        let sys = system_ns();
        let boot = (7, 5_000_000_000_000);
        let stamp = |clock_ns, boot_id, boottime_ns| {
            Some(LastStamp {
                clock_ns,
                boot_id,
                boottime_ns,
            })
        };
        // Set back: the store's time stands.
        let future = sys + 10 * SKEW_NS;
        assert_eq!(
            starting_point(stamp(future, 7, 0), sys, boot, SKEW_NS).0,
            future
        );
        // Same boot, an hour of real time: an hour ahead is believed, a
        // day is not (winding forward a day at every open gains nothing).
        let hour = 3_600_000_000_000;
        let last = sys - hour;
        let b = boot.1 - hour;
        assert_eq!(
            starting_point(stamp(last, 7, b), sys, boot, SKEW_NS),
            (sys, 0)
        );
        let (at, refused) = starting_point(stamp(last, 7, b), sys + SKEW_NS, boot, SKEW_NS);
        assert!(at <= sys + 1_000_000_000 && refused > SKEW_NS - hour - 2_000_000_000);
        // Another boot: at most a day.
        let (at, refused) = starting_point(stamp(last, 8, b), sys + 10 * SKEW_NS, boot, SKEW_NS);
        assert_eq!(at, last + SKEW_NS);
        assert!(refused > 9 * SKEW_NS);
        // The boot clock unknown on either side (a time namespace) within
        // one boot: no time believed.
        assert_eq!(
            starting_point(stamp(last, 7, 0), sys, boot, SKEW_NS).0,
            last
        );
        assert_eq!(
            starting_point(stamp(last, 7, b), sys, (7, 0), SKEW_NS).0,
            last
        );
        // A store set to believe an hour after a reboot: an hour.
        let (at, _) = starting_point(stamp(last - hour, 8, b), sys, boot, hour);
        assert_eq!(at, last);
        let c = ComplianceClock::start(None, SKEW_NS);
        let before = c.now_ns();
        assert!(c.confirm_to(before + hour) >= hour - 1_000_000_000);
        assert_eq!(c.confirm_to(0), 0, "never backwards");
    }
}
