//! Open file handles.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

use crate::tape::{ImageReader, ImageWriter};

/// What an open file handle refers to.
pub enum Handle {
    /// An image being written; `None` once committed or failed.
    Write { ino: u64, writer: Mutex<Option<ImageWriter>>, size: Arc<AtomicU64> },
    /// A committed image open for reading.
    Read(ImageReader),
    /// A snapshot of a drive status file.
    Status(Vec<u8>),
}
