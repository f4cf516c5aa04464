//! Bringing a volume written elsewhere into the library (import phase
//! two). The barcode is reserved in the catalog first, in the same
//! transaction that checks it is free, so neither a second import nor a
//! local writer making a new volume can take it; the copy is made under a
//! random name, fsynced, linked into place without replacing anything, and
//! its directory fsynced. Until the image that needs it commits, the
//! reservation owns the volume: dropped, it removes the record, and the
//! file only if this import linked it.
//!
//! Nothing here ever removes a file it did not make: a volume file already
//! in the library directory with no record (put there by hand, or left by
//! an import that died after linking) is adopted in place when it holds
//! the same bytes, and otherwise refused and left alone. A volume the
//! store already holds is pinned while the import reads it, so it is not
//! recycled under the import.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Library, TapeError};
use crate::catalog::{VolumeRec, VolumeState};

/// Prefix of the temporary copies an import makes in the library
/// directory (removed at open if an import died).
pub const TEMP_PREFIX: &str = ".import-";

/// A volume copied in for an image not committed yet.
pub struct Reservation {
    lib: Arc<Library>,
    pub barcode: String,
    pub path: PathBuf,
    /// This import linked the file (and removes it if it fails).
    linked: bool,
    done: bool,
}

impl Reservation {
    /// The image that needs the volume committed: the volume stays.
    pub fn keep(mut self) {
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.lib.catalog.unreserve_volume(&self.barcode) {
            Ok(true) if self.linked => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(volume = %self.barcode, "import: removing the copy: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(volume = %self.barcode, "import: releasing the barcode: {e}"),
        }
    }
}

/// A volume of this store an import reads: not recycled while pinned.
pub struct VolumePin {
    lib: Arc<Library>,
    barcode: String,
}

impl Drop for VolumePin {
    fn drop(&mut self) {
        let _loaded = self.lib.picking();
        let mut p = self.lib.pinned.lock();
        if let Some(n) = p.get_mut(&self.barcode) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.barcode);
            }
        }
    }
}

/// Volumes pinned by imports, with how many imports pin each.
pub type Pins = parking_lot::Mutex<HashMap<String, usize>>;

/// What adopting a volume found.
pub enum Adopted {
    /// This volume (same bytes) is already in the library.
    Existing(PathBuf, VolumePin),
    /// Copied (or found) in, reserved until the reservation is kept.
    New(Reservation),
}

impl Adopted {
    /// Where the volume is in the store.
    pub fn path(&self) -> &Path {
        match self {
            Adopted::Existing(p, _) => p,
            Adopted::New(r) => &r.path,
        }
    }
}

impl Library {
    /// Brings the volume at `from`, labelled `barcode` for `pool`, into the
    /// library; see the module documentation.
    pub fn adopt(
        self: &Arc<Self>,
        from: &Path,
        barcode: &str,
        pool: &str,
    ) -> Result<Adopted, TapeError> {
        let target = self.volume_path(barcode)?;
        let refuse = |why: String| TapeError::Format {
            what: "volume",
            why: format!("barcode {barcode} {why}"),
        };
        let src = open_regular(from)?;
        let len = src
            .metadata()
            .map_err(|e| TapeError::io(format!("volume {}", from.display()), e))?
            .len();
        // Compared before the lock (volumes are GiBs), checked unchanged
        // under it.
        let before = inode(&target);
        let same = before.is_some() && (same_file(&target, from) || same_content(&target, from));
        // The lock new_volume and recycle take: no barcode is chosen or
        // recycled meanwhile.
        let loaded = self.picking();
        if inode(&target) != before {
            return Err(refuse(
                "changed in the library while it was checked: run the import again".into(),
            ));
        }
        if let Some(v) = self.catalog.volume(barcode)? {
            if v.state != VolumeState::Scratch {
                return self.existing(v, same, &target);
            }
            if loaded.contains(barcode) {
                return Err(refuse("is being written by this store now".into()));
            }
        }
        if before.is_some() && !same {
            return Err(refuse(format!(
                "is taken: {} is in the library directory but not in the catalog, \
                 and holds other bytes (move it away, or import it)",
                target.display()
            )));
        }
        let in_place = before.is_some();
        self.catalog.reserve_volume(&VolumeRec {
            barcode: barcode.into(),
            pool: pool.into(),
            state: VolumeState::Importing,
            used: len,
            capacity: len.max(1),
            images: 0,
        })?;
        drop(loaded);
        let mut r = Reservation {
            lib: self.clone(),
            barcode: barcode.into(),
            path: target.clone(),
            linked: false,
            done: false,
        };
        if !in_place {
            copy_into(src, len, from, &target)?;
            r.linked = true;
        }
        Ok(Adopted::New(r))
    }

