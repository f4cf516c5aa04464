//! `kmsfs lsu recover NAME --from DIR`: rebuilds a lost LSU from its
//! directory alone (a copy of `STORE/lsu/NAME` kept elsewhere, or the one
//! left behind by a store whose catalog is gone) and the KMS that holds its
//! root keys.
//!
//! The key dictionary file gives the LSU record and its wrapped keys; its
//! MAC is checked once the KMS has unwrapped the fingerprint key. Every
//! container is scanned record by record to rebuild the index (a dead
//! writer's tail ends the scan of its container). Every recipe file is
//! opened with the LSU's recipe key, and each image is read back in full,
//! every segment authenticated, before it is committed: an image that is
//! not whole is reported and left out, never committed half. The image's
//! digest is computed again under this store's key as it is read.
//!
//! Run again after an interruption, it goes on where it stopped: the LSU
//! it made is recognised by its id and images already back are skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::backend::{Backend, CloudConfig, S3};
use super::backend::{container_files, container_path};
use super::container::read_record;
use super::format::{CONTAINER_HEADER_LEN, ContainerHeader, SEGMENT_HEADER_LEN, SegmentHeader};
use super::manifest::KEYDICT_FILE;
use super::manifest::{self, KeyDict, RecipeFile};
use super::segment::{OpenError, open_record};
use super::sidecar::recipe_files;
use super::state::{keydict_path, recipes_dir};
use super::{Msdp, MsdpError};
use crate::catalog::{
    Commit, ContainerRec, FileAttrs, Fp, ImageRec, KekRec, LsuCommit, LsuMode, LsuRec, SegRec,
    StoredKey, lsu_pool,
};
use crate::crypto::{self, SecretKey};

/// What a recovery did.
#[derive(Debug, Default, Serialize)]
pub struct RecoverReport {
    pub lsu: String,
    pub containers: usize,
    pub segments: usize,
    /// Bytes past the last whole record of a container (a writer that
    /// died before its commit): not indexed.
    pub tail_bytes: u64,
    pub images: usize,
    pub bytes: u64,
    /// Images already in the LSU (an earlier, interrupted recovery).
    pub already: usize,
    /// Images that could not be recovered, each with the reason.
    pub skipped: Vec<String>,
    /// Images recovered beside a newer one at the same name (`NAME.~ID`).
    pub older: usize,
}

/// Where the recovery is, for a progress bar: bytes of images read back.
pub type OnProgress<'a> = &'a mut dyn FnMut(u64, u64);

/// Where a lost LSU is recovered from.
#[derive(Debug, Clone)]
pub enum RecoverFrom {
    /// A directory laid out like `STORE/lsu/NAME` (a replica of it).
    Dir(PathBuf),
    /// The bucket prefix of a cloud LSU: the recovered LSU keeps its
    /// containers there.
    Bucket(CloudConfig),
}

/// An open source: the directory, or the bucket and a scratch folder the
/// containers are scanned in.
enum Source {
    Dir(PathBuf),
    Bucket(CloudConfig, Box<S3>),
}

impl Source {
    fn open(from: &RecoverFrom) -> Result<Self, MsdpError> {
        Ok(match from {
            RecoverFrom::Dir(d) => Self::Dir(d.clone()),
            RecoverFrom::Bucket(c) => Self::Bucket(c.clone(), Box::new(S3::open(c)?)),
        })
    }

    fn describe(&self) -> String {
        match self {
            Self::Dir(d) => d.display().to_string(),
            Self::Bucket(_, s3) => s3.describe(),
        }
    }

    /// The key dictionary file's bytes.
    fn keydict(&self) -> Result<Vec<u8>, MsdpError> {
        match self {
            Self::Dir(d) => read_bounded(&keydict_path(d), manifest::MAX_KEYDICT),
            Self::Bucket(_, s3) => s3
                .fetch_file(KEYDICT_FILE, manifest::MAX_KEYDICT)?
                .ok_or_else(|| {
                    MsdpError::Refused(format!(
                        "{}: no key dictionary ({KEYDICT_FILE}): no LSU was written here",
                        s3.describe()
                    ))
                }),
        }
    }
}

