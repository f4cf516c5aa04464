//! Checking a library: every block of every committed image is read and
//! authenticated, and every volume's headers are scanned up to its
//! committed end. Damage is reported, never repaired: the operator decides.

use std::sync::Arc;

use super::format::FragmentKeys;
use super::scan::{fragment_at, scan_volume, verify_records};
use super::{ImageReader, Library, TapeError};
use crate::catalog::{ImageRec, VolumeState};
pub use crate::util::report::{CheckReport, Problem};

/// Checks every image and volume; `progress` is called with bytes read.
pub fn check_library(
    lib: &Arc<Library>,
    mut progress: impl FnMut(u64),
) -> Result<CheckReport, TapeError> {
    let mut r = CheckReport::default();
    for img in lib.catalog.images()? {
        if crate::catalog::lsu_of_pool(&img.pool).is_some() {
            continue;
        }
        let mut one = CheckReport::default();
        check_image(lib, &img, &mut one, &mut progress);
        // An image deleted (its volume perhaps recycled) while it was
        // checked is not damage: a mounted store changes under fsck.
        let troubled = !one.damaged.is_empty() || !one.unverified.is_empty();
        if troubled && lib.catalog.image(img.id)?.is_none() {
            continue;
        }
        r.images += 1;
        r.bytes += one.bytes;
        r.damaged.extend(one.damaged);
        r.unverified.extend(one.unverified);
    }
    for v in lib
        .catalog
        .volumes()?
        .into_iter()
        .filter(|v| !matches!(v.state, VolumeState::Scratch | VolumeState::Importing))
    {
        let subject = format!("volume {}", v.barcode);
        let what = match lib.volume_path(&v.barcode).and_then(|p| scan_volume(&p)) {
            Err(e) => Some(e.to_string()),
            Ok(s) if s.media.barcode != v.barcode => {
                Some(format!("media header says barcode {}", s.media.barcode))
            }
            Ok(s) => s
                .stopped
                .filter(|(at, _)| *at < v.used)
                .map(|(at, why)| format!("at offset {at}: {why}")),
        };
        // A volume recycled or relabelled while it was scanned is not
        // damage either.
        let moved = |now: Option<crate::catalog::VolumeRec>| {
            now.is_none_or(|n| {
                n.state == VolumeState::Scratch || n.pool != v.pool || n.used < v.used
            })
        };
        if what.is_some() && moved(lib.catalog.volume(&v.barcode)?) {
            continue;
        }
        r.volumes += 1;
        if let Some(what) = what {
            r.damaged.push(Problem::new(subject, what));
        }
    }
    Ok(r)
}

/// The header and file mark of each fragment on its volume say what the
/// catalog says, and (format 2, encrypted) carry a valid MAC.
fn check_records(lib: &Library, img: &ImageRec) -> Result<(), String> {
    let key = match &img.key_tag {
        Some(tag) => Some(lib.kms.key_by_tag(tag).map_err(|e| e.to_string())?),
        None => None,
    };
    for f in &img.fragments {
        let path = lib.volume_path(&f.volume).map_err(|e| e.to_string())?;
        let s = fragment_at(&path, f.header_offset).map_err(|e| e.to_string())?;
        let h = &s.header;
        if h.image_id != img.id
            || h.number != f.number
            || h.salt != f.salt
            || h.image_offset != f.image_offset
            || h.version != f.format
            || s.len != f.len
            || s.blocks != f.blocks
            || s.data_offset != f.data_offset
        {
            return Err(format!(
                "fragment {} on volume {}: its header or file mark does not match the catalog",
                f.number, f.volume
            ));
        }
        if let Some(k) = &key {
            let mac = FragmentKeys::derive(k, &f.salt).mac;
            verify_records(&s, &f.volume, &mac)
                .map_err(|why| format!("fragment {} on volume {}: {why}", f.number, f.volume))?;
        }
    }
    Ok(())
}

fn check_image(
    lib: &Arc<Library>,
    img: &ImageRec,
    r: &mut CheckReport,
    progress: &mut impl FnMut(u64),
) {
    let subject = format!("image pools/{}/{}", img.pool, img.path);
    let reader = match ImageReader::open(lib, img.clone()) {
        Ok(rd) => rd,
        Err(e) => {
            let missing = matches!(&e, TapeError::Kms { source, .. } if source.is_missing_key());
            return r.not_opened(img.id, subject, missing, e.to_string());
        }
    };
    if let Err(what) = check_records(lib, img) {
        r.damaged
            .push(Problem::of_image(img.id, subject.clone(), what));
    }
    let bs = u64::from(img.block_size);
    for f in &img.fragments {
        for bi in 0..f.blocks {
            let len = (f.len - bi * bs).min(bs);
            match reader.read_at(f.image_offset + bi * bs, len as usize) {
                Ok(d) => {
                    r.bytes += d.len() as u64;
                    progress(d.len() as u64);
                }
                Err(e) => r
                    .damaged
                    .push(Problem::of_image(img.id, subject.clone(), e.to_string())),
            }
        }
    }
}
