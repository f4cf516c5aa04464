//! What the daemon keeps in memory per LSU: the next container id, the
//! segments and containers that writers use but have not committed (so a
//! reclaim running at the same time leaves them alone), and open container
//! files for reading.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::MsdpError;
use super::backend::{Backend, RESERVED_FILE, container_files, container_path};
use super::format::{CONTAINER_MAX, MAX_CONTAINER_ID};
use crate::catalog::{Catalog, Fp, LsuRec};
use crate::util::turns::Turns;

/// How long a container whose fetch went unanswered is not asked for
/// again: the readers that waited for that fetch, and the kernel's retry
/// of the same read, fail at once instead of each waiting a timeout.
const QUIET: Duration = Duration::from_millis(500);

/// A fetch that failed after this long was sent and went unanswered.
const WAITED: Duration = Duration::from_millis(100);

/// Containers fetched ahead at once per LSU.
const PREFETCH: usize = 2;

/// The smallest cache that fetches ahead: room for the containers of a
/// few readers, each reading one and fetching two ahead.
const PREFETCH_CACHE_MIN: u64 = 4 * CONTAINER_MAX;

/// Ids reserved at a time (one write of [`RESERVED_FILE`] each).
const RESERVE_STEP: u64 = 256;

/// Why a container file could not be opened.
#[derive(Debug)]
pub enum FileError {
    /// Not there (a local LSU's file, a cloud LSU's object).
    Missing(std::io::Error),
    Io(std::io::Error),
    /// A cloud LSU's fetch failed (the error names the object store, or
    /// the cache file).
    Fetch(MsdpError),
}

/// Segments, containers and KMS keys in use by writers that have not
/// committed.
#[derive(Default)]
pub struct InFlight {
    pub fps: HashMap<Fp, u32>,
    pub containers: HashSet<u64>,
    /// Tags of KMS keys something is being sealed or wrapped under now
    /// (a legacy writer's key, the root key of a KEK being made): the KMS
    /// refuses to retire them, as it refuses keys the catalog names.
    pub tags: HashMap<String, u32>,
    /// Images being written: their recipe files may be on disk before
    /// the catalog names them.
    pub images: HashSet<u128>,
}

/// Open container files kept for reads.
const OPEN_FILES: usize = 256;

pub struct LsuState {
    pub name: String,
    pub id: [u8; 16],
    /// `STORE/lsu/NAME/containers`.
    pub dir: PathBuf,
    /// `STORE/lsu/NAME`: the key dictionary and recipe files.
    pub lsu_dir: PathBuf,
    /// The key dictionary file as last written by this process.
    pub keydict: Mutex<Option<Vec<u8>>>,
    /// Where the containers are kept (this directory, or a bucket).
    pub backend: Arc<dyn Backend>,
    /// Most bytes of fetched containers kept here (a cloud LSU).
    cache_bytes: u64,
    next_container: AtomicU64,
    pub inflight: Mutex<InFlight>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    /// Two readers of one container fetch it once; readers of others do
    /// not wait for them.
    fetching: Turns<u64>,
    /// Containers being fetched ahead of a sequential reader.
    prefetching: Mutex<HashSet<u64>>,
    /// Containers whose fetch the object store left unanswered, when, and
    /// why: not asked for again within [`QUIET`].
    unanswered: Mutex<HashMap<u64, (Instant, String)>>,
    /// A cloud LSU: container ids below this may be in the bucket (kept
    /// in [`RESERVED_FILE`], so a restart needs no listing of the bucket).
    reserved: Mutex<u64>,
    /// Serializes reclaim and conversion of this LSU.
    pub admin: Mutex<()>,
    /// Serializes changes of the key dictionary (new KEK, rewrap): a
    /// writer that finds the active KEK due for rotation decides again
    /// under it, so writers starting together make one new KEK, not one each.
    pub keys: Mutex<()>,
}

