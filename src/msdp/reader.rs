//! Reading an LSU image at random offsets: the recipe gives the segment
//! that holds an offset, the index gives where that segment is, the
//! record is read, checked against its fingerprint, and opened with its
//! DEK (unwrapped by a cached KEK). A few segments are kept per open image
//! so the kernel's sequential reads open each segment once; a large
//! request opens its second half on another core.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use super::container::{RecordError, read_record};
use super::segment::{OpenError, open_record};
use super::state::LsuState;
use super::{Msdp, MsdpError};
use crate::catalog::{ImageRec, KekRec, LsuRec, SegKind, SegRec, SegRef, lsu_of_pool};
use crate::kms::KeyState;

type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

/// Segments kept per open image (covers the kernel's parallel readahead).
const CACHED: usize = 16;

/// An open LSU image.
pub struct LsuReader {
    msdp: Arc<Msdp>,
    state: Arc<LsuState>,
    rec: LsuRec,
    /// The key dictionary as last read (again when a moved segment names
    /// a KEK made after the open).
    keks: Mutex<Arc<Vec<KekRec>>>,
    img: ImageRec,
    recipe: Vec<SegRef>,
    /// Image offset of each segment.
    starts: Vec<u64>,
    locs: Mutex<Vec<SegRec>>,
    cache: Mutex<VecDeque<(usize, Slot)>>,
}

