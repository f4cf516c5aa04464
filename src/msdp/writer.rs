//! Writing an image into an LSU: the stream is cut into segments, each is
//! fingerprinted, segments the LSU already holds are only referenced, new
//! ones are sealed and appended to this writer's container. Segments are
//! handled in batches of about 4 MiB so that fingerprinting and sealing
//! run on every core (the cutting itself is sequential). A commit (at
//! close, like the tape path) fsyncs the containers and then records the
//! image, its recipe and its references in one catalog transaction.
//!
//! Segments found in the index are pinned in memory until the writer ends,
//! so a reclaim running meanwhile cannot remove them before the commit
//! that references them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use parking_lot::Mutex;

use super::chunker::{BATCH, Chunker, Gear};
use super::container::{CONTAINER_TARGET, ContainerWriter};
use super::segment::{Sealer, record_len, seal_to};
use super::state::{ContainerPin, ImagePin, LsuState, TagPin};
use super::{Msdp, MsdpError};
use crate::catalog::{
    Commit, ContainerRec, FileAttrs, Fp, ImageRec, LsuCommit, LsuMode, LsuRec, SegRec, SegRef,
    lsu_of_pool,
};
use crate::crypto::{self, SecretKey};
use crate::pipeline::WriteTarget;
use crate::pipeline::{Committed, ImageSink};
use crate::util::clock::now_ns;

/// Everything but the chunker (so both can be borrowed at once).
struct Segments {
    msdp: Arc<Msdp>,
    state: Arc<LsuState>,
    rec: LsuRec,
    fp_key: Arc<SecretKey>,
    /// Seals the image's recipe file.
    recipe_key: SecretKey,
    /// Keeps reclaim from taking the recipe file for an orphan.
    _image_pin: ImagePin,
    sealer: Sealer,
    kek_tag: Option<String>,
    /// Keeps a legacy key from being retired while this writer lives.
    _key_pin: Option<TagPin>,
    recipe: Vec<SegRef>,
    /// Segments this writer stored (not in the index until committed).
    new: HashMap<Fp, SegRec>,
    /// Segments found in the index (pinned).
    known: HashSet<Fp>,
    pinned: Vec<Fp>,
    container: Option<ContainerWriter>,
    /// Containers written since the last commit, with their synced size.
    touched: Vec<(u64, ContainerRec)>,
    /// Containers uploaded (a cloud LSU).
    published: HashSet<u64>,
    /// Full containers this writer left, kept in flight until the commit
    /// that records them (a reclaim would take them for orphans).
    retired: Vec<ContainerPin>,
    sealed: (u64, u64),
    stored_bytes: u64,
    /// Keyed digest of the plaintext (`image verify`), fed batch by batch
    /// in stream order.
    digest: crypto::ImageDigest,
}

/// An image being written into an LSU.
pub struct LsuWriter {
    chunker: Chunker,
    stage: Stage,
    target: WriteTarget,
    id: u128,
    size: u64,
    dirty: bool,
    committed_once: bool,
}

impl LsuWriter {
    /// Starts an image: the LSU's keys are fetched here (ENOKEY at once).
    pub fn begin(msdp: &Arc<Msdp>, target: WriteTarget) -> Result<Self, MsdpError> {
        let name = lsu_of_pool(&target.pool)
            .ok_or_else(|| MsdpError::NoLsu(target.pool.clone()))?
            .to_string();
        let state = msdp.state(&name)?;
        let rec = msdp
            .catalog
            .lsu(&name)?
            .ok_or_else(|| MsdpError::NoLsu(name.clone()))?;
        let fp_key = msdp.fp_key(&rec)?;
        let (sealer, kek_tag, key_pin) = sealer(msdp, &state, &rec)?;
        let gear = gear(&rec, &fp_key)?;
        let chunker = Chunker::new(rec.chunking, gear);
        let id = u128::from_le_bytes(crypto::random_array()?);
        let seg = Segments {
            msdp: msdp.clone(),
            _image_pin: ImagePin::new(&state, id),
            state,
            recipe_key: super::manifest::recipe_key(&fp_key),
            rec,
            fp_key,
            sealer,
            kek_tag,
            _key_pin: key_pin,
            recipe: Vec::new(),
            new: HashMap::new(),
            known: HashSet::new(),
            pinned: Vec::new(),
            container: None,
            touched: Vec::new(),
            published: HashSet::new(),
            retired: Vec::new(),
            sealed: (0, 0),
            stored_bytes: 0,
            digest: crypto::ImageDigest::new(&msdp.digest_key),
        };
        Ok(Self {
            chunker,
            stage: Stage::start(seg)?,
            target,
            id,
            size: 0,
            dirty: true,
            committed_once: false,
        })
    }

