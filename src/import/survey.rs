//! Phase one: what a set of volumes holds, without a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::kms::KmsClient;
use crate::tape::format::LAST_IN_IMAGE;
use crate::tape::is_encrypted_pool;
use crate::tape::scan::{ScannedFragment, scan_volume};
use crate::util::names::{check_barcode, check_name, check_path};

/// A volume given to import.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeSurvey {
    pub path: PathBuf,
    pub barcode: String,
    pub pool: String,
    pub capacity: u64,
    pub fragments: usize,
    /// Why (part of) it could not be read, with the offset.
    pub problem: Option<String>,
    /// Why none of it is imported (its barcode is not a valid barcode).
    pub refused: Option<String>,
}

/// A fragment of an image, where it was found.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub barcode: String,
    /// The pool the volume's media header is labelled with.
    pub volume_pool: String,
    pub frag: ScannedFragment,
}

/// An image found on the volumes.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSurvey {
    pub id: String,
    pub pool: String,
    pub path: String,
    /// Known when the image's last fragment was found.
    pub size: Option<u64>,
    pub encrypted: bool,
    pub key_tag: Option<String>,
    /// Whether this store's KMS can decrypt with that key now.
    pub have_key: bool,
    pub volumes: Vec<String>,
    pub fragments: usize,
    /// Volumes (by barcode where known) that hold missing fragments.
    pub missing: Vec<String>,
    /// Why phase two refuses the image (its headers contradict each
    /// other or name something invalid); empty for a sound image.
    pub problems: Vec<String>,
    #[serde(skip)]
    pub found: Vec<Found>,
}

impl ImageSurvey {
    /// All fragments present, ending with the image's last.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.size.is_some()
    }

    /// `POOL/PATH` as the headers say, control characters escaped.
    pub fn name(&self) -> String {
        format!("{}/{}", self.pool.escape_debug(), self.path.escape_debug())
    }
}

/// What phase one found.
#[derive(Debug, Default, Serialize)]
pub struct Survey {
    pub volumes: Vec<VolumeSurvey>,
    pub images: Vec<ImageSurvey>,
}

/// Reads the headers of every volume and groups fragments into images;
/// `progress` is called with the number of volumes read so far.
pub fn survey(kms: &dyn KmsClient, paths: &[PathBuf], mut progress: impl FnMut(usize)) -> Survey {
    let mut s = Survey::default();
    let mut by_image: BTreeMap<u128, Vec<Found>> = BTreeMap::new();
    for (n, path) in paths.iter().enumerate() {
        progress(n);
        let (vol, found) = survey_volume(path);
        for f in found {
            by_image.entry(f.frag.header.image_id).or_default().push(f);
        }
        s.volumes.push(vol);
    }
    progress(paths.len());
    for (id, mut found) in by_image {
        found.sort_by_key(|f| f.frag.header.number);
        found.dedup_by_key(|f| f.frag.header.number);
        s.images.push(image(kms, id, found));
    }
    s
}

fn survey_volume(path: &Path) -> (VolumeSurvey, Vec<Found>) {
    let mut v = VolumeSurvey {
        path: path.to_path_buf(),
        barcode: String::new(),
        pool: String::new(),
        capacity: 0,
        fragments: 0,
        problem: None,
        refused: None,
    };
    match scan_volume(path) {
        Err(e) => {
            v.problem = Some(format!("{}: {e}", path.display()));
            (v, Vec::new())
        }
        Ok(scan) if check_barcode(&scan.media.barcode).is_err() => {
            let e = check_barcode(&scan.media.barcode).unwrap_err();
            v.barcode = scan.media.barcode.escape_debug().to_string();
            v.refused = Some(format!("volume {}: {e}", path.display()));
            (v, Vec::new())
        }
        Ok(scan) => {
            v.barcode = scan.media.barcode.clone();
            v.pool = scan.media.pool.escape_debug().to_string();
            v.capacity = scan.media.capacity;
            v.fragments = scan.fragments.len();
            v.problem = scan
                .stopped
                .map(|(at, why)| format!("volume {} at offset {at}: {why}", scan.media.barcode));
            let found = scan
                .fragments
                .into_iter()
                .map(|frag| Found {
                    path: path.to_path_buf(),
                    barcode: scan.media.barcode.clone(),
                    volume_pool: scan.media.pool.clone(),
                    frag,
                })
                .collect();
            (v, found)
        }
    }
}

