//! Retention locks (WORM): a pool's or LSU's retention policy, each
//! committed image's unlock time and legal hold, and the one rule every
//! path that drops an image passes through ([`check_droppable`]): a
//! locked or held image is not dropped, whoever asks. Times are the
//! compliance clock's ([`super::clock`]), stamped into each write
//! transaction.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::tables::{LOCKS, META, WORM, XATTRS, dec, enc};
use super::{Catalog, CatalogError, ImageRec};

/// How strict a policy is: governance locks may be released by an
/// explicit, separately authenticated action; compliance locks by no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WormMode {
    Governance,
    Compliance,
}

/// A pool's retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WormPolicy {
    pub mode: WormMode,
    pub min_secs: u64,
    pub max_secs: u64,
    pub default_secs: u64,
    /// SHA-256 of the governance bypass credential (a file that is not
    /// the keystore's); none in compliance mode.
    pub bypass: Option<[u8; 32]>,
}

/// An image's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLock {
    /// Compliance-clock time until which the image is immutable.
    pub until_ns: i64,
    /// A legal hold and its reason: no deletion whatever the time.
    pub hold: Option<String>,
}

impl ImageLock {
    /// Whether the lock holds at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.hold.is_some() || self.until_ns > now
    }
}

/// Longest retention kmsfs takes: two hundred years (an unlock time in
/// nanoseconds stays well inside an i64, which ends in 2262).
pub const MAX_RETENTION_SECS: u64 = 200 * 365 * 86400;

/// A retention in nanoseconds (bounded by [`MAX_RETENTION_SECS`]).
pub fn secs_ns(secs: u64) -> i64 {
    (secs.min(MAX_RETENTION_SECS) as i64).saturating_mul(1_000_000_000)
}

/// The compliance-clock time stamped into this transaction.
pub(super) fn tx_now(tx: &redb::WriteTransaction) -> Result<i64, CatalogError> {
    let meta = tx.open_table(META)?;
    let v = meta.get("clock_ns")?.map(|v| v.value()).unwrap_or(0);
    Ok(v as i64)
}

/// Refuses to drop `img` while it is locked or held.
pub(super) fn check_droppable(
    tx: &redb::WriteTransaction,
    img: &ImageRec,
) -> Result<(), CatalogError> {
    let locks = tx.open_table(LOCKS)?;
    let Some(lock) = locks
        .get(img.id)?
        .map(|v| dec::<ImageLock>(v.value()))
        .transpose()?
    else {
        return Ok(());
    };
    drop(locks);
    if !lock.active(tx_now(tx)?) {
        tx.open_table(LOCKS)?.remove(img.id)?;
        return Ok(());
    }
    Err(CatalogError::Locked(describe(img, &lock)))
}

/// `image POOL/PATH is locked until TIME` (or on legal hold: REASON).
pub fn describe(img: &ImageRec, lock: &ImageLock) -> String {
    let name = format!("{}/{}", img.pool, img.path);
    match &lock.hold {
        Some(r) => format!("image {name} is on legal hold ({r})"),
        None => format!(
            "image {name} is locked until {}",
            crate::util::clock::iso_time((lock.until_ns.max(0) / 1_000_000_000) as u64)
        ),
    }
}

/// The extended attribute through which a retention is asked for one
/// image at write time (`setfattr`, `tar --xattrs`, `rsync -X`): an unlock
/// time, as Unix seconds or `2027-01-01T00:00:00Z`, within the pool's
/// minimum and maximum. On a locked image it only extends the lock.
pub const RETAIN_XATTR: &str = "user.kmsfs.retain_until";

/// The unlock time asked for through [`RETAIN_XATTR`] on inode `ino`.
fn requested(tx: &redb::WriteTransaction, ino: u64) -> Result<Option<i64>, CatalogError> {
    let x = tx.open_table(XATTRS)?;
    let v = x.get((ino, RETAIN_XATTR))?;
    Ok(v.and_then(|v| std::str::from_utf8(v.value()).ok().and_then(parse_until)))
}

/// An unlock time in compliance-clock nanoseconds from the text of
/// [`RETAIN_XATTR`].
pub fn parse_until(text: &str) -> Option<i64> {
    crate::util::clock::parse_time(text)
        .filter(|s| *s <= i64::MAX as u64 / 1_000_000_000)
        .map(|s| s as i64 * 1_000_000_000)
}