    fn append(&mut self, data: &[u8]) -> Result<(), MsdpError> {
        self.stage.check()?;
        self.chunker.push(data);
        self.size += data.len() as u64;
        self.dirty = true;
        if self.chunker.pending() >= BATCH {
            self.cut(false)?;
        }
        Ok(())
    }

    /// Cuts what the chunker holds (all of it `at_end`) and stores it.
    fn cut(&mut self, at_end: bool) -> Result<(), MsdpError> {
        let mut ranges = Vec::new();
        while let Some(r) = self.chunker.next_range(at_end) {
            ranges.push(r);
        }
        if ranges.is_empty() {
            return Ok(());
        }
        let data = self.chunker.take_consumed(self.stage.spare());
        self.stage.send(Job::Batch(data, ranges))
    }

    fn commit(&mut self) -> Result<(ImageRec, Option<ImageRec>), MsdpError> {
        self.cut(true)?;
        self.stage.drain()?;
        let seg = self.stage.seg.clone();
        let mut seg = seg.lock();
        seg.seal_for_commit()?;
        let t = &self.target;
        let img = ImageRec {
            id: self.id,
            pool: t.pool.clone(),
            path: t.path.clone(),
            size: self.size,
            block_size: 0,
            key_tag: None,
            kcv: None,
            digest: Some(seg.digest.finalize()),
            created_ns: now_ns(),
            fragments: Vec::new(),
        };
        let s = &*seg;
        // What `lsu recover` needs, durable before the catalog names the image.
        s.msdp.save_keydict(&s.rec.name, Some(&s.fp_key))?;
        super::sidecar::write_recipe(
            &s.state,
            &s.recipe_key,
            &img,
            &t.path,
            t.attrs,
            s.recipe.clone(),
        )?;
        let replaced = s.msdp.catalog.commit_lsu_image(
            Commit {
                ino: t.ino,
                parent: t.parent,
                name: &t.name,
                attrs: t.attrs,
                image: &img,
                volumes: &[],
                replace: true,
                files: None,
            },
            LsuCommit {
                lsu: &s.rec.name,
                recipe: &s.recipe,
                new_segments: &s.new,
                containers: &s.touched,
                kek_usage: match s.sealer {
                    Sealer::Kek { id, .. } => Some((id, s.sealed.0, s.sealed.1)),
                    _ => None,
                },
                legacy_tag: match &s.sealer {
                    Sealer::Legacy { tag, .. } => Some(tag.as_str()),
                    _ => None,
                },
            },
        )?;
        seg.touched.clear();
        // Committed: the object store retains it as long as it is locked
        // (not done now, e.g. in an outage: lsu gc catches up).
        if seg.state.backend.is_cloud()
            && let Err(e) = seg.msdp.retain_image(&img)
        {
            tracing::error!(image = %format!("{}/{}", img.pool, img.path),
                "objects not retained by the object store yet (lsu gc retries): {e}");
        }
        // Now in the catalog: no longer in need of the pin.
        seg.retired.clear();
        if seg.state.backend.is_cloud() {
            // Uploaded and committed: the local copies are only a cache now.
            seg.state.trim_cache(None);
        }
        seg.sealed = (0, 0);
        self.dirty = false;
        self.committed_once = true;
        tracing::info!(image = %format!("{}/{}", img.pool, img.path), size = img.size,
            segments = seg.recipe.len(), new_bytes = seg.stored_bytes,
            kek = seg.sealer.kek_id(), "LSU image committed");
        Ok((img, replaced))
    }
}

