//! The library: volumes (virtual cartridges, one file each), which are
//! loaded in a drive, scratch allocation, and recycling of volumes whose
//! images are all gone.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::format::{self, MediaHeader};
use super::{DrivePool, TapeError};
use crate::catalog::{Catalog, ImageRec, VolumeRec, VolumeState};
use crate::crypto::SecretKey;
use crate::kms::KmsClient;

/// Library settings from the store config.
pub struct LibraryConfig {
    pub dir: PathBuf,
    pub drives: u32,
    pub drive_wait: Duration,
    pub volume_capacity: u64,
    pub max_volumes: u32,
}

/// The library of one store.
pub struct Library {
    cfg: LibraryConfig,
    pub catalog: Arc<Catalog>,
    pub kms: Arc<dyn KmsClient>,
    pub drives: Arc<DrivePool>,
    /// The store's key for image digests.
    pub digest_key: Arc<SecretKey>,
    /// Volumes loaded for writing (one writer per volume, like a cartridge in a drive).
    loaded: Mutex<HashSet<String>>,
    /// Open read handles.
    files: Mutex<HashMap<String, Arc<File>>>,
    /// Volumes imports are reading (never recycled while pinned).
    pub(super) pinned: super::adopt::Pins,
}

/// A volume loaded for writing.
pub struct LoadedVolume {
    pub rec: VolumeRec,
    pub file: File,
}

impl Library {
    pub fn new(
        cfg: LibraryConfig,
        catalog: Arc<Catalog>,
        kms: Arc<dyn KmsClient>,
        digest_key: Arc<SecretKey>,
    ) -> Arc<Self> {
        let drives = DrivePool::new(cfg.drives, cfg.drive_wait);
        Arc::new(Self {
            cfg,
            catalog,
            kms,
            drives,
            digest_key,
            loaded: Mutex::default(),
            files: Mutex::default(),
            pinned: Default::default(),
        })
    }

    /// The file of a volume. The barcode is checked first: one read from
    /// a volume or a damaged catalog never names a file outside the library.
    pub fn volume_path(&self, barcode: &str) -> Result<PathBuf, TapeError> {
        crate::util::names::check_barcode(barcode).map_err(|e| TapeError::Format {
            what: "volume",
            why: e.to_string(),
        })?;
        Ok(self.cfg.dir.join(format!("{barcode}.kvol")))
    }

