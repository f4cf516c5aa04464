//! Phase two: read, authenticate and catalog the images phase one found.

use std::path::Path;

use serde::Serialize;

use super::filelist::Lister;
use super::survey::{Found, ImageSurvey, Survey};
use crate::catalog::{
    Commit, FileAttrs, FileEntry, Fragment, ImageRec, VolumeRec, VolumeState, VolumeUpdate,
};
use crate::crypto::{self, SecretKey};
use crate::store::Store;
use crate::tape::scan::read_fragment;
use crate::tape::{TapeError, now_ns};

/// What phase two did.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub imported: Vec<String>,
    /// Already in the catalog (an earlier run, or this store's own image).
    pub already: Vec<String>,
    /// `image: needs key tag T`.
    pub missing_keys: Vec<String>,
    /// `image: why` (failed authentication, unreadable, wrong key).
    pub damaged: Vec<String>,
    /// `image: missing volume …`.
    pub incomplete: Vec<String>,
    /// `image: why` for images whose headers say something impossible or
    /// forbidden (a name that is not valid, clear data in an encrypted
    /// pool, a size or offset the fragments do not hold).
    pub refused: Vec<String>,
    pub volumes_added: Vec<String>,
}

impl RestoreReport {
    /// Whether anything was left behind.
    pub fn failed(&self) -> bool {
        !(self.missing_keys.is_empty()
            && self.damaged.is_empty()
            && self.incomplete.is_empty()
            && self.refused.is_empty())
    }
}

/// Imports every complete image of the survey not yet in the catalog.
pub fn restore(store: &Store, survey: &Survey, mut progress: impl FnMut(u64)) -> RestoreReport {
    let mut r = RestoreReport::default();
    r.refused
        .extend(survey.volumes.iter().filter_map(|v| v.refused.clone()));
    for img in &survey.images {
        let name = img.name();
        if !img.complete() {
            r.incomplete
                .push(format!("{name}: missing {}", img.missing.join(", ")));
            continue;
        }
        if !img.problems.is_empty() {
            r.refused
                .push(format!("{name}: {}", img.problems.join("; ")));
            continue;
        }
        match store
            .catalog
            .image(u128::from_str_radix(&img.id, 16).unwrap_or(0))
        {
            Ok(Some(_)) => {
                r.already.push(name);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                r.damaged.push(format!("{name}: catalog: {e}"));
                continue;
            }
        }
        let key = match key_for(store, img) {
            Ok(k) => k,
            Err(Outcome::MissingKey(tag)) => {
                r.missing_keys.push(format!("{name}: needs key tag {tag}"));
                continue;
            }
            Err(Outcome::Damaged(why)) => {
                r.damaged.push(format!("{name}: {why}"));
                continue;
            }
        };
        match import_image(
            store,
            img,
            key.as_ref(),
            &mut r.volumes_added,
            &mut progress,
        ) {
            Ok(()) => r.imported.push(name),
            Err(e) => r.damaged.push(format!("{name}: {e}")),
        }
    }
    r
}

enum Outcome {
    MissingKey(String),
    Damaged(String),
}

/// The key an image needs, by the tag on tape, checked against the key
/// check value on tape.
fn key_for(store: &Store, img: &ImageSurvey) -> Result<Option<SecretKey>, Outcome> {
    let Some(tag) = &img.key_tag else {
        return Ok(None);
    };
    let key = store.kms.key_by_tag(tag).map_err(|e| {
        if e.is_missing_key() {
            Outcome::MissingKey(tag.clone())
        } else {
            Outcome::Damaged(e.to_string())
        }
    })?;
    if crypto::key_check_value(&key) != img.found[0].frag.header.kcv {
        return Err(Outcome::Damaged(format!(
            "the KMS key with tag {tag} is not the key this image was written with"
        )));
    }
    Ok(Some(key))
}

fn import_image(
    store: &Store,
    img: &ImageSurvey,
    key: Option<&SecretKey>,
    added: &mut Vec<String>,
    progress: &mut impl FnMut(u64),
) -> Result<(), TapeError> {
    let mut hash = crypto::ImageDigest::new(&store.library.digest_key);
    let mut lister = Lister::new();
    for f in &img.found {
        read_fragment(&f.path, &f.barcode, &f.frag, key, |d| {
            hash.update(d);
            lister.feed(d);
            progress(d.len() as u64);
        })?;
    }
    let size = img.size.unwrap_or(0);
    let h = &img.found[0].frag.header;
    let files = lister.finish().unwrap_or_else(|| {
        vec![FileEntry {
            path: img.path.clone(),
            size,
            mode: h.mode,
            mtime: (h.mtime_ns.max(0) / 1_000_000_000) as u64,
            kind: b'I',
            link: None,
            offset: 0,
        }]
    });
    let mut updates = Vec::new();
    for f in &img.found {
        if let Some(u) = adopt_volume(store, f, added)? {
            updates.push(u);
        }
    }
    updates.dedup_by(|a, b| a.barcode == b.barcode);
    commit(store, img, hash.finalize(), &updates)?;
    let id = u128::from_str_radix(&img.id, 16).unwrap_or(0);
    store.catalog.put_files(id, &files)?;
    tracing::info!(image = %format!("{}/{}", img.pool, img.path), "image imported");
    Ok(())
}

