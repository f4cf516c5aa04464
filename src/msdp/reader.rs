//! Reading an LSU image at random offsets: the recipe gives the segment
//! that holds an offset, the index gives where that segment is, the
//! record is read, checked against its fingerprint, and opened with its
//! DEK (unwrapped by a cached KEK). Segments a request covers whole are
//! decrypted straight into the reply, on every core at once; a segment
//! covered in part is kept per open image so the next request (the
//! kernel reads sequentially) does not open it again.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use super::container::{RecordError, read_record_with};
use super::format::{SEGMENT_HEADER_LEN, TAG_LEN};
use super::segment::{OpenError, Plain, open_record, open_record_into};
use super::state::{FileError, LsuState};
use super::{Msdp, MsdpError};
use crate::catalog::{ImageRec, KekRec, LsuRec, SegKind, SegRec, SegRef, lsu_of_pool};
use crate::kms::KeyState;

type Slot = Arc<Mutex<Option<Arc<Plain>>>>;

std::thread_local! {
    /// Each thread's buffer for records decrypted straight into a reply:
    /// reused, so a read allocates and clears nothing.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Segments kept per open image: the parts the kernel's requests share.
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
    /// A cloud LSU: each container the image reads, with the segment that
    /// first reads it, in image order (what a sequential reader needs next).
    firsts: Vec<(usize, u64)>,
}