impl LsuState {
    pub fn open(lsu_dir: &Path, rec: &LsuRec, catalog: &Catalog) -> Result<Self, MsdpError> {
        let lsu = lsu_dir.join(&rec.name);
        let dir = lsu.join("containers");
        let recipes = recipes_dir(&lsu);
        if !dir.is_dir() || !recipes.is_dir() {
            let io = |e| MsdpError::io(lsu.display().to_string(), e);
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::create_dir_all(&recipes).map_err(io)?;
            crate::util::atomic::sync_dir(&lsu).map_err(io)?;
            crate::util::atomic::sync_dir(lsu_dir).map_err(io)?;
        }
        let backend = super::backend::open(&lsu)?;
        if backend.is_cloud() {
            remove_fetch_leftovers(&dir);
        }
        let cache_bytes = super::backend::cache_bytes(&lsu);
        let in_table = catalog.containers(&rec.name)?.iter().map(|c| c.0).max();
        let on_disk = container_files(&dir)?.into_iter().max();
        // A cloud LSU's objects too: an id is never used twice.
        let reserved = if backend.is_cloud() {
            read_reserved(&lsu)
        } else {
            None
        };
        let remote = match reserved {
            Some(below) => below.checked_sub(1),
            None if backend.is_cloud() => backend.container_ids(&dir)?.into_iter().max(),
            None => None,
        };
        let next = in_table.max(on_disk).max(remote).map_or(1, |m| m + 1);
        Ok(Self {
            name: rec.name.clone(),
            id: rec.id,
            dir,
            backend,
            cache_bytes,
            lsu_dir: lsu,
            keydict: Mutex::new(None),
            next_container: AtomicU64::new(next),
            inflight: Mutex::default(),
            files: Mutex::default(),
            fetching: Turns::default(),
            prefetching: Mutex::default(),
            unanswered: Mutex::default(),
            reserved: Mutex::new(reserved.unwrap_or(0)),
            admin: Mutex::new(()),
            keys: Mutex::new(()),
        })
    }

    /// The id the next container will get (every id below it is taken).
    pub fn next_id(&self) -> u64 {
        self.next_container.load(Ordering::SeqCst)
    }

    /// A new container id, marked in flight until [`LsuState::release_container`].
    pub fn new_container(&self) -> Result<u64, MsdpError> {
        let id = self.next_container.fetch_add(1, Ordering::SeqCst);
        if id > MAX_CONTAINER_ID {
            return Err(MsdpError::Refused(format!(
                "LSU {}: every container id is used",
                self.name
            )));
        }
        if self.backend.is_cloud() {
            self.reserve(id)?;
        }
        self.inflight.lock().containers.insert(id);
        Ok(id)
    }

    /// Records on disk that ids up to `id` may be used, before any is.
    fn reserve(&self, id: u64) -> Result<(), MsdpError> {
        let mut below = self.reserved.lock();
        if id < *below {
            return Ok(());
        }
        let next = id + RESERVE_STEP;
        let p = self.lsu_dir.join(RESERVED_FILE);
        crate::util::atomic::write_atomic(&p, format!("{next}\n").as_bytes(), 0o600)
            .map_err(|e| MsdpError::io(p.display().to_string(), e))?;
        *below = next;
        Ok(())
    }

    pub fn release_container(&self, id: u64) {
        self.inflight.lock().containers.remove(&id);
    }

    /// Marks a segment as about to be referenced by a writer.
    pub fn pin(&self, fp: &Fp) {
        *self.inflight.lock().fps.entry(*fp).or_insert(0) += 1;
    }

    pub fn unpin_all(&self, fps: &[Fp]) {
        let mut g = self.inflight.lock();
        for fp in fps {
            if let Some(n) = g.fps.get_mut(fp) {
                *n -= 1;
                if *n == 0 {
                    g.fps.remove(fp);
                }
            }
        }
    }

    pub fn path(&self, id: u64) -> PathBuf {
        container_path(&self.dir, id)
    }

