//! What the daemon keeps in memory per LSU: the next container id, the
//! segments and containers that writers use but have not committed (so a
//! reclaim running at the same time leaves them alone), and open container
//! files for reading.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::MsdpError;
use crate::catalog::{Catalog, Fp, LsuRec};

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
    next_container: AtomicU64,
    pub inflight: Mutex<InFlight>,
    files: Mutex<HashMap<u64, Arc<File>>>,
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
        let in_table = catalog.containers(&rec.name)?.iter().map(|c| c.0).max();
        let on_disk = container_files(&dir)?.into_iter().max();
        let next = in_table.max(on_disk).map_or(1, |m| m + 1);
        Ok(Self {
            name: rec.name.clone(),
            id: rec.id,
            dir,
            lsu_dir: lsu,
            keydict: Mutex::new(None),
            next_container: AtomicU64::new(next),
            inflight: Mutex::default(),
            files: Mutex::default(),
            admin: Mutex::new(()),
            keys: Mutex::new(()),
        })
    }

    /// A new container id, marked in flight until [`LsuState::release_container`].
    pub fn new_container(&self) -> u64 {
        let id = self.next_container.fetch_add(1, Ordering::SeqCst);
        self.inflight.lock().containers.insert(id);
        id
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

    /// An open container file for reading.
    pub fn file(&self, id: u64) -> Result<Arc<File>, std::io::Error> {
        if let Some(f) = self.files.lock().get(&id) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.path(id))?);
        let mut g = self.files.lock();
        if g.len() >= OPEN_FILES {
            g.clear();
        }
        g.insert(id, f.clone());
        Ok(f)
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
    pub fn new(state: &Arc<LsuState>) -> Self {
        Self {
            id: state.new_container(),
            state: state.clone(),
        }
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
pub fn keydict_path(lsu_dir: &Path) -> PathBuf {
    lsu_dir.join("keydict.kkd")
}

/// `STORE/lsu/NAME/recipes`.
pub fn recipes_dir(lsu_dir: &Path) -> PathBuf {
    lsu_dir.join("recipes")
}

/// `DIR/0000000000000007.kct`.
pub fn container_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.kct"))
}

/// Ids of the container files in `dir`.
pub fn container_files(dir: &Path) -> Result<Vec<u64>, MsdpError> {
    let rd = std::fs::read_dir(dir).map_err(|e| MsdpError::io(dir.display().to_string(), e))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".kct")
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            out.push(id);
        }
    }
    Ok(out)
}
