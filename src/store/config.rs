//! The store's config file `kmsfs.conf` (JSON, so operators can read it):
//! format name and version, drives, volume capacity, waits and timeouts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::kmip::KmsBackend;
use crate::util::atomic::write_atomic;

/// Name of the config file; written last by `init`, so its presence marks a complete store.
pub const CONFIG_FILE: &str = "kmsfs.conf";
const FORMAT: &str = "kmsfs-store";
/// Store format version this kmsfs writes and reads.
pub const STORE_VERSION: u32 = 1;

/// How the host master key is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmkMode {
    /// A random key file (`kms/hmk.key`, or elsewhere with `hmk=`): unattended mounts.
    File,
    /// Derived from a pass phrase given at every unlock.
    Passphrase,
}

/// The store config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub hmk: HmkMode,
    /// Number of virtual tape drives.
    pub drives: u32,
    /// Seconds a writer or reader waits for a free drive before EBUSY.
    pub drive_wait_secs: u64,
    /// Capacity of one virtual volume, bytes.
    pub volume_capacity: u64,
    /// Most volumes the library holds (scratch included); beyond it, ENOSPC.
    pub max_volumes: u32,
    /// Seconds the KMS client retries a temporary failure before giving up.
    pub kms_timeout_secs: u64,
    /// Seconds an unwrapped LSU KEK stays cached in memory.
    #[serde(default = "default_kek_cache_secs")]
    pub kek_cache_secs: u64,
    /// Which KMS serves the keys: the embedded keystore or KMIP servers.
    #[serde(default)]
    pub kms: KmsBackend,
}

fn default_kek_cache_secs() -> u64 {
    300
}

impl Config {
    /// Defaults for a new store.
    pub fn new(hmk: HmkMode) -> Self {
        Self {
            format: FORMAT.into(),
            version: STORE_VERSION,
            hmk,
            drives: 2,
            drive_wait_secs: 30,
            volume_capacity: 8 << 30,
            max_volumes: 10_000,
            kms_timeout_secs: 10,
            kek_cache_secs: default_kek_cache_secs(),
            kms: KmsBackend::Embedded,
        }
    }

    /// Reads and checks the config of the store at `dir`.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(CONFIG_FILE);
        if !dir.is_dir() {
            return Err(StoreError::NoStore(dir.display().to_string()));
        }
        let bytes = std::fs::read(&path).map_err(|e| {
            // Only a missing config says anything about the store: then
            // only a directory init began (its marker is written first) is
            // called a half-made store; any other is not ours.
            if e.kind() != std::io::ErrorKind::NotFound {
                StoreError::io(&path, e)
            } else if dir.join(super::INIT_MARKER).exists() {
                StoreError::HalfMade(dir.display().to_string())
            } else {
                StoreError::NotAStore(dir.display().to_string())
            }
        })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::BadConfig(path.display().to_string(), e.to_string()))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(StoreError::BadConfig(
                path.display().to_string(),
                "not a kmsfs store config".into(),
            ));
        }
        let version = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0) as u32;
        if version != STORE_VERSION {
            return Err(StoreError::UnknownVersion {
                path: path.display().to_string(),
                version,
                supported: STORE_VERSION,
            });
        }
        serde_json::from_value(v)
            .map_err(|e| StoreError::BadConfig(path.display().to_string(), e.to_string()))
    }

    /// Writes the config atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(CONFIG_FILE);
        let mut text = serde_json::to_string_pretty(self).expect("config serializes");
        text.push('\n');
        write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| StoreError::io(&path, e))
    }
}