    /// An open container file for reading (a cloud LSU's fetched into
    /// the cache first if it is not here).
    pub fn file(&self, id: u64) -> Result<Arc<File>, FileError> {
        if let Some(f) = self.files.lock().get(&id) {
            return Ok(f.clone());
        }
        let f = match File::open(self.path(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.backend.is_cloud() => {
                self.fetching.take(&id, || self.fetch(id))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FileError::Missing(e));
            }
            Err(e) => return Err(FileError::Io(e)),
        };
        let f = Arc::new(f);
        let mut g = self.files.lock();
        if g.len() >= OPEN_FILES {
            g.clear();
        }
        g.insert(id, f.clone());
        Ok(f)
    }

    /// Starts fetching container `id` of a cloud LSU into the cache in the
    /// background, unless it is here, on its way, or [`PREFETCH`] others
    /// are. A reader that needs it meanwhile waits for this fetch (its
    /// turn), not for one of its own; a failure is the reader's to report.
    pub fn prefetch(self: &Arc<Self>, id: u64) {
        // A cache that cannot hold the containers fetched ahead beside the
        // ones being read would drop one to make room for the other.
        if !self.backend.is_cloud()
            || self.cache_bytes < PREFETCH_CACHE_MIN
            || self.files.lock().contains_key(&id)
            || self.path(id).exists()
        {
            return;
        }
        {
            let mut p = self.prefetching.lock();
            if p.len() >= PREFETCH || !p.insert(id) {
                return;
            }
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsfs-prefetch".into())
            .spawn(move || {
                if let Err(e) = me.file(id) {
                    tracing::debug!(lsu = %me.name, container = id, "prefetch: {e:?}");
                }
                me.prefetching.lock().remove(&id);
            });
        if spawned.is_err() {
            self.prefetching.lock().remove(&id);
        }
    }

    /// Container `id` from the object store into the cache (unless a
    /// reader fetched it while this one waited its turn).
    fn fetch(&self, id: u64) -> Result<File, FileError> {
        if let Ok(f) = File::open(self.path(id)) {
            return Ok(f);
        }
        if let Some(why) = self.recently_unanswered(id) {
            return Err(FileError::Fetch(MsdpError::Unreachable {
                store: self.backend.describe(),
                what: format!("fetching container {id:016x} of LSU {}", self.name),
                why,
            }));
        }
        let asked = Instant::now();
        match self.backend.fetch_container(id, &self.path(id)) {
            Ok(()) => {}
            Err(MsdpError::Io { what, source })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(FileError::Missing(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{what} is gone"),
                )));
            }
            Err(e) => {
                // Only a request that was sent and waited: one refused at
                // once (another is trying the store) says nothing of this
                // container.
                if matches!(e, MsdpError::Unreachable { .. }) && asked.elapsed() >= WAITED {
                    self.unanswered
                        .lock()
                        .insert(id, (Instant::now(), e.to_string()));
                }
                return Err(FileError::Fetch(e));
            }
        }
        // Opened before the trim: the turn this fetch holds keeps other
        // trims away from it until then.
        let f = File::open(self.path(id)).map_err(FileError::Io)?;
        self.trim_cache(Some(id));
        Ok(f)
    }

    /// Why the last fetch of container `id` went unanswered, if that was
    /// less than [`QUIET`] ago.
    fn recently_unanswered(&self, id: u64) -> Option<String> {
        let mut m = self.unanswered.lock();
        m.retain(|_, (at, _)| at.elapsed() < QUIET);
        m.get(&id).map(|(_, why)| why.clone())
    }

    /// Removes fetched containers, oldest first, until the cache is within
    /// its size (never `keep`, nor one a writer or reclaim holds: those
    /// are not in the bucket yet, or being moved).
    pub fn trim_cache(&self, keep: Option<u64>) {
        let Ok(ids) = container_files(&self.dir) else {
            return;
        };
        let busy = self.inflight.lock().containers.clone();
        let mut local: Vec<(std::time::SystemTime, u64, u64)> = ids
            .into_iter()
            .filter_map(|id| {
                let m = std::fs::metadata(self.path(id)).ok()?;
                Some((m.modified().ok()?, m.len(), id))
            })
            .collect();
        let mut total: u64 = local.iter().map(|l| l.1).sum();
        local.sort();
        // Containers no reader holds open go first, oldest first; then
        // the open ones (a reader's current container last of all).
        let open: HashSet<u64> = self.files.lock().keys().copied().collect();
        for pass_open in [false, true] {
            for &(_, len, id) in &local {
                if total <= self.cache_bytes {
                    return;
                }
                // Nor one a reader is fetching: it opens the file after this.
                if open.contains(&id) != pass_open
                    || Some(id) == keep
                    || busy.contains(&id)
                    || self.fetching.busy(&id)
                {
                    continue;
                }
                if std::fs::remove_file(self.path(id)).is_ok() {
                    self.forget_file(id);
                    total -= len;
                }
            }
        }
    }

    /// Drops a cached descriptor (the container was removed or replaced).
    pub fn forget_file(&self, id: u64) {
        self.files.lock().remove(&id);
    }
}

