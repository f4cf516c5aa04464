//! MSDP LSUs: deduplicating pools with envelope encryption (NetBackup Security and Encryption Guide,
//! "About MSDP Encryption using NetBackup Key Management Server service").
//!
//! An image written into `msdp/NAME/` is cut into segments by
//! content-defined chunking ([`chunker`]), each segment is named by a keyed
//! fingerprint, and only segments the LSU does not hold yet are stored:
//! sealed under a fresh DEK, the DEK wrapped by the LSU's active KEK, the
//! KEK wrapped by the key group's root key inside the KMS ([`keys`]).
//! Segments are appended to container files ([`container`], layout in
//! [`mod@format`]); the index, recipes and key dictionary live in the catalog
//! so that a commit is one transaction. [`gc`] gives back the space of
//! segments no image uses; [`convert`] moves a legacy LSU to KEK mode.
//!
//! This module may touch the catalog, the KMS client and its own files
//! under `STORE/lsu/`; cryptography goes through `crypto`.

pub mod admin;
mod audit;
pub mod backend;
mod check;
mod chunker;
mod container;
pub mod convert;
pub mod format;
pub(crate) mod fuzz;
pub mod gc;
mod health;
mod keys;
pub mod manifest;
mod net;
pub mod object_lock;
mod reader;
pub mod recover;
mod retention;
mod segment;
mod sidecar;
pub mod sigv4;
mod state;
#[cfg(test)]
mod tests;
mod users;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use admin::CreateLsu;
pub use chunker::DEFAULT_CHUNKING;
pub use reader::LsuReader;
pub use users::StoreKeyUsers;
pub use writer::LsuWriter;

use crate::catalog::{Catalog, CatalogError};
use crate::kms::{KmsClient, KmsError};
use keys::KeyCache;
use state::LsuState;

/// What went wrong on the LSU path. Each names the LSU, container or key.
#[derive(Debug, thiserror::Error)]
pub enum MsdpError {
    #[error("LSU {0} does not exist (kmsfs lsu create {0} …)")]
    NoLsu(String),
    /// An operation the rules forbid; the text says which rule and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("key for {subject}: {source}")]
    Kms { subject: String, source: KmsError },
    #[error(
        "integrity check failed: LSU {lsu}, container {container:016x}, offset {offset}: {why}"
    )]
    Integrity {
        lsu: String,
        container: u64,
        offset: u64,
        why: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "image {path}: write at offset {offset} but the image ends at {end}: images are written once, sequentially"
    )]
    NotSequential { path: String, offset: u64, end: u64 },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The object store of a cloud LSU did not answer (after retries), or
    /// answered with a server error.
    #[error("object store {store} unreachable ({what}): {why}")]
    Unreachable {
        store: String,
        what: String,
        why: String,
    },
    #[error("{0} (image not committed)")]
    Deferred(Arc<MsdpError>),
    #[error("an earlier write failed")]
    Poisoned,
}

impl MsdpError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn kms(subject: impl Into<String>, source: KmsError) -> Self {
        Self::Kms {
            subject: subject.into(),
            source,
        }
    }
}

impl crate::pipeline::SinkError for MsdpError {
    fn deferred(first: Arc<Self>) -> Self {
        Self::Deferred(first)
    }
    fn poisoned() -> Self {
        Self::Poisoned
    }
    fn stopped(e: std::io::Error) -> Self {
        Self::io("LSU writer thread", e)
    }
    fn not_sequential(path: String, offset: u64, end: u64) -> Self {
        Self::NotSequential { path, offset, end }
    }
}

/// The LSUs of a store: shared by the FUSE layer and the commands.
pub struct Msdp {
    pub catalog: Arc<Catalog>,
    pub kms: Arc<dyn KmsClient>,
    /// The store's key for image digests.
    digest_key: Arc<crate::crypto::SecretKey>,
    /// `STORE/lsu`.
    dir: PathBuf,
    keys: KeyCache,
    states: Mutex<HashMap<String, Arc<LsuState>>>,
}

impl Msdp {
    /// `kek_ttl`: how long an unwrapped KEK stays in memory unused.
    pub fn new(
        dir: PathBuf,
        catalog: Arc<Catalog>,
        kms: Arc<dyn KmsClient>,
        kek_ttl: Duration,
        digest_key: Arc<crate::crypto::SecretKey>,
    ) -> Arc<Self> {
        let m = Arc::new(Self {
            catalog,
            kms,
            digest_key,
            dir,
            keys: KeyCache::new(kek_ttl),
            states: Mutex::default(),
        });
        keys::start_sweeper(&m);
        m
    }

    /// The in-memory state of an LSU (writers in flight, open containers).
    fn state(&self, name: &str) -> Result<Arc<LsuState>, MsdpError> {
        if let Some(s) = self.states.lock().get(name) {
            return Ok(s.clone());
        }
        let rec = self
            .catalog
            .lsu(name)?
            .ok_or_else(|| MsdpError::NoLsu(name.into()))?;
        let s = Arc::new(LsuState::open(&self.dir, &rec, &self.catalog)?);
        Ok(self
            .states
            .lock()
            .entry(name.to_string())
            .or_insert(s)
            .clone())
    }

    /// Bytes the containers of LSU `name` take on disk.
    pub fn stored_bytes(&self, name: &str) -> Result<u64, MsdpError> {
        let dir = self.dir.join(name).join("containers");
        if !dir.is_dir() {
            return Ok(0);
        }
        let mut total = 0;
        for id in backend::container_files(&dir)? {
            let p = backend::container_path(&dir, id);
            total += match std::fs::metadata(&p) {
                Ok(m) => m.len(),
                // Evicted from a cloud LSU's cache meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(MsdpError::io(p.display().to_string(), e)),
            };
        }
        Ok(total)
    }

    /// Forgets every cached key (tests, and after a KMS change that must bite at once).
    pub fn forget_keys(&self) {
        self.keys.clear();
    }
}