    fn existing(
        self: &Arc<Self>,
        v: VolumeRec,
        same: bool,
        target: &Path,
    ) -> Result<Adopted, TapeError> {
        let refuse = |why: &str| {
            Err(TapeError::Format {
                what: "volume",
                why: format!("barcode {} {why}", v.barcode),
            })
        };
        if v.state == VolumeState::Importing {
            return refuse("is being imported by another import now: run this one again after it");
        }
        if !same {
            return refuse("is already a different volume in this store");
        }
        *self.pinned.lock().entry(v.barcode.clone()).or_default() += 1;
        let pin = VolumePin {
            lib: self.clone(),
            barcode: v.barcode.clone(),
        };
        Ok(Adopted::Existing(target.to_path_buf(), pin))
    }
}

/// Opens a volume to import: a regular file (a FIFO or a device is
/// refused, never read), without following a symlink at the last step.
fn open_regular(from: &Path) -> Result<File, TapeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| TapeError::io(format!("volume {}", from.display()), e);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(from)
        .map_err(io)?;
    if !f.metadata().map_err(io)?.file_type().is_file() {
        return Err(TapeError::Format {
            what: "volume",
            why: format!("{} is not a regular file", from.display()),
        });
    }
    Ok(f)
}

/// Copies the first `len` bytes of `src` (opened from `from`) to a new
/// file at `to`: a random temporary name created exclusively, fsynced,
/// then linked to `to` (which must not exist: it is never replaced), the
/// temporary name removed and the directory fsynced.
fn copy_into(src: File, len: u64, from: &Path, to: &Path) -> Result<(), TapeError> {
    let io = |e| {
        TapeError::io(
            format!(
                "copying {} into the store as {}",
                from.display(),
                to.display()
            ),
            e,
        )
    };
    let dir = to.parent().unwrap_or(Path::new("."));
    let r: [u8; 8] = crate::crypto::random_array()?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{}.tmp", hex::encode(r)));
    let result = (|| {
        let mut out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?
        };
        use std::io::Read;
        crate::util::failpoint::hit(crate::util::failpoint::IMPORT_COPY)?;
        let copied = std::io::copy(&mut src.take(len), &mut out)?;
        if copied != len {
            return Err(std::io::Error::other(format!(
                "the volume shrank while it was copied ({copied} of {len} bytes)"
            )));
        }
        out.sync_all()?;
        std::fs::hard_link(&tmp, to)?;
        std::fs::remove_file(&tmp)?;
        crate::util::atomic::sync_dir(dir)
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io)
}

/// Device and inode of the file at `p` (not following a symlink), if any.
fn inode(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Whether two volume files hold the same bytes (streamed: volumes are GiBs).
fn same_content(a: &Path, b: &Path) -> bool {
    let hash = |p: &Path| -> Option<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        h.update_reader(File::open(p).ok()?).ok()?;
        Some(h.finalize())
    };
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    len(a).is_some()
        && len(a) == len(b)
        && matches!((hash(a), hash(b)), (Some(x), Some(y)) if x == y)
}
