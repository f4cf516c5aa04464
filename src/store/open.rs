//! Creating and opening a store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{Config, HmkMode, Keys, StoreError, StoreLock};
use crate::catalog::{Catalog, CatalogUsers};
use crate::kms::{EmbeddedKms, HmkSource, Keystore, KmsError, Unlock};
use crate::msdp::Msdp;
use crate::tape::{Library, LibraryConfig};

/// Options of `kmsfs init`.
#[derive(Default)]
pub struct InitOptions {
    /// Derive the HMK from this pass phrase instead of a random key file.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// Keep the HMK file here instead of `STORE/kms/hmk.key`.
    pub hmk_file: Option<PathBuf>,
    pub drives: Option<u32>,
    pub volume_capacity: Option<u64>,
    pub drive_wait_secs: Option<u64>,
    pub max_volumes: Option<u32>,
}

/// An open, locked store.
pub struct Store {
    pub dir: PathBuf,
    pub config: Config,
    /// The one handle on the store's keys, whichever KMS serves them.
    pub keys: Keys,
    pub catalog: Arc<Catalog>,
    /// Drives and volumes.
    pub library: Arc<Library>,
    /// The deduplicating pools.
    pub msdp: Arc<Msdp>,
    /// Key, retention and lock operations, tamper-evident.
    pub audit: crate::audit::AuditLog,
    _lock: StoreLock,
}

const SUBDIRS: [&str; 4] = ["kms", "volumes", "catalog", "lsu"];

fn hmk_source(dir: &Path, mode: HmkMode, unlock: Unlock) -> Result<HmkSource, KmsError> {
    match mode {
        HmkMode::File => {
            Ok(HmkSource::File(unlock.hmk_file.unwrap_or_else(|| {
                dir.join("kms").join(crate::kms::HMK_FILE)
            })))
        }
        HmkMode::Passphrase => unlock
            .passphrase
            .map(HmkSource::Passphrase)
            .ok_or(KmsError::PassphraseRequired),
    }
}

impl Store {
    /// Creates a store in `dir` (new or empty). The config is written last,
    /// so an interrupted init is recognised as half-made.
    pub fn init(dir: &Path, opts: InitOptions) -> Result<Config, StoreError> {
        if dir.join(super::CONFIG_FILE).exists()
            || (dir.is_dir()
                && std::fs::read_dir(dir)
                    .map_err(|e| StoreError::io(dir, e))?
                    .next()
                    .is_some())
        {
            return Err(StoreError::NotEmpty(dir.display().to_string()));
        }
        set_umask();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| StoreError::io(dir, e))?;
        // The directory was just found empty: a plain exclusive create.
        let marker = dir.join(super::INIT_MARKER);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"kmsfs store\n"))
            .map_err(|e| StoreError::io(&marker, e))?;
        for sub in SUBDIRS {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| StoreError::io(&dir.join(sub), e))?;
        }
        let mode = if opts.passphrase.is_some() {
            HmkMode::Passphrase
        } else {
            HmkMode::File
        };
        let unlock = Unlock {
            hmk_file: opts.hmk_file,
            passphrase: opts.passphrase,
        };
        Keystore::create(&dir.join("kms"), hmk_source(dir, mode, unlock)?)?;
        Catalog::open(&dir.join("catalog/catalog.redb"))?;
        let mut config = Config::new(mode);
        config.drives = opts.drives.unwrap_or(config.drives);
        config.volume_capacity = opts.volume_capacity.unwrap_or(config.volume_capacity);
        config.drive_wait_secs = opts.drive_wait_secs.unwrap_or(config.drive_wait_secs);
        config.max_volumes = opts.max_volumes.unwrap_or(config.max_volumes);
        config.save(dir)?;
        Ok(config)
    }

    /// Opens and locks the store at `dir`.
    pub fn open(dir: &Path, unlock: Unlock) -> Result<Self, StoreError> {
        Self::open_with(dir, unlock, |_| {})
    }

    /// Opens with settings overridden for this run (mount options).
    pub fn open_with(
        dir: &Path,
        unlock: Unlock,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Self, StoreError> {
        set_umask();
        let mut config = Config::load(dir)?;
        adjust(&mut config);
        let dir = &std::fs::canonicalize(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock = StoreLock::acquire(dir)?;
        let mut ks = Keystore::open(&dir.join("kms"), hmk_source(dir, config.hmk, unlock)?)?;
        let catalog = Arc::new(Catalog::open(&dir.join("catalog/catalog.redb"))?);
        ks.set_users(Box::new(CatalogUsers(catalog.clone())));
        let digest_key = Arc::new(ks.store_key(crate::crypto::labels::IMAGE_DIGEST_KEY));
        let audit =
            crate::audit::AuditLog::open(dir, ks.store_key(crate::crypto::labels::AUDIT_MAC_KEY));
        let keys = Keys::new(
            Arc::new(EmbeddedKms::new(ks)),
            &config.kms,
            Duration::from_secs(config.kms_timeout_secs),
            dir.join("kms"),
        );
        let kms = keys.client().clone();
        let lib_cfg = LibraryConfig {
            dir: dir.join("volumes"),
            drives: config.drives,
            drive_wait: Duration::from_secs(config.drive_wait_secs),
            volume_capacity: config.volume_capacity,
            max_volumes: config.max_volumes,
        };
        let library = Library::new(lib_cfg, catalog.clone(), kms.clone(), digest_key.clone());
        library.sweep_imports()?;
        if let Err(e) = library.recycle_empty() {
            tracing::warn!("recycling volumes that hold no image: {e}");
        }
        let msdp = Msdp::new(
            dir.join("lsu"),
            catalog.clone(),
            kms.clone(),
            Duration::from_secs(config.kek_cache_secs),
            digest_key,
        );
        // Writers in flight pin keys too, not only the catalog.
        keys.keystore().write(|ks| {
            ks.set_users(Box::new(crate::msdp::StoreKeyUsers::new(
                catalog.clone(),
                &msdp,
            )))
        });
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            keys,
            catalog,
            library,
            msdp,
            audit,
            _lock: lock,
        })
    }

    /// Where the control socket of a daemon serving this store is.
    pub fn control_socket(dir: &Path) -> PathBuf {
        dir.join("control.sock")
    }
}

/// Nothing kmsfs creates is readable by others.
#[allow(unsafe_code)]
fn set_umask() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}