/// The pool's policy.
fn policy_of(tx: &redb::WriteTransaction, pool: &str) -> Result<Option<WormPolicy>, CatalogError> {
    tx.open_table(WORM)?
        .get(pool)?
        .map(|v| dec::<WormPolicy>(v.value()))
        .transpose()
}

/// Locks a newly committed image (inode `ino`) when its pool has a
/// policy: until the time asked for through [`RETAIN_XATTR`], held within
/// the policy's bounds, or else the policy's default. An empty image is
/// not locked: it holds no data, and `tar --xattrs` makes each file empty
/// (mknod) before it writes it.
pub(super) fn lock_new(
    tx: &redb::WriteTransaction,
    img: &ImageRec,
    ino: u64,
) -> Result<(), CatalogError> {
    let Some(p) = policy_of(tx, &img.pool)? else {
        return Ok(());
    };
    if img.size == 0 {
        return Ok(());
    }
    let now = tx_now(tx)?;
    // A request stays for the re-commits of this version (checkpoints);
    // a new version written over a non-empty image forgets it
    // ([`Catalog::forget_retention`]). One already past means nothing.
    let until = match requested(tx, ino)?.filter(|t| *t > now) {
        Some(t) => t
            .max(now.saturating_add(secs_ns(p.min_secs)))
            .min(now.saturating_add(secs_ns(p.max_secs))),
        None => now.saturating_add(secs_ns(p.default_secs)),
    };
    let until = ceil_secs(until);
    let mut locks = tx.open_table(LOCKS)?;
    let cur = locks
        .get(img.id)?
        .map(|v| dec::<ImageLock>(v.value()))
        .transpose()?;
    // A checkpoint re-commits the image: it keeps a later time (extended
    // meanwhile) and its hold.
    let (until_ns, hold) = match cur {
        Some(l) => (l.until_ns.max(until), l.hold),
        None => (until, None),
    };
    locks.insert(img.id, enc(&ImageLock { until_ns, hold }).as_slice())?;
    Ok(())
}

/// `ns` rounded up to a whole second: unlock times are shown in seconds,
/// and a time shown can be asked for again.
fn ceil_secs(ns: i64) -> i64 {
    ns.saturating_add(999_999_999)
        .div_euclid(1_000_000_000)
        .saturating_mul(1_000_000_000)
}

/// Whether `until` lies within `pool`'s bounds at `now`.
fn check_bounds(pool: &str, p: &WormPolicy, now: i64, until: i64) -> Result<(), CatalogError> {
    let at = |ns: i64| crate::util::clock::iso_time((ns.max(0) / 1_000_000_000) as u64);
    let (lo, hi) = (
        now.saturating_add(secs_ns(p.min_secs)),
        now.saturating_add(secs_ns(p.max_secs)),
    );
    if until < lo || until > hi {
        return Err(CatalogError::Invalid(format!(
            "retention of an image in {pool}: {} is outside the policy's bounds, {} to {}",
            at(until),
            at(lo),
            at(hi)
        )));
    }
    Ok(())
}

/// The image committed at inode `ino`, if it is one.
fn committed_image(
    tx: &redb::WriteTransaction,
    ino: u64,
) -> Result<Option<ImageRec>, CatalogError> {
    let inode = tx
        .open_table(super::tables::INODES)?
        .get(ino)?
        .map(|v| dec::<super::Inode>(v.value()))
        .transpose()?;
    let Some(super::Inode {
        kind: super::InodeKind::Image(id),
        ..
    }) = inode
    else {
        return Ok(None);
    };
    let images = tx.open_table(super::tables::IMAGES)?;
    images.get(id)?.map(|v| dec(v.value())).transpose()
}

/// The unlock time of `img`'s active lock if it already ends at
/// `until_ns` (to the second): a request that changes nothing.
fn covered(
    tx: &redb::WriteTransaction,
    img: &ImageRec,
    now: i64,
    until_ns: i64,
) -> Result<Option<i64>, CatalogError> {
    let locks = tx.open_table(LOCKS)?;
    let cur = locks
        .get(img.id)?
        .map(|v| dec::<ImageLock>(v.value()))
        .transpose()?;
    let secs = |ns: i64| ns.div_euclid(1_000_000_000);
    Ok(cur
        .filter(|l| l.active(now) && secs(l.until_ns) == secs(until_ns))
        .map(|l| l.until_ns))
}