/// Copies a volume into the store (once) and registers it, full, so
/// nothing is ever appended to it.
fn adopt_volume(
    store: &Store,
    f: &Found,
    added: &mut Vec<String>,
) -> Result<Option<VolumeUpdate>, TapeError> {
    let target = store.library.volume_path(&f.barcode)?;
    if let Some(v) = store.catalog.volume(&f.barcode)? {
        if !same_file(&target, &f.path) && !same_content(&target, &f.path) {
            return Err(TapeError::Format {
                what: "volume",
                why: format!(
                    "barcode {} is already a different volume in this store",
                    f.barcode
                ),
            });
        }
        return Ok(Some(VolumeUpdate {
            barcode: v.barcode,
            used: v.used,
            state: v.state,
        }));
    }
    if !same_file(&target, &f.path) {
        copy_durably(&f.path, &target)?;
    }
    let len = std::fs::metadata(&target)
        .map_err(|e| TapeError::io(format!("volume {}", f.barcode), e))?
        .len();
    let pool = f.frag.header.pool.clone();
    let rec = VolumeRec {
        barcode: f.barcode.clone(),
        pool,
        state: VolumeState::Full,
        used: len,
        capacity: len.max(1),
        images: 0,
    };
    store.catalog.put_volume(&rec)?;
    added.push(f.barcode.clone());
    Ok(Some(VolumeUpdate {
        barcode: rec.barcode,
        used: rec.used,
        state: VolumeState::Full,
    }))
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Whether two volume files hold the same bytes (streamed: volumes are GiBs).
fn same_content(a: &Path, b: &Path) -> bool {
    let hash = |p: &Path| -> Option<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(p).ok()?).ok()?;
        Some(h.finalize())
    };
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    len(a).is_some()
        && len(a) == len(b)
        && matches!((hash(a), hash(b)), (Some(x), Some(y)) if x == y)
}

fn copy_durably(from: &Path, to: &Path) -> Result<(), TapeError> {
    let tmp = to.with_extension("kvol.importing");
    let io = |e| TapeError::io(format!("copying {} into the store", from.display()), e);
    std::fs::copy(from, &tmp).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, to).map_err(io)?;
    if let Some(dir) = to.parent() {
        crate::util::atomic::sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

fn commit(
    store: &Store,
    img: &ImageSurvey,
    digest: [u8; 32],
    updates: &[VolumeUpdate],
) -> Result<(), TapeError> {
    let h = &img.found[0].frag.header;
    let now = now_ns();
    // Only the permission bits come from the volume: it is a regular file
    // here whatever the header says, and never setuid, setgid or sticky.
    let attrs = FileAttrs {
        mode: libc::S_IFREG | (h.mode & 0o777),
        uid: h.uid,
        gid: h.gid,
        atime_ns: h.mtime_ns,
        mtime_ns: h.mtime_ns,
        ctime_ns: now,
    };
    let dir_attrs = FileAttrs {
        mode: 0o40755,
        uid: 0,
        gid: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
    };
    // Survey checked the path: relative, no empty, '.' or '..' component.
    let mut parts: Vec<&str> = img.path.split('/').collect();
    let base = parts.pop().unwrap_or("image");
    let parent = store.catalog.ensure_dirs(&img.pool, &parts, dir_attrs)?;
    let mut name = base.to_string();
    if store.catalog.name_taken(parent, &name)? {
        name = format!("{base}.imported-{}", &img.id[..8]);
    }
    let fragments = img
        .found
        .iter()
        .map(|f| Fragment {
            volume: f.barcode.clone(),
            number: f.frag.header.number,
            header_offset: f.frag.header_offset,
            data_offset: f.frag.data_offset,
            image_offset: f.frag.header.image_offset,
            len: f.frag.len,
            blocks: f.frag.blocks,
            salt: f.frag.header.salt,
            last_flags: f.frag.last_flags,
            format: f.frag.header.version,
        })
        .collect();
    let rec = ImageRec {
        id: u128::from_str_radix(&img.id, 16).unwrap_or(0),
        pool: img.pool.clone(),
        path: img.path.clone(),
        size: img.size.unwrap_or(0),
        block_size: h.block_size,
        key_tag: img.key_tag.clone(),
        kcv: img.key_tag.as_ref().map(|_| hex::encode(h.kcv)),
        digest: Some(digest),
        created_ns: h.created_ns,
        fragments,
    };
    let ino = store.catalog.alloc_ino();
    store.catalog.commit_image(Commit {
        ino,
        parent,
        name: &name,
        attrs,
        image: &rec,
        volumes: updates,
    })?;
    Ok(())
}
