//! Open file handles.

use std::sync::Arc;

use crate::engine::{Reader, Session};

/// What an open file handle refers to.
pub enum Handle {
    /// An image being written (its write session).
    Write(Arc<Session>),
    /// A committed image open for reading.
    Read(Box<Reader>),
    /// A snapshot of a drive status file.
    Status(Vec<u8>),
}