/// The gear table of the LSU's chunker (fixed for its life).
fn gear(rec: &LsuRec, fp_key: &SecretKey) -> Result<Gear, MsdpError> {
    match rec.chunker {
        1 => Ok(Gear::Seeded(u64::from_le_bytes(
            crypto::derive_subkey(fp_key, b"", crypto::labels::CHUNKER_SEED).expose_secret()[..8]
                .try_into()
                .expect("8 bytes"),
        ))),
        2 => Ok(Gear::Table(crypto::gear_table(fp_key))),
        n => Err(MsdpError::Refused(format!(
            "LSU {} uses chunker {n}, made by a newer kmsfs",
            rec.name
        ))),
    }
}

/// How an LSU in this mode seals new segments, the root key tag shown as
/// the image's key tag while it is written, and the pin that keeps a
/// legacy key from being retired while the writer seals under it.
fn sealer(
    msdp: &Msdp,
    state: &Arc<LsuState>,
    rec: &LsuRec,
) -> Result<(Sealer, Option<String>, Option<TagPin>), MsdpError> {
    Ok(match rec.mode {
        LsuMode::None => (Sealer::Plain, None, None),
        LsuMode::Legacy => {
            let group = rec.key_group.as_deref().unwrap_or_default();
            let tk = msdp
                .kms
                .active_key(group)
                .map_err(|e| MsdpError::kms(format!("key group {group} (LSU {})", rec.name), e))?;
            let pin = TagPin::new(state, &tk.tag);
            // Pinned now; retired just before? Then nothing is sealed under it.
            match msdp.kms.key_state(&tk.tag) {
                Ok(Some(crate::kms::KeyState::Active)) => {}
                Ok(s) => {
                    return Err(MsdpError::kms(
                        format!("key group {group} (LSU {})", rec.name),
                        crate::kms::KmsError::KeyUnusable {
                            tag: tk.tag.clone(),
                            state: s.unwrap_or(crate::kms::KeyState::Terminated),
                            purpose: "encrypt",
                        },
                    ));
                }
                Err(e) => return Err(MsdpError::kms(format!("key {}", tk.tag), e)),
            }
            if !rec.legacy_tags.contains(&tk.tag) {
                // Pinned before anything is sealed under it (and again at commit).
                let tag = tk.tag.clone();
                msdp.catalog.update_lsu(&rec.name, |r| {
                    if !r.legacy_tags.contains(&tag) {
                        r.legacy_tags.push(tag.clone());
                    }
                })?;
            }
            // Used as fetched: asking the KMS again by tag would be a second round trip.
            let key = Arc::new(tk.key);
            (
                Sealer::Legacy {
                    tag: tk.tag.clone(),
                    key,
                },
                Some(tk.tag),
                Some(pin),
            )
        }
        LsuMode::Kms => {
            let (k, key) = msdp.active_kek(&rec.name)?;
            let tag = k.wrapped.root_tag.clone();
            (Sealer::Kek { id: k.id, key }, Some(tag), None)
        }
    })
}

type Range = std::ops::Range<usize>;

impl Segments {
    /// References or stores a batch of segments (`ranges` of `data`).
    fn store_batch(&mut self, data: &[u8], ranges: &[Range]) -> Result<(), MsdpError> {
        let key = &self.fp_key;
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let digest = &mut self.digest;
        let (fps, ()) = rayon::join(
            || par_map(ranges, |r| crypto::fingerprint(key, &data[r.clone()])),
            || digest.update(&data[first.start..last.end]),
        );
        let mut candidates: Vec<(Fp, Range)> = Vec::new();
        for (fp, r) in fps.iter().zip(ranges) {
            self.recipe.push(SegRef {
                fp: *fp,
                len: r.len() as u32,
            });
            if self.new.contains_key(fp)
                || self.known.contains(fp)
                || candidates.iter().any(|c| &c.0 == fp)
            {
                continue;
            }
            // Pinned before the lookup: a reclaim that has not yet seen
            // the pin has finished before the lookup reads the index.
            self.state.pin(fp);
            self.pinned.push(*fp);
            candidates.push((*fp, r.clone()));
        }
        let fps: Vec<Fp> = candidates.iter().map(|c| c.0).collect();
        let found = self.msdp.catalog.segments(&self.rec.name, &fps)?;
        let mut fresh = Vec::new();
        for ((fp, r), f) in candidates.into_iter().zip(found) {
            if f.is_some() {
                self.known.insert(fp);
            } else {
                fresh.push((fp, r));
            }
        }
        self.write_new(data, &fresh)
    }