impl Msdp {
    /// Rebuilds LSU `name` from `from`. `dir_attrs`: the LSU's folder and
    /// the folders it makes.
    pub fn recover(
        self: &Arc<Self>,
        name: &str,
        from: &RecoverFrom,
        dir_attrs: FileAttrs,
        progress: OnProgress<'_>,
    ) -> Result<RecoverReport, MsdpError> {
        crate::kms::model_check_name(name).map_err(|e| MsdpError::Refused(e.to_string()))?;
        let dest = self.dir.join(name);
        if let RecoverFrom::Dir(from) = from
            && same_dir(from, &dest)
        {
            // gc and writers would work on the only copy while it is read.
            return Err(MsdpError::Refused(format!(
                "{} is LSU {name}'s own directory in this store: move it aside (mv) and recover from there",
                from.display()
            )));
        }
        let src = Source::open(from)?;
        let (rec, keks, fp_key) = self.recovered_keys(name, &src)?;
        let existing = self.catalog.lsu(name)?;
        if let Some(e) = &existing
            && e.id != rec.id
        {
            return Err(MsdpError::Refused(format!(
                "LSU {name} exists and is another LSU; recover under a name not in use"
            )));
        }
        if let Some(o) = self
            .catalog
            .lsus()?
            .into_iter()
            .find(|l| l.id == rec.id && l.name != name)
        {
            return Err(MsdpError::Refused(format!(
                "{} holds LSU {}, which this store has already",
                src.describe(),
                o.name
            )));
        }
        let claim = self.same_source(name, &dest, &src, existing.is_some())?;
        let mut report = RecoverReport {
            lsu: name.into(),
            ..Default::default()
        };
        let containers_dir = dest.join("containers");
        let scan = match &src {
            Source::Dir(from) => {
                copy_containers(&from.join("containers"), &containers_dir)?;
                scan_containers(&containers_dir, &rec, &keks, &mut report, None)?
            }
            Source::Bucket(c, s3) => {
                let fetch = Fetch {
                    s3,
                    budget: c.cache_bytes,
                };
                scan_containers(&containers_dir, &rec, &keks, &mut report, Some(&fetch))?
            }
        };
        let containers: Vec<(u64, ContainerRec)> =
            scan.containers.iter().map(|(k, v)| (*k, *v)).collect();
        // A bucket's LSU stays there: the recovered LSU is a cloud LSU of
        // the same prefix (its settings written before it is opened).
        let cloud_file = match &src {
            Source::Bucket(c, _) => {
                // This store writes the prefix from now on (one that still
                // runs elsewhere only reads it); a resumed run keeps the
                // claim the open LSU holds.
                let c = match claim {
                    Some(owner) => CloudConfig {
                        owner: Some(owner),
                        ..c.clone()
                    },
                    None => c.claimed()?,
                };
                let f = super::backend::write_config(&dest, &c)?;
                S3::open(&c)?.claim()?;
                Some(f)
            }
            Source::Dir(_) => None,
        };
        let recorded = if existing.is_none() {
            self.catalog
                .restore_lsu(&rec, &keks, &containers, dir_attrs)
                .map(|_| ())
        } else {
            // Resumed: what this run found that the last one did not.
            self.catalog.add_lsu_parts(name, &keks, &containers)
        };
        if let Err(e) = recorded {
            if existing.is_none()
                && let Some(f) = cloud_file
            {
                let _ = std::fs::remove_file(f);
            }
            return Err(e.into());
        }
        // No reclaim while images are being brought back: their segments
        // are in containers the index does not name yet.
        let state = self.state(name)?;
        let _admin = state.admin.lock();
        let recipe_key = manifest::recipe_key(&fp_key);
        let recipes = match &src {
            Source::Dir(from) => read_recipes(&recipes_dir(from), &rec, &recipe_key, &mut report)?,
            Source::Bucket(_, s3) => read_bucket_recipes(s3, &rec, &recipe_key, &mut report)?,
        };
        let total: u64 = recipes.iter().map(|r| r.size).sum();
        let mut done = 0;
        progress(0, total);
        for r in recipes {
            let size = r.size;
            match self.recover_image(&rec, &keks, &scan.index, &recipe_key, &r, dir_attrs)? {
                Restored::Yes => {
                    report.images += 1;
                    report.bytes += size;
                }
                Restored::Already => report.already += 1,
                Restored::No(why) => {
                    tracing::warn!(lsu = name, image = %r.path, "not recovered: {why}");
                    report.skipped.push(format!("{}: {why}", r.path));
                }
            }
            done += size;
            progress(done, total);
        }
        // Recovered in place from a bucket: what was skipped is still only
        // there, so gc (which would remove it as unused) waits for a run
        // that brings everything back.
        let marker = incomplete_marker(&dest);
        if matches!(src, Source::Bucket(..)) && !report.skipped.is_empty() {
            crate::util::atomic::write_atomic(&marker, report.skipped.join("\n").as_bytes(), 0o600)
                .map_err(|e| MsdpError::io(marker.display().to_string(), e))?;
        } else if marker.exists() {
            std::fs::remove_file(&marker)
                .map_err(|e| MsdpError::io(marker.display().to_string(), e))?;
        }
        self.save_keydict(name, Some(&fp_key))?;
        drop(_admin);
        if rec.mode == LsuMode::Kms && existing.is_none() {
            // The rotation counters did not travel: a fresh KEK from here.
            self.new_kek(name)?;
        }
        tracing::info!(
            lsu = name,
            images = report.images,
            skipped = report.skipped.len(),
            segments = report.segments,
            "LSU recovered"
        );
        Ok(report)
    }

