//! The catalog: the namespace (pools, LSUs, folders, image files), every
//! image's fragments, volumes and key tag, the volumes of the library, and
//! the LSUs' key dictionaries, segment indexes, containers and recipes. Kept in
//! redb, whose transactions are durable at commit: an image appears only in
//! the transaction that commits it, after its data was fsynced, so a crash
//! at any point leaves every committed image intact and no half image.

mod clock;
mod files;
pub(crate) mod fuzz;
pub use clock::ComplianceClock;
mod images;
pub use images::{Commit, VolumeUpdate};
mod links;
mod lsu;
mod lsu_records;
pub use lsu::{LsuCommit, Move};
pub use lsu_records::{
    ContainerRec, KekPolicy, KekRec, LsuMode, LsuRec, SegKind, SegRec, SegRef, StoredKey,
};
mod namespace;
mod records;
mod records_v2;
mod retention;
pub use retention::{
    ImageLock, MAX_RETENTION_SECS, RETAIN_XATTR, WormMode, WormPolicy, describe, parse_until,
    secs_ns,
};
mod segrefs;
pub use segrefs::{Fp, lsu_of_pool, lsu_pool};
mod tables;
mod users;
mod volumes;
mod xattrs;
pub use xattrs::{XATTR_NAME_MAX, XATTR_SIZE_MAX, XattrSet};

use std::path::Path;

pub use records::{
    FileAttrs, FileEntry, Fragment, ImageRec, Inode, InodeKind, VolumeRec, VolumeState,
};
pub use users::CatalogUsers;

/// Fixed inode numbers of the top of the tree.
pub const ROOT_INO: u64 = 1;
pub const POOLS_INO: u64 = 2;
pub const MSDP_INO: u64 = 3;
/// First inode number handed out for pools, folders and images.
pub const FIRST_DYNAMIC_INO: u64 = 16;

/// What went wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database: {0}")]
    Db(String),
    /// The catalog's file system is full: nothing changed, free space and retry.
    #[error("catalog database: no space left on its file system ({0})")]
    NoSpace(String),
    #[error("catalog record does not decode: {0}")]
    Decode(String),
    #[error("'{0}' not found")]
    NotFound(String),
    #[error("'{0}' already exists")]
    Exists(String),
    #[error("directory '{0}' is not empty")]
    NotEmpty(String),
    #[error("'{0}' is not a directory")]
    NotDir(String),
    #[error("'{0}' is a directory")]
    IsDir(String),
    #[error("{0}")]
    Invalid(String),
    /// A retention lock or legal hold forbids it (EPERM).
    #[error("{0}")]
    Locked(String),
    #[error("no extended attribute '{0}'")]
    NoXattr(String),
    #[error("extended attribute: {0}")]
    XattrName(String),
    #[error("extended attribute too large: {0}")]
    XattrTooBig(String),
    #[error("no room for extended attributes: {0}")]
    XattrFull(String),
    #[error("catalog format version {found}; this kmsfs reads {supported}")]
    UnknownVersion { found: u64, supported: u64 },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for CatalogError {
            fn from(e: $t) -> Self { CatalogError::Db(e.to_string()) }
        }
    )*};
}
db_err!(redb::DatabaseError, redb::TableError);

impl From<redb::StorageError> for CatalogError {
    fn from(e: redb::StorageError) -> Self {
        match &e {
            redb::StorageError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                CatalogError::NoSpace(e.to_string())
            }
            _ => CatalogError::Db(e.to_string()),
        }
    }
}

impl From<redb::TransactionError> for CatalogError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(s) => s.into(),
            e => CatalogError::Db(e.to_string()),
        }
    }
}

impl From<redb::CommitError> for CatalogError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => s.into(),
            e => CatalogError::Db(e.to_string()),
        }
    }
}

/// The open catalog.
pub struct Catalog {
    db: redb::Database,
    next_ino: std::sync::atomic::AtomicU64,
    /// The compliance clock retention locks are judged by.
    clock: ComplianceClock,
}

impl Catalog {
    /// Opens (creating if absent) the catalog file.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = redb::Database::create(path)?;
        let next = tables::init(&db)?;
        let last = {
            use redb::ReadableDatabase;
            let rx = db.begin_read()?;
            let meta = rx.open_table(tables::META)?;
            let get = |k: &str| meta.get(k).map(|v| v.map(|v| v.value()));
            get("clock_ns")?.map(|c| clock::LastStamp {
                clock_ns: c as i64,
                boot_id: get("clock_boot").ok().flatten().unwrap_or(0),
                boottime_ns: get("clock_boottime").ok().flatten().unwrap_or(0) as i64,
            })
        };
        let skew = Self::skew_in(&db)?;
        Ok(Self {
            db,
            next_ino: std::sync::atomic::AtomicU64::new(next),
            clock: ComplianceClock::start(last, skew),
        })
    }

    /// A write transaction, the compliance clock's time stamped into it
    /// (what retention locks are judged by inside it; the store's last
    /// time, should it restart).
    fn begin(&self) -> Result<redb::WriteTransaction, CatalogError> {
        use redb::ReadableTable;
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(tables::META)?;
            let last = meta.get("clock_ns")?.map(|v| v.value()).unwrap_or(0);
            let now = (self.clock.now_ns().max(0) as u64).max(last);
            let (boot_id, boottime) = clock::boot();
            meta.insert("clock_ns", now)?;
            meta.insert("clock_boot", boot_id)?;
            meta.insert("clock_boottime", boottime.max(0) as u64)?;
        }
        Ok(tx)
    }

    /// A fresh inode number (persisted with the record that uses it).
    pub fn alloc_ino(&self) -> u64 {
        self.next_ino
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}
