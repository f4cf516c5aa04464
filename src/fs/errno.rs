//! The one place where kmsfs errors become errno values at the FUSE boundary.
//!
//! | condition                                   | errno   |
//! |---------------------------------------------|---------|
//! | key missing, not active/inactive, no group  | ENOKEY  |
//! | integrity check failed, bad format          | EIO     |
//! | KMS unreachable after retries               | EIO     |
//! | library full (no scratch volume), disk full | ENOSPC  |
//! | no drive free within drive_wait             | EBUSY   |
//! | write not at the end of an image            | ESPIPE  |
//! | write to a closed (immutable) image         | EPERM   |
//! | rename across pools                         | EXDEV   |
//! | an LSU rule refuses (mkdir in msdp/, …)     | EPERM   |

use fuser::Errno;

use crate::catalog::CatalogError;
use crate::engine::EngineError;
use crate::msdp::MsdpError;
use crate::tape::TapeError;

/// An errno with the reason, logged once where it is made.
#[derive(Debug)]
pub struct FsError {
    pub errno: Errno,
    pub why: String,
}

impl FsError {
    pub fn new(errno: i32, why: impl Into<String>) -> Self {
        Self {
            errno: Errno::from_i32(errno),
            why: why.into(),
        }
    }

    /// An I/O error on `what`, with its own errno (EIO if it has none).
    pub fn io(what: &str, e: std::io::Error) -> Self {
        Self::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("{what}: {e}"),
        )
    }
}

/// Errno of a catalog error.
pub fn catalog_errno(e: &CatalogError) -> i32 {
    match e {
        CatalogError::NotFound(_) => libc::ENOENT,
        CatalogError::Exists(_) => libc::EEXIST,
        CatalogError::NotEmpty(_) => libc::ENOTEMPTY,
        CatalogError::NotDir(_) => libc::ENOTDIR,
        CatalogError::IsDir(_) => libc::EISDIR,
        CatalogError::NoSpace(_) | CatalogError::XattrFull(_) => libc::ENOSPC,
        CatalogError::NoXattr(_) => libc::ENODATA,
        CatalogError::Invalid(_) => libc::EINVAL,
        CatalogError::Locked(_) => libc::EPERM,
        CatalogError::XattrName(_) => libc::ERANGE,
        CatalogError::XattrTooBig(_) => libc::E2BIG,
        CatalogError::Db(_) | CatalogError::Decode(_) | CatalogError::UnknownVersion { .. } => {
            libc::EIO
        }
    }
}

/// Errno of a tape error.
pub fn tape_errno(e: &TapeError) -> i32 {
    match e {
        TapeError::Kms { source, .. } if source.is_missing_key() => libc::ENOKEY,
        TapeError::Kms { .. } => libc::EIO,
        TapeError::Integrity { .. }
        | TapeError::Format { .. }
        | TapeError::FutureVersion { .. } => libc::EIO,
        TapeError::NoScratch { .. } => libc::ENOSPC,
        TapeError::DriveBusy { .. } => libc::EBUSY,
        TapeError::NotSequential { .. } => libc::ESPIPE,
        TapeError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        TapeError::Catalog(c) => catalog_errno(c),
        TapeError::Crypto(_) | TapeError::Poisoned => libc::EIO,
        TapeError::Deferred(inner) => tape_errno(inner),
    }
}

/// Errno of an LSU error.
pub fn msdp_errno(e: &MsdpError) -> i32 {
    match e {
        MsdpError::Kms { source, .. } if source.is_missing_key() => libc::ENOKEY,
        MsdpError::Kms { .. } | MsdpError::Integrity { .. } => libc::EIO,
        MsdpError::NoLsu(_) => libc::ENOENT,
        MsdpError::Refused(_) => libc::EPERM,
        MsdpError::NotSequential { .. } => libc::ESPIPE,
        // As an NFS mount with softerr: a timeout, not damage.
        MsdpError::Unreachable { .. } => libc::ETIMEDOUT,
        MsdpError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        MsdpError::Catalog(c) => catalog_errno(c),
        MsdpError::Crypto(_) | MsdpError::Poisoned => libc::EIO,
        MsdpError::Deferred(inner) => msdp_errno(inner),
    }
}

