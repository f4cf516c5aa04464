//! Bringing a volume written elsewhere into the library (import phase
//! two). The barcode is reserved in the catalog first, in the same
//! transaction that checks it is free, so neither a second import nor a
//! local writer making a new volume can take it; the copy is made under a
//! random name, fsynced, linked into place without replacing anything, and
//! its directory fsynced. Until the image that needs it commits, the
//! reservation owns the volume: dropped, it removes both file and record.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Library, TapeError};
use crate::catalog::{VolumeRec, VolumeState};

/// A volume copied in for an image not committed yet.
pub struct Reservation {
    lib: Arc<Library>,
    pub barcode: String,
    pub path: PathBuf,
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
        let _ = std::fs::remove_file(&self.path);
        if let Err(e) = self.lib.catalog.unreserve_volume(&self.barcode) {
            tracing::warn!(volume = %self.barcode, "import: releasing the barcode: {e}");
        }
    }
}

/// What adopting a volume found.
pub enum Adopted {
    /// This volume (same bytes) is already in the library.
    Existing(PathBuf),
    /// Copied in, reserved until [`Reservation::keep`].
    New(Reservation),
}

impl Adopted {
    /// Where the volume is in the store.
    pub fn path(&self) -> &Path {
        match self {
            Adopted::Existing(p) => p,
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
        let len = std::fs::metadata(from)
            .map_err(|e| TapeError::io(format!("volume {}", from.display()), e))?
            .len();
        let placeholder = VolumeRec {
            barcode: barcode.into(),
            pool: pool.into(),
            state: VolumeState::Importing,
            used: len,
            capacity: len.max(1),
            images: 0,
        };
        let existing = {
            // The lock new_volume takes: no barcode is chosen meanwhile.
            let _picking = self.picking();
            self.catalog.reserve_volume(&placeholder)?
        };
        if let Some(v) = existing {
            return self.existing(v, from, &target);
        }
        let r = Reservation {
            lib: self.clone(),
            barcode: barcode.into(),
            path: target.clone(),
            done: false,
        };
        copy_into(from, &target)?;
        Ok(Adopted::New(r))
    }

    fn existing(&self, v: VolumeRec, from: &Path, target: &Path) -> Result<Adopted, TapeError> {
        let refuse = |why: &str| {
            Err(TapeError::Format {
                what: "volume",
                why: format!("barcode {} {why}", v.barcode),
            })
        };
        if v.state == VolumeState::Importing {
            return refuse("is being imported by another import now: run this one again after it");
        }
        if !same_file(target, from) && !same_content(target, from) {
            return refuse("is already a different volume in this store");
        }
        Ok(Adopted::Existing(target.to_path_buf()))
    }
}

/// Copies `from` to a new file at `to`: a random temporary name created
/// exclusively, fsynced, then linked to `to` (which must not exist: it is
/// never replaced), the temporary name removed and the directory fsynced.
fn copy_into(from: &Path, to: &Path) -> Result<(), TapeError> {
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
    let tmp = dir.join(format!(".import-{}.tmp", hex::encode(r)));
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
        std::io::copy(&mut File::open(from)?, &mut out)?;
        out.sync_all()?;
        std::fs::hard_link(&tmp, to)?;
        std::fs::remove_file(&tmp)?;
        crate::util::atomic::sync_dir(dir)
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io)
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
