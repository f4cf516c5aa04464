//! The store lock: one process (the daemon, or a CLI command when no daemon
//! runs) owns a store at a time. An exclusive `flock` on `STORE/lock`,
//! released by the kernel when the process dies, so a killed daemon never
//! leaves a stale lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::StoreError;

/// Held for as long as the store is open.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock, waiting up to 5 s for a daemon that is exiting
    /// (`umount` returns before the daemon has closed the store).
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Self::try_acquire(dir) {
                Err(StoreError::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Takes the lock without waiting.
    pub fn try_acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        if !flock_exclusive(&file) {
            return Err(StoreError::Busy(dir.display().to_string()));
        }
        Ok(Self { _file: file })
    }
}

#[allow(unsafe_code)]
fn flock_exclusive(f: &File) -> bool {
    // SAFETY: flock on a valid, open file descriptor owned by `f`.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}
