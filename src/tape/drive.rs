//! Virtual tape drives. A drive is taken for a job, loaded with a volume,
//! put into encryption mode by registering a key and its tag, and returned
//! empty and in clear mode when the job ends: [`DriveGuard`]'s drop
//! unregisters the key, so a drive never holds a key when idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::TapeError;
use crate::crypto::SecretKey;

#[derive(Default)]
struct Drive {
    busy: bool,
    job: &'static str,
    volume: Option<String>,
    pool: Option<String>,
    tag: Option<String>,
    key: Option<SecretKey>,
}

/// The drives of the library.
pub struct DrivePool {
    drives: Mutex<Vec<Drive>>,
    freed: Condvar,
    wait: Duration,
}

impl DrivePool {
    pub fn new(count: u32, wait: Duration) -> Arc<Self> {
        let drives = (0..count.max(1)).map(|_| Drive::default()).collect();
        Arc::new(Self {
            drives: Mutex::new(drives),
            freed: Condvar::new(),
            wait,
        })
    }

    /// Number of drives.
    pub fn count(&self) -> usize {
        self.drives.lock().len()
    }

    /// Takes a free drive, waiting at most the configured time (then EBUSY).
    pub fn acquire(self: &Arc<Self>, job: &'static str) -> Result<DriveGuard, TapeError> {
        let deadline = Instant::now() + self.wait;
        let mut drives = self.drives.lock();
        loop {
            if let Some(i) = drives.iter().position(|d| !d.busy) {
                drives[i].busy = true;
                drives[i].job = job;
                return Ok(DriveGuard {
                    pool: self.clone(),
                    index: i,
                });
            }
            if self.freed.wait_until(&mut drives, deadline).timed_out() {
                tracing::warn!(waited = ?self.wait, "no virtual drive free");
                return Err(TapeError::DriveBusy {
                    secs: self.wait.as_secs(),
                });
            }
        }
    }

    /// The status text of drive `i` (never the key).
    pub fn status(&self, i: usize) -> Option<String> {
        let drives = self.drives.lock();
        let d = drives.get(i)?;
        let none = || "-".to_string();
        Some(format!(
            "drive: drive{i}\nstate: {}\nvolume: {}\npool: {}\nencryption: {}\nkey_tag: {}\n",
            if d.busy { d.job } else { "idle" },
            d.volume.clone().unwrap_or_else(none),
            d.pool.clone().unwrap_or_else(none),
            if d.key.is_some() { "on" } else { "off" },
            d.tag.clone().unwrap_or_else(none),
        ))
    }

    /// Whether drive `i` holds a key now (for tests and `status`).
    pub fn holds_key(&self, i: usize) -> bool {
        self.drives.lock().get(i).is_some_and(|d| d.key.is_some())
    }
}

/// A drive taken for one job.
pub struct DriveGuard {
    pool: Arc<DrivePool>,
    index: usize,
}

impl DriveGuard {
    fn with<T>(&self, f: impl FnOnce(&mut Drive) -> T) -> T {
        f(&mut self.pool.drives.lock()[self.index])
    }

    /// Loads a volume.
    pub fn load(&self, volume: &str, pool: &str) {
        self.with(|d| {
            d.volume = Some(volume.into());
            d.pool = Some(pool.into());
        });
    }

    /// Puts the drive into encryption mode with this key and tag.
    pub fn register_key(&self, tag: &str, key: SecretKey) {
        self.with(|d| {
            d.tag = Some(tag.into());
            d.key = Some(key);
        });
        tracing::debug!(
            drive = self.index,
            tag,
            "key registered, encryption mode on"
        );
    }

    /// Runs `f` with the registered key (None in clear mode).
    pub fn with_key<T>(&self, f: impl FnOnce(Option<&SecretKey>) -> T) -> T {
        self.with(|d| f(d.key.as_ref()))
    }

    /// Unregisters the key and returns the drive to clear mode.
    pub fn unregister_key(&self) {
        self.with(|d| {
            d.key = None;
            d.tag = None;
        });
    }

    /// This drive's number.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for DriveGuard {
    fn drop(&mut self) {
        self.with(|d| *d = Drive::default());
        self.pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drives_queue_then_time_out_and_never_keep_keys() {
        let pool = DrivePool::new(1, Duration::from_millis(100));
        let g = pool.acquire("writing").unwrap();
        g.register_key("abcd", SecretKey::random().unwrap());
        assert!(pool.holds_key(0));
        assert!(pool.status(0).unwrap().contains("encryption: on"));
        assert!(matches!(
            pool.acquire("reading"),
            Err(TapeError::DriveBusy { .. })
        ));
        drop(g);
        assert!(!pool.holds_key(0));
        let s = pool.status(0).unwrap();
        assert!(
            s.contains("state: idle") && s.contains("encryption: off") && s.contains("key_tag: -"),
            "{s}"
        );
        let g = pool.acquire("reading").unwrap();
        let p2 = pool.clone();
        let t = std::thread::spawn(move || p2.acquire("writing").map(|g| g.index()));
        std::thread::sleep(Duration::from_millis(30));
        drop(g);
        assert_eq!(
            t.join().unwrap().unwrap(),
            0,
            "a waiting writer gets the freed drive"
        );
    }
}
