//! Virtual tape: the volume format, the drives, the library of volumes,
//! and the image writer and reader that follow "About writing an encrypted tape" (NetBackup Security and Encryption Guide): take a free drive,
//! load a volume of the pool, get the active key of the group named like an
//! `ENCR_` pool, register key and tag with the drive, write, unregister,
//! return the drive to clear mode, record the tag in the catalog.

mod adopt;
pub mod check;
mod drive;
pub mod format;
mod library;
mod reader;
pub mod scan;
#[cfg(test)]
mod tests;
mod writer;

pub use adopt::Adopted;
pub use drive::{DriveGuard, DrivePool};
pub use library::{Library, LibraryConfig};
pub use reader::ImageReader;
pub use writer::ImageWriter;

use crate::catalog::CatalogError;
use crate::kms::KmsError;

/// Prefix of encrypted pools; the key group has the pool's name.
pub const ENCRYPTED_PREFIX: &str = "ENCR_";

/// Whether a pool is encrypted.
pub fn is_encrypted_pool(pool: &str) -> bool {
    pool.starts_with(ENCRYPTED_PREFIX)
}

/// What went wrong on the tape path. Each names the volume, image, key tag
/// or pool concerned.
#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    #[error("{what}: {why}")]
    Format { what: &'static str, why: String },
    #[error(
        "{what} has format version {version}; this kmsfs reads version {}",
        format::FORMAT_VERSION
    )]
    FutureVersion { what: &'static str, version: u16 },
    #[error("key for {subject}: {source}")]
    Kms { subject: String, source: KmsError },
    #[error(
        "integrity check failed: volume {volume}, image {image}, fragment {fragment}, block {block}: {why}"
    )]
    Integrity {
        volume: String,
        image: String,
        fragment: u32,
        block: u64,
        why: String,
    },
    #[error("pool {pool} is full: no scratch volume left (max_volumes reached)")]
    NoScratch { pool: String },
    #[error("no virtual drive became free within {secs}s")]
    DriveBusy { secs: u64 },
    #[error(
        "image {path}: write at offset {offset} but the image ends at {end}: images are written once, sequentially"
    )]
    NotSequential { path: String, offset: u64, end: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// An earlier write of this image failed; it will not be committed.
    #[error("{0} (image not committed)")]
    Deferred(std::sync::Arc<TapeError>),
    #[error("an earlier write failed")]
    Poisoned,
}

impl crate::pipeline::SinkError for TapeError {
    fn deferred(first: std::sync::Arc<Self>) -> Self {
        Self::Deferred(first)
    }
    fn poisoned() -> Self {
        Self::Poisoned
    }
    fn stopped(e: std::io::Error) -> Self {
        Self::io("image writer thread", e)
    }
    fn not_sequential(path: String, offset: u64, end: u64) -> Self {
        Self::NotSequential { path, offset, end }
    }
}

impl TapeError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