/// Containers a sequential reader of a cloud LSU has fetched ahead of it.
const AHEAD: usize = 2;

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
        if let Some((i, (l, r))) = locs
            .iter()
            .zip(&recipe)
            .enumerate()
            .find(|(_, (l, r))| l.plain != r.len || !record_fits(l))
        {
            let e = MsdpError::Integrity {
                lsu: name.into(),
                container: l.container,
                offset: l.offset,
                why: format!(
                    "image {}: segment {i} is {} bytes in its recipe, {} in the index (a record of {})",
                    img.path, r.len, l.plain, l.len
                ),
            };
            tracing::error!("{e}");
            return Err(e);
        }
        let keks = msdp.catalog.keks(name)?;
        check_keys(msdp, &rec, &keks, &locs)?;
        let firsts = if state.backend.is_cloud() {
            first_reads(&locs)
        } else {
            Vec::new()
        };
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
            firsts,
        })
    }

    /// Up to `size` bytes from `offset`.
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>, MsdpError> {
        let mut out = vec![0u8; size];
        let n = self.read_into(offset, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Fills `out` from `offset`; returns how many bytes the image had
    /// (fewer than asked at its end). Segments the request covers whole
    /// are decrypted straight into `out`, on every core at once; a segment
    /// it covers in part is kept, so the next request finds it.
    pub fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<usize, MsdpError> {
        let end = offset.saturating_add(out.len() as u64).min(self.img.size);
        if offset >= end {
            return Ok(0);
        }
        let n = (end - offset) as usize;
        let mut pieces = Vec::new();
        let mut rest = &mut out[..n];
        let mut pos = offset;
        let mut i = self.segment_at(offset);
        while !rest.is_empty() {
            let from = (pos - self.starts[i]) as usize;
            let len = (self.recipe[i].len as usize - from).min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            pieces.push((i, from, head));
            rest = tail;
            pos += len as u64;
            i += 1;
        }
        if !self.firsts.is_empty() {
            self.open_containers(pieces[0].0..i)?;
            self.fetch_ahead(i - 1);
        }
        use rayon::prelude::*;
        pieces
            .into_par_iter()
            .try_for_each(|(i, from, out)| self.serve(i, from, out))?;
        Ok(n)
    }

    /// Opens the containers of `segments` (a cloud LSU: fetched if they are
    /// not cached) on the calling thread, the request's own: a download
    /// then waits here, never in the few threads that decrypt for every
    /// reader. A fetch that fails fails the request; a container that is
    /// not there (moved by a reclaim) or not readable is left to the
    /// decryption, which looks it up again or reports it.
    fn open_containers(&self, segments: std::ops::Range<usize>) -> Result<(), MsdpError> {
        let ids: BTreeSet<u64> = {
            let locs = self.locs.lock();
            segments.map(|i| locs[i].container).collect()
        };
        for id in ids {
            match self.state.file(id) {
                Ok(_) => {}
                Err(FileError::Fetch(e)) => {
                    tracing::error!(lsu = %self.rec.name, image = %self.img.path, "{e}");
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Has the next containers after segment `last` fetched in the
    /// background (a cloud LSU), so a restore does not wait for each
    /// download in turn.
    fn fetch_ahead(&self, last: usize) {
        let next = self.firsts.partition_point(|&(i, _)| i <= last);
        for &(_, id) in self.firsts.iter().skip(next).take(AHEAD) {
            self.state.prefetch(id);
        }
    }

    fn segment_at(&self, pos: u64) -> usize {
        self.starts.partition_point(|&s| s <= pos) - 1
    }

    /// Part of segment `i` from `from` into `out`: a whole segment
    /// straight into place, a part through the cache.
    fn serve(&self, i: usize, from: usize, out: &mut [u8]) -> Result<(), MsdpError> {
        if from == 0 && out.len() == self.recipe[i].len as usize {
            return SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut record) => self.load(i, &mut record, Some(out)).map(drop),
                Err(_) => self.load(i, &mut Vec::new(), Some(out)).map(drop),
            });
        }
        let seg = self.segment(i)?;
        let n = out.len();
        let part = seg.get(from..from + n).ok_or_else(|| {
            let loc = self.locs.lock()[i].clone();
            self.damaged(&loc, format!("segment {i} shorter than its recipe says"))
        })?;
        out.copy_from_slice(part);
        Ok(())
    }

    fn segment(&self, i: usize) -> Result<Arc<Plain>, MsdpError> {
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
        let plain = self
            .load(i, &mut Vec::new(), None)?
            .expect("opened in place");
        let d = Arc::new(plain);
        *data = Some(d.clone());
        Ok(d)
    }

    /// Reads segment `i` into `record` and opens it: into `out` if given
    /// (returns `None`), else in place (returns the plaintext). If its
    /// container is gone (a reclaim moved it), looks its place up again once.
    fn load(
        &self,
        i: usize,
        record: &mut Vec<u8>,
        mut out: Option<&mut [u8]>,
    ) -> Result<Option<Plain>, MsdpError> {
        let fp = self.recipe[i].fp;
        let loc = self.locs.lock()[i].clone();
        match self.load_from(&loc, &fp, record, out.as_deref_mut()) {
            Err(Retry) => {
                self.state.forget_file(loc.container);
                let now = self.msdp.catalog.segments(&self.rec.name, &[fp])?[0]
                    .clone()
                    .ok_or_else(|| self.damaged(&loc, "segment no longer in the index".into()))?;
                if now.plain != self.recipe[i].len || !record_fits(&now) {
                    return Err(self.damaged(&now, "segment moved with another length".into()));
                }
                self.locs.lock()[i] = now.clone();
                self.load_from(&now, &fp, record, out)
                    .map_err(|_| self.damaged(&now, "container missing or not readable".into()))?
            }
            Ok(r) => r,
        }
    }

    fn load_from(
        &self,
        loc: &SegRec,
        fp: &[u8; 32],
        record: &mut Vec<u8>,
        out: Option<&mut [u8]>,
    ) -> Result<Result<Option<Plain>, MsdpError>, Retry> {
        let h = match read_record_with(&self.state, loc.container, loc.offset, loc.len, record) {
            Ok(h) => h,
            Err(RecordError::Missing(_)) => return Err(Retry),
            Err(RecordError::Io(e)) => return Ok(Err(self.damaged(loc, format!("read: {e}")))),
            Err(RecordError::Damaged(why)) => return Ok(Err(self.damaged(loc, why))),
            Err(RecordError::Fetch(e)) => {
                tracing::error!(lsu = %self.rec.name, image = %self.img.path, "{e}");
                return Ok(Err(e));
            }
        };
        if &h.fp != fp {
            return Err(Retry);
        }
        let keks = match self.keks_for(loc) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let (msdp, rec) = (&self.msdp, &self.rec);
        let opened = match out {
            Some(out) => {
                open_record_into(msdp, rec, &keks, fp, loc, &h, record, out).map(|()| None)
            }
            None => open_record(msdp, rec, &keks, fp, loc, &h, std::mem::take(record)).map(Some),
        };
        Ok(match opened {
            Ok(p) => Ok(p),
            Err(OpenError::Key(e)) => Err(e),
            Err(OpenError::Damaged(why)) => Err(self.damaged(loc, why)),
        })
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

/// Each container `locs` reads, with the index of the first segment that
/// reads it, in order.
fn first_reads(locs: &[SegRec]) -> Vec<(usize, u64)> {
    let mut seen = std::collections::HashSet::new();
    locs.iter()
        .enumerate()
        .filter(|(_, l)| seen.insert(l.container))
        .map(|(i, l)| (i, l.container))
        .collect()
}

/// An index entry's record length is what its segment's length and kind
/// make (so a forged length cannot make a reader allocate gigabytes).
fn record_fits(l: &SegRec) -> bool {
    let tag = if l.kind == SegKind::Plain { 0 } else { TAG_LEN };
    l.len as usize == SEGMENT_HEADER_LEN + l.plain as usize + tag
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
