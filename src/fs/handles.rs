//! Open file handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;

use super::streams::{Reader, Writer};

/// What an open file handle refers to.
pub enum Handle {
    /// An image being written; `None` once committed or failed.
    /// `flushed`: a descriptor was closed since the last write, so the
    /// last close (and the commit) may be on its way.
    Write {
        ino: u64,
        writer: Mutex<Option<Box<Writer>>>,
        size: Arc<AtomicU64>,
        flushed: AtomicBool,
    },
    /// A committed image open for reading.
    Read(Box<Reader>),
    /// A snapshot of a drive status file.
    Status(Vec<u8>),
}