    /// A resumed run recovers from what the first one did (a bucket's
    /// LSU from the same prefix, a directory's into a local LSU): the
    /// claim the cloud LSU holds, if it is one. A new LSU's folder keeps
    /// no settings of an earlier, failed attempt.
    fn same_source(
        &self,
        name: &str,
        dest: &Path,
        src: &Source,
        resumed: bool,
    ) -> Result<Option<String>, MsdpError> {
        let p = super::backend::cloud_config_path(dest);
        if !resumed {
            remove_stale(&p)?;
            return Ok(None);
        }
        let held: Option<CloudConfig> = match std::fs::read(&p) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| MsdpError::Refused(format!("{}: {e}", p.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(MsdpError::io(p.display().to_string(), e)),
        };
        match (src, held) {
            (Source::Dir(_), None) => Ok(None),
            (Source::Bucket(c, _), Some(h)) if h.url == c.url && h.endpoint == c.endpoint => {
                Ok(h.owner)
            }
            (_, Some(h)) => Err(MsdpError::Refused(format!(
                "LSU {name} is being recovered from {} at {}: run again from there",
                h.url, h.endpoint
            ))),
            (Source::Bucket(..), None) => Err(MsdpError::Refused(format!(
                "LSU {name} is a local LSU of this store: recover the bucket under another name"
            ))),
        }
    }

    /// The LSU record (under its new name) and key dictionary from the
    /// key dictionary file, every key unwrapped once by the KMS (so a
    /// missing root key fails here, named), the file authenticated.
    fn recovered_keys(
        &self,
        name: &str,
        src: &Source,
    ) -> Result<(LsuRec, Vec<KekRec>, Arc<SecretKey>), MsdpError> {
        let bytes = src.keydict()?;
        let at = src.describe();
        let bad =
            |e: manifest::ManifestError| MsdpError::Refused(format!("key dictionary in {at}: {e}"));
        let d = KeyDict::decode_unverified(&bytes).map_err(bad)?;
        check_shape(&d)
            .map_err(|why| MsdpError::Refused(format!("key dictionary in {at}: {why}")))?;
        let mut rec = d.lsu;
        rec.name = name.to_string();
        if rec.mode != LsuMode::None {
            self.check_key_group(name, rec.key_group.as_deref())?;
        }
        let fp_key = self.fp_key(&rec)?;
        KeyDict::authenticate(&bytes, &manifest::keydict_mac_key(&fp_key)).map_err(bad)?;
        for k in &d.keks {
            self.kek(name, k)?;
        }
        for t in &rec.legacy_tags {
            self.legacy_key(t)?;
        }
        Ok((rec, d.keks, fp_key))
    }

    /// Reads image `r` back segment by segment and commits it if whole.
    fn recover_image(
        self: &Arc<Self>,
        rec: &LsuRec,
        keks: &[KekRec],
        index: &HashMap<Fp, SegRec>,
        recipe_key: &SecretKey,
        r: &RecipeFile,
        dir_attrs: FileAttrs,
    ) -> Result<Restored, MsdpError> {
        if self.catalog.image(r.image)?.is_some() {
            // Committed by an interrupted run, perhaps before its file.
            self.refresh_recipe(r.image);
            return Ok(Restored::Already);
        }
        let digest = match self.read_back(rec, keks, index, r) {
            Ok(d) => d,
            Err(why) => return Ok(Restored::No(why)),
        };
        let img = ImageRec {
            id: r.image,
            pool: lsu_pool(&rec.name),
            path: r.path.clone(),
            size: r.size,
            block_size: 0,
            key_tag: None,
            kcv: None,
            digest: Some(digest),
            created_ns: r.created_ns,
            fragments: Vec::new(),
        };
        let parts: Vec<&str> = r.path.split('/').collect();
        let (file, dirs) = parts.split_last().expect("a checked path has a name");
        let commit = self.catalog.commit_lsu_image_under(
            dirs,
            dir_attrs,
            Commit {
                ino: self.catalog.alloc_ino(),
                parent: 0,
                name: file,
                attrs: r.attrs,
                image: &img,
                volumes: &[],
                replace: false,
                files: None,
            },
            LsuCommit {
                lsu: &rec.name,
                recipe: &r.segments,
                new_segments: index,
                containers: &[],
                kek_usage: None,
                legacy_tag: None,
            },
        );
        match commit {
            Ok(_) => {}
            Err(
                e @ (crate::catalog::CatalogError::Exists(_)
                | crate::catalog::CatalogError::NotDir(_)),
            ) => {
                return Ok(Restored::No(format!("its name is taken: {e}")));
            }
            Err(e) => return Err(e.into()),
        }
        let state = self.state(&rec.name)?;
        super::sidecar::write_recipe(
            &state,
            recipe_key,
            &img,
            &r.path,
            r.attrs,
            r.segments.clone(),
        )?;
        Ok(Restored::Yes)
    }

    /// Every segment of `r` read, authenticated and digested under this
    /// store's image digest key; why not, if one cannot be.
    fn read_back(
        self: &Arc<Self>,
        rec: &LsuRec,
        keks: &[KekRec],
        index: &HashMap<Fp, SegRec>,
        r: &RecipeFile,
    ) -> Result<[u8; 32], String> {
        let state = self.state(&rec.name).map_err(|e| e.to_string())?;
        let mut digest = crypto::ImageDigest::new(&self.digest_key);
        for (i, s) in r.segments.iter().enumerate() {
            let what = || format!("segment {i} ({})", hex::encode(&s.fp[..8]));
            let loc = index
                .get(&s.fp)
                .ok_or_else(|| format!("{} is in no container", what()))?;
            if loc.plain != s.len {
                return Err(format!(
                    "{} is {} bytes, the recipe says {}",
                    what(),
                    loc.plain,
                    s.len
                ));
            }
            let (h, buf) = read_record(&state, loc.container, loc.offset, loc.len)
                .map_err(|e| format!("{}: {e:?}", what()))?;
            let plain = open_record(self, rec, keks, &s.fp, loc, &h, buf).map_err(|e| match e {
                OpenError::Key(e) => format!("{}: {e}", what()),
                OpenError::Damaged(why) => format!("{}: {why}", what()),
            })?;
            digest.update(&plain);
        }
        Ok(digest.finalize())
    }
}

/// What kmsfs writes, and nothing else: an encrypted LSU's fingerprint
/// key is wrapped by the KMS (one in clear would let anyone who wrote the
/// file make its MAC and recipes), and only an encrypted LSU names keys.
fn check_shape(d: &KeyDict) -> Result<(), String> {
    let r = &d.lsu;
    match (r.mode, &r.fp_key) {
        (LsuMode::None, StoredKey::Clear(_)) => {
            if !d.keks.is_empty() || !r.legacy_tags.is_empty() || r.key_group.is_some() {
                return Err("an unencrypted LSU with keys".into());
            }
        }
        (LsuMode::None, StoredKey::Wrapped(_)) => {
            return Err("an unencrypted LSU with a wrapped fingerprint key".into());
        }
        (_, StoredKey::Clear(_)) => {
            return Err("an encrypted LSU whose fingerprint key is in clear".into());
        }
        (mode, StoredKey::Wrapped(_)) => {
            if r.key_group.is_none() {
                return Err("an encrypted LSU without a key group".into());
            }
            if mode == LsuMode::Legacy && !d.keks.is_empty() {
                return Err("a legacy-mode LSU with KEKs".into());
            }
            if mode == LsuMode::Kms && !r.converting && !r.legacy_tags.is_empty() {
                return Err("a KMS-mode LSU with legacy keys, not converting".into());
            }
        }
    }
    let mut ids = HashSet::new();
    if !d.keks.iter().all(|k| ids.insert(k.id)) {
        return Err("a KEK id twice".into());
    }
    Ok(())
}

enum Restored {
    Yes,
    Already,
    No(String),
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A regular file of the replica, opened without following a symbolic
/// link (a link, a device or a FIFO there is refused).
fn open_regular(path: &Path) -> Result<std::fs::File, MsdpError> {
    let io = |e| MsdpError::io(path.display().to_string(), e);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !f.metadata().map_err(io)?.file_type().is_file() {
        return Err(MsdpError::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// A file read whole if it is not longer than `max`.
fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, MsdpError> {
    let io = |e| MsdpError::io(path.display().to_string(), e);
    let f = open_regular(path)?;
    let mut b = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut b).map_err(io)?;
    if b.len() > max {
        return Err(MsdpError::Refused(format!(
            "{} is longer than {max} bytes",
            path.display()
        )));
    }
    Ok(b)
}

/// Copies the container files of `from` that `to` lacks, each durable
/// under its final name only once whole.
fn copy_containers(from: &Path, to: &Path) -> Result<(), MsdpError> {
    let io = |what: &Path| {
        let w = what.display().to_string();
        move |e| MsdpError::io(w, e)
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for id in container_files(from)? {
        let dst = container_path(to, id);
        if dst.exists() {
            continue;
        }
        let src = container_path(from, id);
        let mut input = open_regular(&src)?;
        let tmp: PathBuf = to.join(format!(".{id:016x}.kct.recover"));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        std::io::copy(&mut input, &mut out).map_err(io(&src))?;
        out.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    }
    crate::util::atomic::sync_dir(to).map_err(io(to))
}

/// The index rebuilt from the containers, and each container's whole size.
struct Scan {
    index: HashMap<Fp, SegRec>,
    containers: BTreeMap<u64, ContainerRec>,
}

/// A bucket's containers, each fetched into the scan folder; kept there
/// (as the LSU's read cache) while they fit in `budget` bytes.
struct Fetch<'a> {
    s3: &'a S3,
    budget: u64,
}

fn scan_containers(
    dir: &Path,
    rec: &LsuRec,
    keks: &[KekRec],
    report: &mut RecoverReport,
    fetch: Option<&Fetch<'_>>,
) -> Result<Scan, MsdpError> {
    let mut ids = match fetch {
        None => container_files(dir)?,
        Some(f) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| MsdpError::io(dir.display().to_string(), e))?;
            f.s3.container_ids(dir)?
        }
    };
    ids.sort_unstable();
    let mut cached = 0u64;
    let kek_ids: HashSet<u32> = keks.iter().map(|k| k.id).collect();
    let mut scan = Scan {
        index: HashMap::new(),
        containers: BTreeMap::new(),
    };
    for id in ids {
        let path = container_path(dir, id);
        if let Some(f) = fetch
            && !path.exists()
        {
            match f.s3.fetch_container(id, &path) {
                Ok(()) => {}
                // Gone since the listing, or longer than any container: not
                // one of ours, as a container that does not scan.
                Err(MsdpError::Io { what, source })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
                    ) =>
                {
                    tracing::warn!("{what}: {source}: not a container of this LSU, skipped");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let scanned = scan_container(&path, id, rec, &kek_ids, &mut scan.index, report)?;
        if let Some(f) = fetch {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            if scanned.is_none() || cached + len > f.budget {
                // Not ours, or past the cache: read again when needed.
                let _ = std::fs::remove_file(&path);
            } else {
                cached += len;
            }
        }
        let Some((size, created_ns)) = scanned else {
            continue;
        };
        report.containers += 1;
        scan.containers
            .insert(id, ContainerRec { size, created_ns });
    }
    report.segments = scan.index.len();
    Ok(scan)
}

/// Indexes one container's records; its whole size and creation time,
/// or nothing if it is not a container of this LSU.
fn scan_container(
    path: &Path,
    id: u64,
    rec: &LsuRec,
    kek_ids: &HashSet<u32>,
    index: &mut HashMap<Fp, SegRec>,
    report: &mut RecoverReport,
) -> Result<Option<(u64, i64)>, MsdpError> {
    let io = |e| MsdpError::io(path.display().to_string(), e);
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut hb = [0u8; CONTAINER_HEADER_LEN];
    if r.read_exact(&mut hb).is_err() {
        tracing::warn!(container = %path.display(), "too short for a container: skipped");
        return Ok(None);
    }
    let h = match ContainerHeader::decode(&hb) {
        Ok(h) if h.lsu_id == rec.id && h.id == id => h,
        Ok(_) => {
            tracing::warn!(container = %path.display(), "a container of another LSU or under another name: skipped");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(container = %path.display(), "container header: {e}: skipped");
            return Ok(None);
        }
    };
    let mut at = CONTAINER_HEADER_LEN as u64;
    let mut sb = [0u8; SEGMENT_HEADER_LEN];
    while at + SEGMENT_HEADER_LEN as u64 <= len {
        if r.read_exact(&mut sb).is_err() {
            break;
        }
        let Ok(s) = SegmentHeader::decode(&sb) else {
            break;
        };
        let n = s.record_len() as u64;
        if at + n > len {
            break;
        }
        let data = n - SEGMENT_HEADER_LEN as u64;
        r.seek_relative(data as i64).map_err(io)?;
        if !fits_lsu(&s, rec, kek_ids) {
            // A whole record sealed under a key the LSU no longer names
            // (a legacy segment no image uses after a conversion): skipped,
            // the records after it are still read.
            at += n;
            continue;
        }
        index.entry(s.fp).or_insert(SegRec {
            container: id,
            offset: at,
            len: n as u32,
            plain: s.plain_len,
            refs: 0,
            kind: s.kind,
            kek: s.kek,
        });
        at += n;
    }
    report.tail_bytes += len - at;
    Ok(Some((at, h.created_ns)))
}

/// Whether a record is sealed the way this LSU seals (a KEK of its
/// dictionary, a legacy key it names, or in clear in an unencrypted LSU).
fn fits_lsu(s: &SegmentHeader, rec: &LsuRec, kek_ids: &HashSet<u32>) -> bool {
    use crate::catalog::SegKind;
    match s.kind {
        SegKind::Plain => rec.mode == LsuMode::None,
        SegKind::Kek => kek_ids.contains(&s.kek),
        SegKind::Legacy => rec.legacy_tags.contains(&hex::encode(s.key_tag)),
    }
}

/// The recipe files of `dir` that open, newest first at each path.
fn read_recipes(
    dir: &Path,
    rec: &LsuRec,
    key: &SecretKey,
    report: &mut RecoverReport,
) -> Result<Vec<RecipeFile>, MsdpError> {
    let files = recipe_files(dir)?.into_iter().map(|id| {
        let bytes = read_bounded(
            &dir.join(manifest::recipe_file_name(id)),
            manifest::MAX_RECIPE,
        );
        (id, bytes)
    });
    Ok(pick_recipes(files, rec, key, report))
}

/// The recipe objects of a bucket that open, newest first at each path.
fn read_bucket_recipes(
    s3: &S3,
    rec: &LsuRec,
    key: &SecretKey,
    report: &mut RecoverReport,
) -> Result<Vec<RecipeFile>, MsdpError> {
    let ids: Vec<u128> = s3
        .list_files("recipes")?
        .iter()
        .filter_map(|n| manifest::recipe_id_of(n))
        .collect();
    let files = ids.into_iter().map(|id| {
        let rel = format!("recipes/{}", manifest::recipe_file_name(id));
        let bytes = s3.fetch_file(&rel, manifest::MAX_RECIPE).and_then(|b| {
            b.ok_or_else(|| MsdpError::Refused(format!("{}: object {rel} is gone", s3.describe())))
        });
        (id, bytes)
    });
    Ok(pick_recipes(files, rec, key, report))
}

/// The recipes that open (each reported if not), newest first at each
/// path; older versions of a name come back as `NAME.~ID`.
fn pick_recipes(
    files: impl Iterator<Item = (u128, Result<Vec<u8>, MsdpError>)>,
    rec: &LsuRec,
    key: &SecretKey,
    report: &mut RecoverReport,
) -> Vec<RecipeFile> {
    let mut by_path: BTreeMap<String, Vec<RecipeFile>> = BTreeMap::new();
    for (id, bytes) in files {
        let name = manifest::recipe_file_name(id);
        let r = bytes.and_then(|b| {
            let (_, claimed) = RecipeFile::peek(&b)
                .map_err(|e| MsdpError::Refused(format!("recipe file {name}: {e}")))?;
            if claimed != id {
                return Err(MsdpError::Refused(format!(
                    "recipe file {name}: holds image {claimed:032x}"
                )));
            }
            RecipeFile::decode(&b, &rec.id, key)
                .map_err(|e| MsdpError::Refused(format!("recipe file {name}: {e}")))
        });
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(lsu = %rec.name, "{e}");
                report.skipped.push(e.to_string());
                continue;
            }
        };
        by_path.entry(r.path.clone()).or_default().push(r);
    }
    // Two images at one name: a version whose replacement could not
    // remove its recipe file, or an image whose recipe still names a
    // folder renamed since. Neither is dropped: the newest keeps the
    // name, the others come back beside it as NAME.~ID.
    let mut out = Vec::new();
    for (_, mut v) in by_path {
        v.sort_by_key(|r| std::cmp::Reverse(r.created_ns));
        for (i, mut r) in v.into_iter().enumerate() {
            if i > 0 {
                r.path = format!("{}.~{:032x}", r.path, r.image);
                report.older += 1;
            }
            out.push(r);
        }
    }
    out
}

/// `LSU_DIR/recovery-incomplete`: images a recovery in place (from a
/// bucket) could not bring back, one per line; gc refuses while it is there.
pub fn incomplete_marker(lsu_dir: &Path) -> PathBuf {
    lsu_dir.join("recovery-incomplete")
}

/// Removes a cloud LSU's settings file no LSU of the catalog owns (left
/// by a failed attempt): a new LSU of that name is not adopted by it.
pub fn remove_stale(cloud_json: &Path) -> Result<(), MsdpError> {
    if let Some(lsu_dir) = cloud_json.parent() {
        super::backend::remove_reserved(lsu_dir)?;
    }
    match std::fs::remove_file(cloud_json) {
        Ok(()) => {
            tracing::warn!(file = %cloud_json.display(), "settings of an LSU that does not exist removed");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MsdpError::io(cloud_json.display().to_string(), e)),
    }
}