/// A container id kept in flight (reclaim and conversion leave the file
/// alone) for as long as the guard lives: by its writer while it appends,
/// then by the image writer until the commit that records the container.
pub struct ContainerPin {
    state: Arc<LsuState>,
    pub id: u64,
}

impl ContainerPin {
    /// A new container id, in flight until the pin is dropped.
    pub fn new(state: &Arc<LsuState>) -> Result<Self, MsdpError> {
        Ok(Self {
            id: state.new_container()?,
            state: state.clone(),
        })
    }
}

impl Drop for ContainerPin {
    fn drop(&mut self) {
        self.state.release_container(self.id);
    }
}

/// An image id kept in flight (reclaim leaves its recipe file alone) for
/// as long as the guard lives: the image's writer.
pub struct ImagePin {
    state: Arc<LsuState>,
    id: u128,
}

impl ImagePin {
    pub fn new(state: &Arc<LsuState>, id: u128) -> Self {
        state.inflight.lock().images.insert(id);
        Self {
            state: state.clone(),
            id,
        }
    }
}

impl Drop for ImagePin {
    fn drop(&mut self) {
        self.state.inflight.lock().images.remove(&self.id);
    }
}

/// A KMS key tag held in flight for as long as the guard lives.
pub struct TagPin {
    state: Arc<LsuState>,
    tag: String,
}

impl TagPin {
    pub fn new(state: &Arc<LsuState>, tag: &str) -> Self {
        *state
            .inflight
            .lock()
            .tags
            .entry(tag.to_string())
            .or_insert(0) += 1;
        Self {
            state: state.clone(),
            tag: tag.to_string(),
        }
    }
}

impl Drop for TagPin {
    fn drop(&mut self) {
        let mut g = self.state.inflight.lock();
        if let Some(n) = g.tags.get_mut(&self.tag) {
            *n -= 1;
            if *n == 0 {
                g.tags.remove(&self.tag);
            }
        }
    }
}

/// `STORE/lsu/NAME/keydict.kkd`.
/// Removes the temporary files of fetches a crash or an unmount cut
/// short (`.ID.kct.tmp-HEX`: no fetch of this process runs before its
/// LSU state opens).
fn remove_fetch_leftovers(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".kct.tmp-") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %e.path().display(), "leftover of a cut-short fetch removed")
                }
                Err(err) => tracing::warn!(file = %e.path().display(), "{err}"),
            }
        }
    }
}

/// The bound [`RESERVED_FILE`] holds, if it is there and well formed (a
/// file that is not is read as absent: the bucket is listed instead).
fn read_reserved(lsu_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(lsu_dir.join(RESERVED_FILE)).ok()?;
    text.trim()
        .parse()
        .ok()
        .filter(|n| (1..=MAX_CONTAINER_ID + RESERVE_STEP + 1).contains(n))
}

pub fn keydict_path(lsu_dir: &Path) -> PathBuf {
    lsu_dir.join("keydict.kkd")
}

/// `STORE/lsu/NAME/recipes`.
pub fn recipes_dir(lsu_dir: &Path) -> PathBuf {
    lsu_dir.join("recipes")
}
