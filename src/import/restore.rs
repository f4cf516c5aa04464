//! Phase two: read, authenticate and catalog the images phase one found.

use serde::Serialize;

use super::survey::{ImageSurvey, Survey};
use crate::catalog::{
    CatalogError, Commit, FileAttrs, FileEntry, Fragment, ImageRec, VolumeState, VolumeUpdate,
};
use crate::crypto::{self, SecretKey};
use crate::pipeline::filelist::Lister;
use crate::store::Store;
use crate::tape::scan::{fragment_at, read_fragment};
use crate::tape::{Adopted, TapeError};
use crate::util::clock::now_ns;

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
    let key = store.keys.client().key_by_tag(tag).map_err(|e| {
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

/// Imports one image: its volumes are brought into the store first
/// (barcodes reserved), then the fragments are read and authenticated from
/// those copies (what is verified is what is kept), then the image is
/// committed without replacing anything. A failure leaves nothing behind.
fn import_image(
    store: &Store,
    img: &ImageSurvey,
    key: Option<&SecretKey>,
    added: &mut Vec<String>,
    progress: &mut impl FnMut(u64),
) -> Result<(), TapeError> {
    let mut volumes: Vec<(String, Adopted)> = Vec::new();
    for f in &img.found {
        if volumes.iter().any(|(b, _)| b == &f.barcode) {
            continue;
        }
        let a = store.library.adopt(&f.path, &f.barcode, &f.volume_pool)?;
        same_label(a.path(), &f.barcode)?;
        volumes.push((f.barcode.clone(), a));
    }
    let local = |barcode: &str| {
        volumes
            .iter()
            .find(|(b, _)| b == barcode)
            .map(|(_, a)| a.path().to_path_buf())
            .expect("adopted above")
    };
    let mut hash = crypto::ImageDigest::new(&store.library.digest_key);
    let mut lister = Lister::new();
    for f in &img.found {
        let path = local(&f.barcode);
        let here = fragment_at(&path, f.frag.header_offset)?;
        if here != f.frag {
            return Err(TapeError::Format {
                what: "volume",
                why: format!(
                    "volume {}: fragment {} is not what phase one read (the volume changed)",
                    f.barcode, f.frag.header.number
                ),
            });
        }
        read_fragment(&path, &f.barcode, &here, key, |d| {
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
    let updates: Vec<VolumeUpdate> = volumes
        .iter()
        .map(|(b, a)| {
            let used = std::fs::metadata(a.path()).map(|m| m.len()).unwrap_or(0);
            VolumeUpdate {
                barcode: b.clone(),
                used,
                state: VolumeState::Full,
                count_only: matches!(a, Adopted::Existing(..)),
            }
        })
        .collect();
    commit(store, img, hash.finalize(), &updates, &files)?;
    for (b, a) in volumes {
        if let Adopted::New(r) = a {
            r.keep();
            added.push(b);
        }
    }
    tracing::info!(image = %img.name(), "image imported");
    Ok(())
}

/// The volume in the store is labelled with the barcode phase one read
/// (its media header, read again from the store's own copy).
fn same_label(path: &std::path::Path, barcode: &str) -> Result<(), TapeError> {
    use std::io::Read;
    let mut b = vec![0u8; crate::tape::format::MEDIA_HEADER_LEN as usize];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| TapeError::io(format!("volume {}", path.display()), e))?;
    let h = crate::tape::format::MediaHeader::decode(&b)?;
    if h.barcode != barcode {
        return Err(TapeError::Format {
            what: "volume",
            why: format!(
                "volume {barcode}: its media header now says {} (the volume changed)",
                h.barcode
            ),
        });
    }
    Ok(())
}

fn commit(
    store: &Store,
    img: &ImageSurvey,
    digest: [u8; 32],
    updates: &[VolumeUpdate],
    files: &[FileEntry],
) -> Result<(), TapeError> {
    crate::util::failpoint::hit(crate::util::failpoint::IMPORT_COMMIT)
        .map_err(|e| TapeError::io(format!("import of image {}", img.name()), e))?;
    let h = &img.found[0].frag.header;
    let now = now_ns();
    // Only the permission bits come from the volume: it is a regular file
    // here whatever the header says, and never setuid, setgid or sticky.
    // The header of an encrypted format-1 fragment is not authenticated:
    // its owner and mode could hand decrypted data to anyone, so such an
    // image is root's, 0600.
    let authentic = h.key_tag.is_none() || h.version >= 2;
    let attrs = FileAttrs {
        mode: libc::S_IFREG | if authentic { h.mode & 0o777 } else { 0o600 },
        uid: if authentic { h.uid } else { 0 },
        gid: if authentic { h.gid } else { 0 },
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
    // Never over an image of this store: the name is decided in the
    // commit's own transaction, the second choice if the first is taken.
    for name in [
        base.to_string(),
        format!("{base}.imported-{}", &img.id[..8]),
    ] {
        // The pool and folders are made in the image's own transaction.
        match store.catalog.commit_image_under(
            &img.pool,
            &parts,
            dir_attrs,
            Commit {
                ino: store.catalog.alloc_ino(),
                parent: 0,
                name: &name,
                attrs,
                image: &rec,
                volumes: updates,
                replace: false,
                files: Some(files),
            },
        ) {
            // Never over an image or a directory of this store.
            Err(CatalogError::Exists(_) | CatalogError::IsDir(_)) => continue,
            r => return r.map(drop).map_err(TapeError::from),
        }
    }
    Err(TapeError::Format {
        what: "image",
        why: format!(
            "{}: its name and {base}.imported-… are both taken",
            img.name()
        ),
    })
}