/// Extends `img`'s lock to `until_ns` (refused if an active lock ends
/// later, to the second); returns the unlock time.
fn extend_lock(
    tx: &redb::WriteTransaction,
    img: &ImageRec,
    now: i64,
    until_ns: i64,
) -> Result<i64, CatalogError> {
    let mut locks = tx.open_table(LOCKS)?;
    let cur = locks
        .get(img.id)?
        .map(|v| dec::<ImageLock>(v.value()))
        .transpose()?;
    let secs = |ns: i64| ns.div_euclid(1_000_000_000);
    let (until_ns, hold) = match cur {
        Some(l) if l.active(now) && secs(l.until_ns) > secs(until_ns) => {
            return Err(CatalogError::Locked(format!(
                "{}: a retention is only extended",
                describe(img, &l)
            )));
        }
        Some(l) => (l.until_ns.max(until_ns), l.hold),
        None => (until_ns, None),
    };
    locks.insert(img.id, enc(&ImageLock { until_ns, hold }).as_slice())?;
    Ok(until_ns)
}

/// Whether `new` is no weaker than `old`: the mode only goes stricter,
/// and in compliance mode the bounds only grow.
fn check_stricter(pool: &str, old: &WormPolicy, new: &WormPolicy) -> Result<(), CatalogError> {
    let refuse = |why: &str| Err(CatalogError::Locked(format!("retention of {pool}: {why}")));
    if new.mode < old.mode {
        return refuse("compliance mode cannot go back to governance");
    }
    if old.mode == WormMode::Compliance
        && (new.min_secs < old.min_secs || new.max_secs < old.max_secs)
    {
        return refuse("in compliance mode the minimum and maximum only grow");
    }
    Ok(())
}

impl Catalog {
    /// Sets a pool's retention policy (only ever stricter, unless the
    /// policy is governance and `proof` is the SHA-256 of its bypass
    /// credential: then it may also be loosened or get a new credential).
    pub fn set_worm(
        &self,
        pool: &str,
        mut p: WormPolicy,
        proof: Option<&[u8; 32]>,
    ) -> Result<WormPolicy, CatalogError> {
        if p.max_secs > MAX_RETENTION_SECS {
            return Err(CatalogError::Invalid(format!(
                "retention of {pool}: at most {MAX_RETENTION_SECS} s (two hundred years)"
            )));
        }
        if !(p.min_secs <= p.default_secs && p.default_secs <= p.max_secs) {
            return Err(CatalogError::Invalid(format!(
                "retention of {pool}: the default must lie between the minimum and the maximum"
            )));
        }
        let tx = self.begin()?;
        {
            let mut t = tx.open_table(WORM)?;
            let old = t
                .get(pool)?
                .map(|v| dec::<WormPolicy>(v.value()))
                .transpose()?;
            if let Some(old) = &old {
                check_stricter(pool, old, &p)?;
                let proven = matches!((old.bypass, proof), (Some(b), Some(pr))
                    if bool::from(subtle::ConstantTimeEq::ct_eq(&b[..], &pr[..])));
                let looser = p.mode == WormMode::Governance
                    && (p.min_secs < old.min_secs
                        || p.max_secs < old.max_secs
                        || p.default_secs < old.default_secs);
                let new_credential = p.bypass.is_some() && p.bypass != old.bypass;
                if (looser || new_credential) && old.bypass.is_some() && !proven {
                    return Err(CatalogError::Locked(format!(
                        "retention of {pool}: loosening a governance policy or changing its \
                         bypass credential needs the current one (--governance-bypass)"
                    )));
                }
                p.bypass = p.bypass.or(old.bypass);
            }
            if p.mode == WormMode::Compliance {
                p.bypass = None;
            }
            t.insert(pool, enc(&p).as_slice())?;
        }
        super::tables::commit(tx)?;
        Ok(p)
    }

