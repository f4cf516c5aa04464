//! Open file handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;

use crate::tape::{ImageReader, PipelinedWriter};

/// What an open file handle refers to.
pub enum Handle {
    /// An image being written; `None` once committed or failed.
    /// `flushed`: a descriptor was closed since the last write, so the
    /// last close (and the commit) may be on its way.
    Write {
        ino: u64,
        writer: Mutex<Option<Box<PipelinedWriter>>>,
        size: Arc<AtomicU64>,
        flushed: AtomicBool,
    },
    /// A committed image open for reading.
    Read(Box<ImageReader>),
    /// A snapshot of a drive status file.
    Status(Vec<u8>),
}