/// Errno of an engine error.
pub fn engine_errno(e: &EngineError) -> i32 {
    match e {
        EngineError::Tape(t) => tape_errno(t),
        EngineError::Msdp(m) => msdp_errno(m),
        EngineError::Catalog(c) => catalog_errno(c),
        EngineError::Kms { source, .. } if source.is_missing_key() => libc::ENOKEY,
        EngineError::Kms { .. } => libc::EIO,
        EngineError::BadName(_) => libc::EINVAL,
        EngineError::Refused(_) => libc::EPERM,
        EngineError::CrossPool { .. } => libc::EXDEV,
        EngineError::NoMember { .. } => libc::ENOENT,
        EngineError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        EngineError::CommitFailed { .. } => libc::EIO,
        EngineError::Busy(_) => libc::EBUSY,
        EngineError::Closed(_) => libc::EBADF,
        EngineError::Shrink { .. } => libc::ESPIPE,
    }
}

impl From<EngineError> for FsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Tape(t) => t.into(),
            EngineError::Msdp(m) => m.into(),
            EngineError::Catalog(c) => c.into(),
            other => {
                match engine_errno(&other) {
                    libc::ENOKEY | libc::EIO => tracing::error!("{other}"),
                    _ => tracing::warn!("{other}"),
                }
                Self::new(engine_errno(&other), other.to_string())
            }
        }
    }
}

impl From<MsdpError> for FsError {
    fn from(e: MsdpError) -> Self {
        let errno = msdp_errno(&e);
        match errno {
            libc::ENOKEY | libc::EIO | libc::ENOSPC => tracing::error!("{e}"),
            _ => tracing::warn!("{e}"),
        }
        Self::new(errno, e.to_string())
    }
}

impl From<CatalogError> for FsError {
    fn from(e: CatalogError) -> Self {
        let errno = catalog_errno(&e);
        match &e {
            CatalogError::Locked(why) => tracing::warn!("refused: {why}"),
            _ if errno == libc::EIO => tracing::error!("catalog: {e}"),
            _ => {}
        }
        Self::new(errno, e.to_string())
    }
}

impl From<TapeError> for FsError {
    fn from(e: TapeError) -> Self {
        let errno = tape_errno(&e);
        match errno {
            libc::ENOKEY | libc::EIO | libc::ENOSPC => tracing::error!("{e}"),
            _ => tracing::warn!("{e}"),
        }
        Self::new(errno, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::KmsError;

    #[test]
    fn mapping() {
        let k = TapeError::Kms {
            subject: "tag x".into(),
            source: KmsError::NoSuchTag("x".into()),
        };
        assert_eq!(tape_errno(&k), libc::ENOKEY);
        let u = TapeError::Kms {
            subject: "g".into(),
            source: KmsError::Unreachable {
                secs: 1,
                why: "down".into(),
            },
        };
        assert_eq!(tape_errno(&u), libc::EIO);
        assert_eq!(
            tape_errno(&TapeError::NoScratch { pool: "p".into() }),
            libc::ENOSPC
        );
        assert_eq!(tape_errno(&TapeError::DriveBusy { secs: 1 }), libc::EBUSY);
        let io = TapeError::io("v", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(tape_errno(&io), libc::ENOSPC);
    }

    /// A catalog commit that hits a full disk says ENOSPC, not EIO: the
    /// operator frees space, nothing is damaged.
    #[test]
    fn a_full_disk_under_the_catalog_is_enospc() {
        let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let commit = CatalogError::from(redb::CommitError::Storage(redb::StorageError::Io(full())));
        assert_eq!(catalog_errno(&commit), libc::ENOSPC, "{commit}");
        let begin = CatalogError::from(redb::TransactionError::Storage(redb::StorageError::Io(
            full(),
        )));
        assert_eq!(catalog_errno(&begin), libc::ENOSPC, "{begin}");
        let other = CatalogError::from(redb::StorageError::Io(std::io::Error::from_raw_os_error(
            libc::EIO,
        )));
        assert_eq!(catalog_errno(&other), libc::EIO, "{other}");
    }
}
