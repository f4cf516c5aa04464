//! The store: one directory holding config, keystore, volumes, catalog and
//! LSUs. `init` creates it; the daemon (or a CLI command when no daemon
//! runs) opens and locks it. Layout (see docs/format.md):
//!
//! ```text
//! STORE/.kmsfs-store          marker, written first by init
//! STORE/kmsfs.conf            config (JSON), written last by init
//! STORE/lock                  flock held by the owning process
//! STORE/control.sock          the daemon's control socket (root only)
//! STORE/kms/                  keystore.kks, kpk.key, hmk.key | hmk.params
//! STORE/volumes/K00001L9.kvol virtual tape volumes
//! STORE/catalog/catalog.redb  image catalog
//! STORE/lsu/                  deduplicating pools
//! ```

mod config;
mod keys;
mod lock;
mod open;

pub use config::{CONFIG_FILE, Config, HmkMode};

/// The file `init` writes first: a directory holding it and no config is a
/// store whose init was interrupted (any other directory is not ours).
pub const INIT_MARKER: &str = ".kmsfs-store";
pub use keys::{GroupRow, KeyRow, Keys, KmsStatus};
pub use lock::StoreLock;
pub use open::{InitOptions, Store};

/// Why a store cannot be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no kmsfs store at {0} (create one with `kmsfs init {0}`)")]
    NoStore(String),
    #[error(
        "{0} is a kmsfs store whose init was interrupted (no kmsfs.conf): remove it and run init again"
    )]
    HalfMade(String),
    #[error("{0} is not a kmsfs store (no kmsfs.conf)")]
    NotAStore(String),
    #[error("{0} already holds files; init wants a new or empty directory")]
    NotEmpty(String),
    #[error("store config {0}: {1}")]
    BadConfig(String, String),
    #[error("store {path} has format version {version}; this kmsfs reads version {supported}")]
    UnknownVersion {
        path: String,
        version: u32,
        supported: u32,
    },
    #[error(
        "store {0} is in use by another process (a mounted daemon whose control socket did not answer?)"
    )]
    Busy(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