    /// Seals new segments into this writer's container, on every core.
    fn write_new(&mut self, data: &[u8], fresh: &[(Fp, Range)]) -> Result<(), MsdpError> {
        if fresh.is_empty() {
            return Ok(());
        }
        if self
            .container
            .as_ref()
            .is_some_and(|c| c.size() >= CONTAINER_TARGET)
        {
            self.retire_container()?;
        }
        if self.container.is_none() {
            self.container = Some(ContainerWriter::create(&self.state)?);
        }
        let lens: Vec<usize> = fresh
            .iter()
            .map(|(_, r)| record_len(&self.sealer, r.len()))
            .collect();
        let c = self.container.as_mut().expect("container open");
        let cid = c.id;
        let (base, mut area) = c.reserve(lens.iter().sum());
        let mut slots = Vec::with_capacity(fresh.len());
        for &n in &lens {
            let (a, b) = std::mem::take(&mut area).split_at_mut(n);
            slots.push(a);
            area = b;
        }
        let (lsu_id, sealer) = (self.rec.id, &self.sealer);
        let jobs: Vec<_> = slots.into_iter().zip(fresh).collect();
        par_each(jobs, |(out, (fp, r))| {
            seal_to(out, &lsu_id, *fp, &data[r.clone()], sealer)
        })?;
        c.flush_if_full()?;
        let mut at = base;
        for ((fp, r), n) in fresh.iter().zip(lens) {
            self.new.insert(
                *fp,
                SegRec {
                    container: cid,
                    offset: at,
                    len: n as u32,
                    plain: r.len() as u32,
                    refs: 0,
                    kind: self.sealer.kind(),
                    kek: self.sealer.kek_id(),
                },
            );
            at += n as u64;
            self.sealed.0 += 1;
            self.sealed.1 += r.len() as u64;
            self.stored_bytes += n as u64;
        }
        Ok(())
    }

    fn retire_container(&mut self) -> Result<(), MsdpError> {
        if let Some(mut c) = self.container.take() {
            let r = c.sync()?;
            self.touched.push((c.id, r));
            self.retired.push(c.into_pin());
        }
        Ok(())
    }

    /// Makes every record durable where the LSU keeps it before the
    /// commit: fsynced here, and for a cloud LSU, the container ended and
    /// uploaded (objects are written once).
    fn seal_for_commit(&mut self) -> Result<(), MsdpError> {
        if !self.state.backend.is_cloud() {
            return self.sync();
        }
        self.retire_container()?;
        for (id, _) in &self.touched {
            if !self.published.contains(id) {
                self.state
                    .backend
                    .publish_container(*id, &self.state.path(*id))?;
                self.published.insert(*id);
            }
        }
        Ok(())
    }

    /// Makes every record durable and notes container sizes for the commit.
    fn sync(&mut self) -> Result<(), MsdpError> {
        if let Some(c) = self.container.as_mut() {
            let r = c.sync()?;
            let id = c.id;
            self.touched.retain(|(i, _)| *i != id);
            self.touched.push((id, r));
        }
        Ok(())
    }
}

