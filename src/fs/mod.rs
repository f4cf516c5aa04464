//! The FUSE adapter: inode bookkeeping and errno mapping over the store API.
//!
//! `KmsFs` answers the kernel by calling the engine (write sessions, image
//! streams), the catalog and the drives; it keeps only what FUSE needs in
//! memory: open handles and the page-cache rule. Nothing here decides
//! policy: the life of an image being written lives in the engine; keys,
//! formats and crash safety live below it.

mod acl;
mod attr;
mod dir_ops;
mod errno;
mod file_ops;
mod handles;
mod mount;
mod node_ops;
mod nodes;
mod trait_impl;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

pub use errno::FsError;
pub use mount::{MountOptions, block_stop_signals, mount_foreground};

use crate::catalog::{Catalog, Inode, InodeKind};
use crate::engine::{Pending, Sessions};
use crate::store::Store;
use crate::tape::Library;
use handles::Handle;
use nodes::Node;

/// How long an operation on a file waits for a close that is committing
/// it (the release that follows close(2) is asynchronous).
const SETTLE_PATIENCE: Duration = Duration::from_secs(2);

/// What an inode number names.
enum Entry {
    Synthetic(Node),
    Stored(Inode),
    Pending(Pending),
}

/// The filesystem served over FUSE.
pub struct KmsFs {
    store: Arc<Store>,
    lib: Arc<Library>,
    catalog: Arc<Catalog>,
    read_only: bool,
    started: i64,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Images being written: visible in their directory, committed at close.
    sessions: Sessions,
    /// Image id whose pages the kernel may keep cached, per inode.
    cached: Mutex<HashMap<u64, u128>>,
    /// When each image was last committed through this mount, for
    /// [`ATTR_GRACE`].
    fresh: Mutex<HashMap<u64, std::time::Instant>>,
}

/// How long after its commit through the mount a locked image's
/// attributes (times, mode, owner, extended attributes) may still be set:
/// tar and rsync set them right after they close a file (rsync then
/// renames it into place). Its data and its name are locked from the
/// commit.
pub const ATTR_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

type Res<T> = Result<T, FsError>;

impl KmsFs {
    pub fn new(store: Arc<Store>, read_only: bool) -> Self {
        Self {
            lib: store.library.clone(),
            catalog: store.catalog.clone(),
            store,
            read_only,
            started: crate::util::clock::now_ns(),
            handles: Mutex::default(),
            next_fh: AtomicU64::new(1),
            sessions: Sessions::default(),
            cached: Mutex::default(),
            fresh: Mutex::default(),
        }
    }

    fn drives(&self) -> usize {
        self.lib.drives.count()
    }

    fn entry(&self, ino: u64) -> Res<Entry> {
        if let Some(n) = Node::from_ino(ino, self.drives()) {
            return Ok(Entry::Synthetic(n));
        }
        if let Some(p) = self.sessions.get(ino) {
            return Ok(Entry::Pending(p));
        }
        match self.catalog.inode(ino)? {
            Some(i) => Ok(Entry::Stored(i)),
            None => Err(FsError::new(libc::ENOENT, format!("inode {ino}"))),
        }
    }

    /// A catalog directory that may hold images (a pool or a folder in one).
    fn image_dir(&self, ino: u64) -> Res<Inode> {
        match self.entry(ino)? {
            Entry::Stored(i) if matches!(i.kind, InodeKind::Pool | InodeKind::Dir) => Ok(i),
            Entry::Synthetic(_) => Err(FsError::new(
                libc::EPERM,
                "images live inside a pool (pools/NAME/, made by mkdir) or an LSU (msdp/NAME/, made by kmsfs lsu create)",
            )),
            _ => Err(FsError::new(
                libc::ENOTDIR,
                format!("inode {ino} is not a directory"),
            )),
        }
    }

    fn check_writable(&self) -> Res<()> {
        if self.read_only {
            Err(FsError::new(libc::EROFS, "mounted read-only"))
        } else {
            Ok(())
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> Res<Arc<Handle>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, format!("file handle {fh}")))
    }

    /// A catalog error as an errno; a refusal by a retention lock is also
    /// written to the audit log (op and the name it was asked of).
    fn refusal(&self, op: &str, what: &str, e: crate::catalog::CatalogError) -> FsError {
        if let crate::catalog::CatalogError::Locked(why) = &e
            && let Err(a) = self
                .store
                .audit
                .record(op, what, &format!("refused: {why}"))
        {
            tracing::error!("audit log: {a}");
        }
        e.into()
    }

    /// Recycles the volumes of an image already out of the catalog
    /// (deleted, or replaced in its replacement's own transaction). A
    /// failure is logged, not returned: the image's removal stands, and
    /// the store's next open recycles what is left.
    fn recycle_volumes_of(&self, old: &crate::catalog::ImageRec) {
        self.store.msdp.forget_recipe(old);
        if let Err(e) = self.lib.recycle(old) {
            tracing::warn!(image = %format!("{}/{}", old.pool, old.path), "recycling the volumes of a removed image: {e}");
        }
    }
}