impl LsuReader {
    /// Opens an image. The keys its segments need must be usable now: a
    /// root or legacy key deprecated in the KMS fails the open with ENOKEY.
    pub fn open(msdp: &Arc<Msdp>, img: ImageRec) -> Result<Self, MsdpError> {
        let name = lsu_of_pool(&img.pool).ok_or_else(|| MsdpError::NoLsu(img.pool.clone()))?;
        let rec = msdp
            .catalog
            .lsu(name)?
            .ok_or_else(|| MsdpError::NoLsu(name.into()))?;
        let state = msdp.state(name)?;
        let recipe = msdp.catalog.recipe(img.id)?.unwrap_or_default();
        let total: u64 = recipe.iter().map(|r| u64::from(r.len)).sum();
        if total != img.size || recipe.iter().any(|r| r.len == 0) {
            let e = MsdpError::Integrity {
                lsu: name.into(),
                container: 0,
                offset: 0,
                why: format!(
                    "image {}: its recipe holds {total} bytes in {} segments, the catalog says {} bytes",
                    img.path,
                    recipe.len(),
                    img.size
                ),
            };
            tracing::error!("{e}");
            return Err(e);
        }
        let fps: Vec<_> = recipe.iter().map(|r| r.fp).collect();
        let locs = msdp
            .catalog
            .segments(name, &fps)?
            .into_iter()
            .zip(&recipe)
            .map(|(l, r)| {
                l.ok_or_else(|| MsdpError::Integrity {
                    lsu: name.into(),
                    container: 0,
                    offset: 0,
                    why: format!(
                        "segment {} of image {} is missing from the index",
                        hex::encode(&r.fp[..8]),
                        img.path
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keks = msdp.catalog.keks(name)?;
        check_keys(msdp, &rec, &keks, &locs)?;
        let mut starts = Vec::with_capacity(recipe.len());
        let mut pos = 0u64;
        for r in &recipe {
            starts.push(pos);
            pos += u64::from(r.len);
        }
        Ok(Self {
            msdp: msdp.clone(),
            state,
            rec,
            keks: Mutex::new(Arc::new(keks)),
            img,
            recipe,
            starts,
            locs: Mutex::new(locs),
            cache: Mutex::default(),
        })
    }

    /// Up to `size` bytes from `offset`.
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>, MsdpError> {
        let end = (offset + size as u64).min(self.img.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let first = self.segment_at(offset);
        let last = self.segment_at(end - 1);
        self.prefetch(first, last);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        for i in first..=last {
            let seg = self.segment(i)?;
            let from = (pos - self.starts[i]) as usize;
            let n = (seg.len() - from).min((end - pos) as usize);
            out.extend_from_slice(&seg[from..from + n]);
            pos += n as u64;
        }
        Ok(out)
    }

    fn segment_at(&self, pos: u64) -> usize {
        self.starts.partition_point(|&s| s <= pos) - 1
    }

    fn prefetch(&self, first: usize, last: usize) {
        if last <= first {
            return;
        }
        let mid = first + (last - first).div_ceil(2);
        rayon::join(
            || (mid..=last).for_each(|i| drop(self.segment(i))),
            || (first..mid).for_each(|i| drop(self.segment(i))),
        );
    }

    fn segment(&self, i: usize) -> Result<Arc<Vec<u8>>, MsdpError> {
        let slot = {
            let mut cache = self.cache.lock();
            match cache.iter().find(|(j, _)| *j == i) {
                Some((_, s)) => s.clone(),
                None => {
                    let s: Slot = Arc::default();
                    cache.push_back((i, s.clone()));
                    if cache.len() > CACHED {
                        cache.pop_front();
                    }
                    s
                }
            }
        };
        let mut data = slot.lock();
        if let Some(d) = data.as_ref() {
            return Ok(d.clone());
        }
        let d = Arc::new(self.load(i)?);
        *data = Some(d.clone());
        Ok(d)
    }

    /// Reads and opens segment `i`; if its container is gone (a reclaim
    /// moved it), looks its place up again once.
    fn load(&self, i: usize) -> Result<Vec<u8>, MsdpError> {
        let fp = self.recipe[i].fp;
        let loc = self.locs.lock()[i].clone();
        match self.load_from(&loc, &fp) {
            Err(Retry) => {
                self.state.forget_file(loc.container);
                let now = self.msdp.catalog.segments(&self.rec.name, &[fp])?[0]
                    .clone()
                    .ok_or_else(|| self.damaged(&loc, "segment no longer in the index".into()))?;
                self.locs.lock()[i] = now.clone();
                self.load_from(&now, &fp)
                    .map_err(|_| self.damaged(&now, "container missing or not readable".into()))?
            }
            Ok(r) => r,
        }
    }

    fn load_from(&self, loc: &SegRec, fp: &[u8; 32]) -> Result<Result<Vec<u8>, MsdpError>, Retry> {
        let (h, buf) = match read_record(&self.state, loc.container, loc.offset, loc.len) {
            Ok(x) => x,
            Err(RecordError::Missing(_)) => return Err(Retry),
            Err(RecordError::Io(e)) => return Ok(Err(self.damaged(loc, format!("read: {e}")))),
            Err(RecordError::Damaged(why)) => return Ok(Err(self.damaged(loc, why))),
        };
        if &h.fp != fp {
            return Err(Retry);
        }
        let keks = match self.keks_for(loc) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(
            match open_record(&self.msdp, &self.rec, &keks, fp, loc, &h, buf) {
                Ok(p) => Ok(p),
                Err(OpenError::Key(e)) => Err(e),
                Err(OpenError::Damaged(why)) => Err(self.damaged(loc, why)),
            },
        )
    }

    /// The key dictionary that holds the KEK of `loc`: a segment a
    /// conversion or reclaim moved after the open may be under a KEK made
    /// since; the dictionary is read again once, and the root keys of its
    /// new KEKs are checked as at open.
    fn keks_for(&self, loc: &SegRec) -> Result<Arc<Vec<KekRec>>, MsdpError> {
        let mut keks = self.keks.lock();
        if loc.kind == SegKind::Kek && !keks.iter().any(|k| k.id == loc.kek) {
            let fresh = self.msdp.catalog.keks(&self.rec.name)?;
            let tags: BTreeSet<String> = fresh
                .iter()
                .filter(|k| !keks.iter().any(|o| o.id == k.id))
                .map(|k| k.wrapped.root_tag.clone())
                .collect();
            check_tags(&self.msdp, &self.rec, tags)?;
            *keks = Arc::new(fresh);
        }
        Ok(keks.clone())
    }

    fn damaged(&self, loc: &SegRec, why: String) -> MsdpError {
        let e = MsdpError::Integrity {
            lsu: self.rec.name.clone(),
            container: loc.container,
            offset: loc.offset,
            why: format!("image {}: {why}", self.img.path),
        };
        tracing::error!("{e}");
        e
    }
}

/// The place of a segment changed under the reader.
struct Retry;

/// Every root or legacy key the image's segments need is usable now
/// (checked at open, so a key deprecated a moment ago is refused even if
/// its KEK is still cached). An unreachable KMS is not a refusal: what the
/// cache holds can still be served.
fn check_keys(
    msdp: &Msdp,
    rec: &LsuRec,
    keks: &[KekRec],
    locs: &[SegRec],
) -> Result<(), MsdpError> {
    let mut tags = BTreeSet::new();
    let used: BTreeSet<u32> = locs
        .iter()
        .filter(|l| l.kind == SegKind::Kek)
        .map(|l| l.kek)
        .collect();
    for k in keks.iter().filter(|k| used.contains(&k.id)) {
        tags.insert(k.wrapped.root_tag.clone());
    }
    if locs.iter().any(|l| l.kind == SegKind::Legacy) {
        tags.extend(rec.legacy_tags.iter().cloned());
    }
    check_tags(msdp, rec, tags)
}

/// Each of `tags` names a KMS key usable for reading now.
fn check_tags(msdp: &Msdp, rec: &LsuRec, tags: BTreeSet<String>) -> Result<(), MsdpError> {
    for tag in tags {
        match msdp.kms.key_state(&tag) {
            Ok(Some(KeyState::Active | KeyState::Inactive)) => {}
            Ok(Some(state)) => {
                return Err(MsdpError::kms(
                    format!("LSU {} root key {tag}", rec.name),
                    crate::kms::KmsError::KeyUnusable {
                        tag,
                        state,
                        purpose: "read LSU data",
                    },
                ));
            }
            Ok(None) => {
                return Err(MsdpError::kms(
                    format!("LSU {}", rec.name),
                    crate::kms::KmsError::NoSuchTag(tag),
                ));
            }
            Err(e) if e.is_temporary() => {
                tracing::warn!(lsu = %rec.name, tag, "KMS unreachable at open; serving from cached keys: {e}");
            }
            Err(e) => {
                return Err(MsdpError::kms(
                    format!("LSU {} root key {tag}", rec.name),
                    e,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Commit, KekPolicy, MSDP_INO};
    use crate::testing::{dir_attrs, store_with_lsu};

    /// A catalog record that does not hold together (an image in an LSU
    /// without a recipe for its size) is refused at open with an error,
    /// not a panic of the daemon at the first read.
    #[test]
    fn an_image_without_its_recipe_is_refused_at_open() {
        let (_t, s) = store_with_lsu(KekPolicy::default());
        let parent = s.catalog.lookup(MSDP_INO, "L").unwrap().unwrap().ino;
        let img = ImageRec {
            id: 7,
            pool: "msdp/L".into(),
            path: "x".into(),
            size: 1000,
            block_size: 0,
            key_tag: None,
            kcv: None,
            digest: None,
            created_ns: 0,
            fragments: Vec::new(),
        };
        s.catalog
            .commit_image(Commit {
                ino: s.catalog.alloc_ino(),
                parent,
                name: "x",
                attrs: dir_attrs(),
                image: &img,
                volumes: &[],
                replace: true,
                files: None,
            })
            .unwrap();
        let e = LsuReader::open(&s.msdp, img).err().expect("refused");
        assert!(e.to_string().contains("recipe"), "{e}");
    }
}