    /// The lock held while a volume is picked or a barcode chosen.
    pub(super) fn picking(&self) -> parking_lot::MutexGuard<'_, HashSet<String>> {
        self.loaded.lock()
    }

    /// Forgets what imports that died left: the records of volumes still
    /// marked as being imported (no image's: the image commit marks them
    /// full) and the temporary copies. A volume file such an import had
    /// already linked stays: the next import of it adopts it in place.
    /// Called when the store is opened, under its exclusive lock.
    pub fn sweep_imports(&self) -> Result<(), crate::catalog::CatalogError> {
        for v in self.catalog.volumes()? {
            if v.state == VolumeState::Importing {
                self.catalog.unreserve_volume(&v.barcode)?;
                tracing::info!(volume = %v.barcode, "released the barcode an interrupted import held");
            }
        }
        let Ok(dir) = std::fs::read_dir(&self.cfg.dir) else {
            return Ok(());
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(super::adopt::TEMP_PREFIX) && name.ends_with(".tmp") {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(file = %name, "removed a copy an interrupted import left")
                    }
                    Err(e) => tracing::warn!(file = %name, "removing a dead import's copy: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Least room a volume must have to start a fragment on it.
    fn min_room() -> u64 {
        2048 + format::block_stride(format::BLOCK_SIZE) + format::FILEMARK_LEN
    }

    /// Loads a volume of `pool` with room to append: an active one of the
    /// pool, else a scratch one, else a new one; ENOSPC when the library is full.
    pub fn load_for_write(&self, pool: &str) -> Result<LoadedVolume, TapeError> {
        let mut loaded = self.loaded.lock();
        let vols = self.catalog.volumes()?;
        let free = |v: &&VolumeRec| !loaded.contains(&v.barcode);
        let pick = vols
            .iter()
            .filter(free)
            .find(|v| {
                v.pool == pool
                    && v.state == VolumeState::Active
                    && v.capacity.saturating_sub(v.used) >= Self::min_room()
            })
            .or_else(|| {
                vols.iter()
                    .filter(free)
                    .find(|v| v.state == VolumeState::Scratch)
            })
            .cloned();
        let rec = match pick {
            Some(v) => v,
            None if vols.len() < self.cfg.max_volumes as usize => self.new_volume(vols.len())?,
            None => return Err(TapeError::NoScratch { pool: pool.into() }),
        };
        let lv = self.open_for_append(rec, pool)?;
        loaded.insert(lv.rec.barcode.clone());
        Ok(lv)
    }

    fn new_volume(&self, count: usize) -> Result<VolumeRec, TapeError> {
        let mut n = count + 1;
        while self.volume_path(&barcode(n))?.exists() || self.catalog.volume(&barcode(n))?.is_some()
        {
            n += 1;
        }
        let rec = VolumeRec {
            barcode: barcode(n),
            pool: String::new(),
            state: VolumeState::Scratch,
            used: 0,
            capacity: self.cfg.volume_capacity,
            images: 0,
        };
        self.catalog.put_volume(&rec)?;
        Ok(rec)
    }

    /// Opens the volume file, labels a scratch volume for `pool`, and cuts
    /// off whatever a dead writer left beyond the committed append point.
    fn open_for_append(&self, mut rec: VolumeRec, pool: &str) -> Result<LoadedVolume, TapeError> {
        let path = self.volume_path(&rec.barcode)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TapeError::io(format!("volume {}", path.display()), e))?;
        if rec.state == VolumeState::Scratch {
            let hdr = MediaHeader {
                barcode: rec.barcode.clone(),
                pool: pool.into(),
                capacity: rec.capacity,
                created_ns: crate::util::clock::now_ns(),
                uuid: crate::crypto::random_array()?,
            };
            crate::util::failpoint::hit(crate::util::failpoint::VOLUME_CREATE)
                .and_then(|()| file.set_len(0))
                .map_err(|e| TapeError::io(format!("volume {}", rec.barcode), e))?;
            file.write_all_at(&hdr.encode(), 0)
                .map_err(|e| TapeError::io(format!("volume {}", rec.barcode), e))?;
            file.sync_all()
                .map_err(|e| TapeError::io(format!("volume {}", rec.barcode), e))?;
            // The volume's name is durable before the catalog says it is active.
            crate::util::atomic::sync_dir(&self.cfg.dir).map_err(|e| {
                TapeError::io(format!("volume directory {}", self.cfg.dir.display()), e)
            })?;
            rec.pool = pool.into();
            rec.state = VolumeState::Active;
            rec.used = format::MEDIA_HEADER_LEN;
            rec.images = 0;
            self.catalog.put_volume(&rec)?;
            self.files.lock().remove(&rec.barcode);
        } else {
            file.set_len(rec.used)
                .map_err(|e| TapeError::io(format!("volume {}", rec.barcode), e))?;
        }
        tracing::debug!(volume = %rec.barcode, pool, used = rec.used, "volume loaded for writing");
        Ok(LoadedVolume { rec, file })
    }

    /// Returns a volume loaded for writing to the shelf.
    pub fn unload(&self, barcode: &str) {
        self.loaded.lock().remove(barcode);
    }

    /// A shared read handle on a volume file.
    pub fn reader(&self, barcode: &str) -> Result<Arc<File>, TapeError> {
        let mut files = self.files.lock();
        if let Some(f) = files.get(barcode) {
            return Ok(f.clone());
        }
        let path = self.volume_path(barcode)?;
        let f = Arc::new(
            File::open(&path)
                .map_err(|e| TapeError::io(format!("volume {}", path.display()), e))?,
        );
        files.insert(barcode.into(), f.clone());
        Ok(f)
    }

    /// After images are gone: volumes that hold no committed image and are
    /// not loaded return to scratch and their files are removed.
    pub fn recycle(&self, img: &ImageRec) -> Result<(), TapeError> {
        let loaded = self.loaded.lock();
        for f in &img.fragments {
            if let Some(v) = self.catalog.volume(&f.volume)? {
                self.recycle_if_empty(&loaded, v)?;
            }
        }
        Ok(())
    }

    /// Every volume that holds no committed image goes back to scratch: the
    /// ones a recycle that failed, or a crash between an image's removal
    /// and its volume's recycling, left labelled. Called when the store is
    /// opened; returns how many it recycled.
    pub fn recycle_empty(&self) -> Result<usize, TapeError> {
        let loaded = self.loaded.lock();
        let mut n = 0;
        for v in self.catalog.volumes()? {
            if self.recycle_if_empty(&loaded, v)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Recycles `v` when it holds no image and no writer or import has it.
    fn recycle_if_empty(
        &self,
        loaded: &HashSet<String>,
        mut v: VolumeRec,
    ) -> Result<bool, TapeError> {
        let pinned = self.pinned.lock().contains_key(&v.barcode);
        if v.images > 0
            || loaded.contains(&v.barcode)
            || pinned
            || v.state != VolumeState::Active && v.state != VolumeState::Full
        {
            return Ok(false);
        }
        v.state = VolumeState::Scratch;
        v.pool = String::new();
        v.used = 0;
        self.catalog.put_volume(&v)?;
        self.files.lock().remove(&v.barcode);
        if let Ok(p) = self.volume_path(&v.barcode) {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!(volume = %v.barcode, "volume holds no image any more: back to scratch");
        Ok(true)
    }
}

/// Barcode of volume number `n`: `K00001L9`.
pub fn barcode(n: usize) -> String {
    format!("K{n:05}L9")
}