/// `f` over `items` on rayon's pool (every core), results in order. A
/// pool, not threads per batch: on a VM a thread start costs about as
/// much as sealing a segment.
/// The second half of an LSU write, on a thread of its own so that the
/// next batch is cut (content-defined chunking is sequential) while this
/// one is fingerprinted, looked up, sealed and written: the two halves
/// keep two cores busy. Batches are handled in the order they are cut;
/// the first failure is kept and returned by the next write or commit,
/// and no batch after it is stored.
struct Stage {
    tx: Option<SyncSender<Job>>,
    /// Batch buffers the stage is done with, for the chunker to reuse.
    spare: Receiver<Vec<u8>>,
    seg: Arc<Mutex<Segments>>,
    failed: Arc<Mutex<Option<MsdpError>>>,
    poisoned: bool,
    /// Set when the writer is dropped: batches still queued are not stored.
    abandoned: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Job {
    /// A buffer and the segments cut in it, in stream order.
    Batch(Vec<u8>, Vec<Range>),
    /// Answered once every batch before it is stored.
    Barrier(SyncSender<()>),
}

impl Stage {
    fn start(seg: Segments) -> Result<Self, MsdpError> {
        let seg = Arc::new(Mutex::new(seg));
        let failed = Arc::new(Mutex::new(None));
        // One batch queued while one is stored and the next is cut.
        let (tx, rx) = sync_channel(1);
        let (spare_tx, spare) = sync_channel(1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let (s, f, a) = (seg.clone(), failed.clone(), abandoned.clone());
        let thread = std::thread::Builder::new()
            .name("kmsfs-sealer".into())
            .spawn(move || Self::run(&rx, &spare_tx, &s, &f, &a))
            .map_err(|e| MsdpError::io("LSU sealing thread", e))?;
        Ok(Self {
            tx: Some(tx),
            spare,
            seg,
            failed,
            poisoned: false,
            abandoned,
            thread: Some(thread),
        })
    }

    fn run(
        rx: &Receiver<Job>,
        spare: &SyncSender<Vec<u8>>,
        seg: &Mutex<Segments>,
        failed: &Mutex<Option<MsdpError>>,
        abandoned: &AtomicBool,
    ) {
        // Once a batch failed, no later one is stored (the failure itself
        // is handed to the writer once, through `failed`).
        let mut stopped = false;
        for job in rx {
            match job {
                Job::Batch(data, ranges) => {
                    stopped |= abandoned.load(Ordering::Relaxed);
                    if !stopped && let Err(e) = seg.lock().store_batch(&data, &ranges) {
                        stopped = true;
                        *failed.lock() = Some(e);
                    }
                    let _ = spare.try_send(data);
                }
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// A buffer for the chunker: one the stage is done with, or a new one.
    fn spare(&self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_default()
    }

    /// The first failure of the stage, once; [`MsdpError::Poisoned`] after.
    fn check(&mut self) -> Result<(), MsdpError> {
        if self.poisoned {
            return Err(MsdpError::Poisoned);
        }
        match self.failed.lock().take() {
            Some(e) => {
                self.poisoned = true;
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn send(&mut self, job: Job) -> Result<(), MsdpError> {
        self.check()?;
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            self.poisoned = true;
            return Err(MsdpError::Refused(
                "the LSU sealing thread ended (image not committed)".into(),
            ));
        }
        Ok(())
    }

    /// Waits until every batch sent is stored; its failure if one failed.
    fn drain(&mut self) -> Result<(), MsdpError> {
        let (done_tx, done) = sync_channel(1);
        self.send(Job::Barrier(done_tx))?;
        if done.recv().is_err() {
            self.poisoned = true;
            return Err(MsdpError::Refused(
                "the LSU sealing thread ended (image not committed)".into(),
            ));
        }
        self.check()
    }
}

impl Drop for Stage {
    /// Ends the thread (batches still queued are dropped, not stored) and
    /// waits for it, so the segments and containers the writer pinned are
    /// released when the writer is gone.
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    items.par_iter().map(f).collect()
}

/// `f` on each job on rayon's pool; the first error is returned.
fn par_each<J: Send>(
    jobs: Vec<J>,
    f: impl Fn(J) -> Result<(), MsdpError> + Sync + Send,
) -> Result<(), MsdpError> {
    use rayon::prelude::*;
    jobs.into_par_iter().try_for_each(f)
}

impl Drop for Segments {
    fn drop(&mut self) {
        self.state.unpin_all(&self.pinned);
    }
}

impl ImageSink for LsuWriter {
    type Error = MsdpError;

    fn key_tag(&self) -> Option<String> {
        self.stage.seg.lock().kek_tag.clone()
    }

    /// The pipeline in front refuses writes before the end (ESPIPE), fills
    /// holes and stops after a failure.
    fn append(&mut self, data: &[u8]) -> Result<(), MsdpError> {
        LsuWriter::append(self, data)
    }

    fn set_attrs(&mut self, a: FileAttrs) {
        self.target.attrs = a;
        self.dirty = true;
    }

    fn checkpoint(&mut self) -> Result<Committed, MsdpError> {
        if !self.dirty || (self.size == 0 && !self.committed_once) {
            return Ok(None);
        }
        self.commit().map(Some)
    }

    fn finish(mut self) -> Result<Committed, MsdpError> {
        if self.dirty {
            self.commit().map(Some)
        } else {
            Ok(None)
        }
    }
}
