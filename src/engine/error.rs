//! Errors of the engine: the rooms' errors, plus the refusals of the write
//! session rules, each naming the image.

use crate::catalog::CatalogError;
use crate::kms::KmsError;
use crate::msdp::MsdpError;
use crate::tape::TapeError;

/// What went wrong in an engine call.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Tape(#[from] TapeError),
    #[error(transparent)]
    Msdp(#[from] MsdpError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The KMS refused or could not answer, for `subject`.
    #[error("{subject}: {source}")]
    Kms { subject: String, source: KmsError },
    /// A name that cannot be a pool, key group or image name.
    #[error("{0}")]
    BadName(String),
    /// A rule of the namespace refuses the operation.
    #[error("{0}")]
    Refused(String),
    /// A move between pools.
    #[error("rename from pool {from} to pool {to}: an image stays in its pool")]
    CrossPool { from: String, to: String },
    /// A member a restore asked for is not in the image's file list.
    #[error("image {image} has no member {member} (see kmsfs image files)")]
    NoMember { image: String, member: String },
    /// A file or directory outside the store (a restore's destination).
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The commit of an image failed while another operation ended its
    /// session; its close reports it.
    #[error("{name} was not committed: {why}")]
    CommitFailed { name: String, why: String },
    /// A second writer for an image being written.
    #[error("{0} is already being written")]
    Busy(String),
    /// A write through a session that has ended (committed or failed).
    #[error("{0}: image already closed")]
    Closed(String),
    /// ftruncate below what was written: images are streams.
    #[error("cannot shrink {name} while it is being written, from {from} to {to} bytes")]
    Shrink { name: String, from: u64, to: u64 },
}

impl EngineError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