    /// Every pool's policy.
    pub fn worms(&self) -> Result<Vec<(String, WormPolicy)>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(WORM)?;
        t.iter()?
            .map(|e| {
                let (k, v) = e?;
                Ok((k.value().to_string(), dec(v.value())?))
            })
            .collect()
    }

    /// The lock of an image, if any.
    pub fn lock_of(&self, id: u128) -> Result<Option<ImageLock>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(LOCKS)?;
        t.get(id)?.map(|v| dec(v.value())).transpose()
    }

    /// Every lock.
    pub fn locks(&self) -> Result<Vec<(u128, ImageLock)>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(LOCKS)?;
        t.iter()?
            .map(|e| {
                let (k, v) = e?;
                Ok((k.value(), dec(v.value())?))
            })
            .collect()
    }

    /// Why `id` may not change now (locked or held), if it may not.
    pub fn locked(&self, img: &ImageRec) -> Result<Option<String>, CatalogError> {
        Ok(self
            .lock_of(img.id)?
            .filter(|l| l.active(self.clock.now_ns()))
            .map(|l| describe(img, &l)))
    }

    /// Changes an image's lock with `f` in one transaction.
    fn change_lock(
        &self,
        id: u128,
        f: impl FnOnce(
            Option<ImageLock>,
            Option<WormPolicy>,
            i64,
        ) -> Result<Option<ImageLock>, CatalogError>,
    ) -> Result<Option<ImageLock>, CatalogError> {
        let tx = self.begin()?;
        let out = {
            let img: ImageRec = dec(tx
                .open_table(super::tables::IMAGES)?
                .get(id)?
                .ok_or_else(|| CatalogError::NotFound(format!("image {id:032x}")))?
                .value())?;
            let policy = tx
                .open_table(WORM)?
                .get(img.pool.as_str())?
                .map(|v| dec::<WormPolicy>(v.value()))
                .transpose()?;
            let mut locks = tx.open_table(LOCKS)?;
            let cur = locks
                .get(id)?
                .map(|v| dec::<ImageLock>(v.value()))
                .transpose()?;
            let now = tx_now(&tx)?;
            let new = f(cur, policy, now)?;
            match &new {
                Some(l) => locks.insert(id, enc(l).as_slice()).map(|_| ())?,
                None => locks.remove(id).map(|_| ())?,
            }
            new
        };
        super::tables::commit(tx)?;
        Ok(out)
    }

    /// Puts an image on legal hold.
    pub fn hold(&self, id: u128, reason: &str) -> Result<(), CatalogError> {
        self.change_lock(id, |cur, _, _| {
            let until_ns = cur.map(|l| l.until_ns).unwrap_or(0);
            Ok(Some(ImageLock {
                until_ns,
                hold: Some(reason.to_string()),
            }))
        })
        .map(|_| ())
    }

    /// Lifts a legal hold (the retention time stays).
    pub fn unhold(&self, id: u128) -> Result<(), CatalogError> {
        self.change_lock(id, |cur, _, _| {
            Ok(cur.map(|l| ImageLock { hold: None, ..l }))
        })
        .map(|_| ())
    }

    /// Extends an image's retention to `until_ns` (never shortens it).
    pub fn extend(&self, id: u128, until_ns: i64) -> Result<(), CatalogError> {
        self.change_lock(id, |cur, _, _| {
            let cur = cur.unwrap_or(ImageLock {
                until_ns: 0,
                hold: None,
            });
            Ok(Some(ImageLock {
                until_ns: cur.until_ns.max(until_ns),
                ..cur
            }))
        })
        .map(|_| ())
    }

    /// Releases a governance lock with the bypass credential whose SHA-256
    /// is `proof`; refused in compliance mode or with a wrong credential.
    pub fn release(&self, id: u128, proof: &[u8; 32]) -> Result<(), CatalogError> {
        self.change_lock(id, |cur, policy, _| {
            let refuse = |why: &str| Err(CatalogError::Locked(format!("image {id:032x}: {why}")));
            match policy {
                Some(WormPolicy {
                    mode: WormMode::Governance,
                    bypass: Some(b),
                    ..
                }) if bool::from(subtle::ConstantTimeEq::ct_eq(&b[..], &proof[..])) => {}
                Some(WormPolicy {
                    mode: WormMode::Compliance,
                    ..
                }) => return refuse("compliance locks are never released"),
                _ => return refuse("the governance bypass credential does not match"),
            }
            Ok(cur.and_then(|l| {
                l.hold.map(|h| ImageLock {
                    until_ns: 0,
                    hold: Some(h),
                })
            }))
        })
        .map(|_| ())
    }

    /// Asks that the image at inode `ino` in `pool` be kept until
    /// `until_ns` ([`RETAIN_XATTR`]): within the pool's bounds; kept with
    /// the inode for its commits, and applied at once to image `image` if
    /// it is the non-empty image committed at the inode now (not an older
    /// version a writer is replacing). A lock is only extended: a time
    /// before an active lock's (to the second) is refused, the same time
    /// is no change. Returns the unlock time in force.
    pub fn request_retention(
        &self,
        ino: u64,
        pool: &str,
        image: Option<u128>,
        until_ns: i64,
    ) -> Result<i64, CatalogError> {
        let tx = self.begin()?;
        let out = {
            let p = policy_of(&tx, pool)?.ok_or_else(|| {
                CatalogError::Invalid(format!(
                    "{pool} has no retention policy (kmsfs worm set): {RETAIN_XATTR} means nothing there"
                ))
            })?;
            let now = tx_now(&tx)?;
            let img = committed_image(&tx, ino)?.filter(|i| i.size > 0 && Some(i.id) == image);
            if let Some(img) = &img
                && let Some(t) = covered(&tx, img, now, until_ns)?
            {
                return Ok(t);
            }
            check_bounds(pool, &p, now, until_ns)?;
            let text = crate::util::clock::iso_time((until_ns / 1_000_000_000) as u64);
            tx.open_table(XATTRS)?
                .insert((ino, RETAIN_XATTR), text.as_bytes())?;
            match img {
                Some(img) => extend_lock(&tx, &img, now, until_ns)?,
                None => until_ns,
            }
        };
        super::tables::commit(tx)?;
        Ok(out)
    }

    /// Forgets the retention asked for the image at `ino`: a new version
    /// is written over a non-empty one, and a request left from the old
    /// one (or planted on it) must not cut the new one's retention.
    pub fn forget_retention(&self, ino: u64) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.open_table(XATTRS)?.remove((ino, RETAIN_XATTR))?;
        super::tables::commit(tx)
    }

    /// The skew kept in `db` (the default if none was set).
    pub(super) fn skew_in(db: &redb::Database) -> Result<i64, CatalogError> {
        let rx = db.begin_read()?;
        let meta = rx.open_table(META)?;
        let secs = meta.get("clock_skew_secs")?.map(|v| v.value());
        Ok(secs.map_or(super::clock::SKEW_NS, |s| {
            secs_ns(s).min(super::clock::SKEW_NS)
        }))
    }

    /// How far ahead of the store's last time the system clock is believed
    /// after a reboot, in ns.
    pub fn clock_skew(&self) -> Result<i64, CatalogError> {
        Self::skew_in(&self.db)
    }

    /// Sets that skew (from the next open of the store): only ever lower,
    /// from the default of a day.
    pub fn set_clock_skew(&self, secs: u64) -> Result<(), CatalogError> {
        let most = super::clock::SKEW_NS / 1_000_000_000;
        if secs > most as u64 {
            return Err(CatalogError::Invalid(format!(
                "a clock skew of {secs} s: at most {most} s (a day); a longer one would let \
                 each reboot wind the retention clock further forward"
            )));
        }
        let tx = self.begin()?;
        {
            let mut meta = tx.open_table(META)?;
            let now = meta
                .get("clock_skew_secs")?
                .map_or(most as u64, |v| v.value().min(most as u64));
            if secs > now {
                return Err(CatalogError::Locked(format!(
                    "the clock skew is {now} s: it is only lowered (a larger one would let a \
                     reboot wind the retention clock further forward)"
                )));
            }
            meta.insert("clock_skew_secs", secs)?;
        }
        super::tables::commit(tx)
    }

    /// Believes the system clock from now on (`worm clock --confirm`).
    pub fn confirm_clock(&self) -> Result<i64, CatalogError> {
        self.confirm_clock_to(super::clock::system_ns())
    }

    /// Moves the compliance clock to `to` (never back) and every active
    /// lock by as much, in one transaction: a confirmed jump corrects the
    /// clock and expires nothing.
    pub fn confirm_clock_to(&self, to: i64) -> Result<i64, CatalogError> {
        let before = self.clock.now_ns();
        let tx = self.db.begin_write()?;
        let moved = self.clock.confirm_to(to);
        {
            let mut locks = tx.open_table(LOCKS)?;
            let mut active = Vec::new();
            for e in locks.iter()? {
                let (k, v) = e?;
                let l: ImageLock = dec(v.value())?;
                if l.until_ns > before {
                    active.push((k.value(), l));
                }
            }
            for (id, mut l) in active {
                l.until_ns = l.until_ns.saturating_add(moved);
                locks.insert(id, enc(&l).as_slice())?;
            }
            let now = self.clock.now_ns().max(0) as u64;
            tx.open_table(META)?.insert("clock_ns", now)?;
        }
        super::tables::commit(tx)?;
        Ok(self.clock.now_ns())
    }

    /// The compliance clock.
    pub fn clock(&self) -> &super::clock::ComplianceClock {
        &self.clock
    }
}