fn image(kms: &dyn KmsClient, id: u128, found: Vec<Found>) -> ImageSurvey {
    let first = &found[0].frag.header;
    let key_tag = first.key_tag.map(hex::encode);
    let have_key = key_tag.as_deref().is_none_or(|t| {
        kms.key_state(t)
            .ok()
            .flatten()
            .is_some_and(|s| s.can_decrypt())
    });
    let mut missing = Vec::new();
    let mut expect = 0u32;
    let mut prev_next = String::new();
    for f in &found {
        while expect < f.frag.header.number {
            missing.push(missing_name(expect, &prev_next));
            prev_next.clear();
            expect += 1;
        }
        prev_next = f.frag.mark.next_volume.clone();
        expect = f.frag.header.number + 1;
    }
    let last = &found[found.len() - 1].frag;
    if !last.mark.last_fragment {
        missing.push(missing_name(expect, &last.mark.next_volume));
    }
    let mut volumes: Vec<String> = found.iter().map(|f| f.barcode.clone()).collect();
    volumes.dedup();
    let problems = if missing.is_empty() {
        problems(&found)
    } else {
        Vec::new()
    };
    ImageSurvey {
        id: format!("{id:032x}"),
        pool: first.pool.clone(),
        path: first.path.clone(),
        size: last.mark.last_fragment.then_some(last.mark.image_size),
        encrypted: key_tag.is_some(),
        key_tag,
        have_key,
        volumes,
        fragments: found.len(),
        missing,
        problems,
        found,
    }
}

/// What phase two must refuse in an image whose fragments are all here
/// (in number order): invalid names, fragments that disagree, clear data
/// in an encrypted pool or the reverse, offsets and sizes the fragments
/// do not hold. Phase one reports it; no key is needed to see it.
fn problems(found: &[Found]) -> Vec<String> {
    let mut out = Vec::new();
    let first = &found[0].frag.header;
    if let Err(e) = check_name(&first.pool) {
        out.push(format!("pool name: {e}"));
    }
    if let Err(e) = check_path(&first.path) {
        out.push(format!("path: {e}"));
    }
    let encrypted = first.key_tag.is_some();
    if !out.is_empty() {
        return out;
    }
    match (is_encrypted_pool(&first.pool), encrypted) {
        (true, false) => out.push(format!(
            "its data is not encrypted, but pool {} is an encrypted pool (ENCR_): clear data is never imported there",
            first.pool
        )),
        (false, true) => out.push(format!(
            "its data is encrypted, but pool {} is not an encrypted pool (ENCR_*): it is not imported where it would look like clear data",
            first.pool
        )),
        _ => {}
    }
    let mut offset = 0u64;
    for f in found {
        let h = &f.frag.header;
        let n = h.number;
        if h.pool != first.pool || h.path != first.path {
            out.push(format!(
                "fragment {n} names another pool or path than fragment 0"
            ));
        }
        if h.key_tag != first.key_tag || h.kcv != first.kcv || h.block_size != first.block_size {
            out.push(format!(
                "fragment {n} has another key tag, key check value or block size than fragment 0"
            ));
        }
        if f.volume_pool != h.pool {
            out.push(format!(
                "fragment {n} is on volume {}, which is labelled for another pool",
                f.barcode
            ));
        }
        if h.image_offset != offset {
            out.push(format!(
                "fragment {n} says it starts at image offset {}, but the fragments before it end at offset {offset}",
                h.image_offset
            ));
        }
        offset = offset.saturating_add(f.frag.len);
        let marks_end = f.frag.mark.last_fragment;
        if marks_end != (f.frag.last_flags & LAST_IN_IMAGE != 0) {
            out.push(format!(
                "fragment {n}: its file mark and its last block disagree on whether the image ends there"
            ));
        }
        if marks_end && f.frag.mark.image_size != offset {
            out.push(format!(
                "fragment {n}: its file mark says image size {}, but the fragments hold {offset} bytes",
                f.frag.mark.image_size
            ));
        }
    }
    out
}

fn missing_name(number: u32, barcode: &str) -> String {
    if barcode.is_empty() {
        format!("fragment {number} (volume not known)")
    } else {
        format!("volume {barcode} (fragment {number})")
    }
}
