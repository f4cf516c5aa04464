//! Directory operations: lookup, attributes, listing, mkdir/rmdir, unlink,
//! rename, setattr on stored entries, statfs.

use fuser::{FileAttr, FileType};

use super::attr::{from_attrs, ns, synthetic};
use super::{Entry, FsError, KmsFs, Node, Res};
use crate::catalog::{FileAttrs, InodeKind, POOLS_INO};

/// Attribute changes asked by setattr.
#[derive(Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
}

impl AttrChange {
    pub fn apply(&self, a: &mut FileAttrs) {
        if let Some(m) = self.mode {
            a.mode = (a.mode & !0o7777) | (m & 0o7777);
        }
        a.uid = self.uid.unwrap_or(a.uid);
        a.gid = self.gid.unwrap_or(a.gid);
        a.atime_ns = self.atime.unwrap_or(a.atime_ns);
        a.mtime_ns = self.mtime.unwrap_or(a.mtime_ns);
        a.ctime_ns = ns(std::time::SystemTime::now());
    }
}

impl KmsFs {
    pub(super) fn attr_of(&self, ino: u64) -> Res<FileAttr> {
        Ok(match self.entry(ino)? {
            Entry::Synthetic(n) => {
                let size = match n {
                    Node::DriveStatus(i) => self
                        .lib
                        .drives
                        .status(i)
                        .map(|s| s.len() as u64)
                        .unwrap_or(0),
                    _ => 0,
                };
                synthetic(ino, n.is_dir(), size, self.started)
            }
            Entry::Pending(p) => from_attrs(ino, &p.attrs, p.size, false),
            Entry::Stored(i) => {
                let size = match &i.kind {
                    InodeKind::Image(id) => self.catalog.image(*id)?.map(|r| r.size).unwrap_or(0),
                    InodeKind::Symlink(target) => target.len() as u64,
                    _ => 0,
                };
                let nlink = match i.kind {
                    InodeKind::Pool | InodeKind::Dir => 2,
                    _ => self.catalog.nlink(ino)?,
                };
                super::attr::stored(ino, &i.attrs, &i.kind, size, nlink)
            }
        })
    }

    /// How long the kernel may cache the entry of inode `ino`.
    pub(super) fn entry_ttl(&self, ino: u64) -> std::time::Duration {
        if self.sessions.get(ino).is_some() {
            super::attr::PENDING_TTL
        } else {
            super::attr::TTL
        }
    }

    pub(super) fn do_lookup(&self, parent: u64, name: &str) -> Res<FileAttr> {
        if let Some(n) = Node::from_ino(parent, self.drives()) {
            if let Some((_, child)) = n
                .children(self.drives())
                .into_iter()
                .find(|(c, _)| c == name)
            {
                return self.attr_of(child.ino());
            }
            if !matches!(n, Node::Pools | Node::Msdp) {
                return Err(FsError::new(libc::ENOENT, name.to_string()));
            }
        }
        if let Some(ino) = self.sessions.find(parent, name) {
            return self.attr_of(ino);
        }
        match self.catalog.lookup(parent, name)? {
            Some(i) => self.attr_of(i.ino),
            None => Err(FsError::new(libc::ENOENT, name.to_string())),
        }
    }

    /// `(ino, type, name)` of every child.
    pub(super) fn do_readdir(&self, ino: u64) -> Res<Vec<(u64, FileType, String)>> {
        use FileType::{Directory, RegularFile};
        let kind = |dir: bool| if dir { Directory } else { RegularFile };
        let mut out = vec![
            (ino, Directory, ".".to_string()),
            (ino, Directory, "..".to_string()),
        ];
        match self.entry(ino)? {
            Entry::Synthetic(n) if !matches!(n, Node::Pools | Node::Msdp) => {
                if !n.is_dir() {
                    return Err(FsError::new(libc::ENOTDIR, "not a directory"));
                }
                out.extend(
                    n.children(self.drives())
                        .into_iter()
                        .map(|(name, c)| (c.ino(), kind(c.is_dir()), name)),
                );
                return Ok(out);
            }
            Entry::Stored(i) if !i.kind.is_dir() => {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"));
            }
            Entry::Pending(_) => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
            _ => {}
        }
        let mut names = std::collections::HashSet::new();
        for c in self.catalog.children(ino)? {
            names.insert(c.name.clone());
            let t = super::attr::file_type(&c.kind, c.attrs.mode);
            out.push((c.ino, t, c.name));
        }
        for p in self.sessions.children(ino) {
            if !names.contains(&p.name) {
                out.push((p.ino, RegularFile, p.name));
            }
        }
        Ok(out)
    }

    pub(super) fn do_mkdir(&self, parent: u64, name: &str, attrs: FileAttrs) -> Res<FileAttr> {
        self.check_writable()?;
        let node = if parent == POOLS_INO {
            crate::engine::create_pool(&self.store, name, attrs)?
        } else {
            let dir = self.image_dir(parent)?;
            self.catalog
                .make_entry(parent, name, &dir.pool, InodeKind::Dir, attrs)?
        };
        tracing::info!(path = %self.catalog.path_of(node.ino).unwrap_or_default(), "directory created");
        self.attr_of(node.ino)
    }

    pub(super) fn do_rmdir(&self, parent: u64, name: &str) -> Res<()> {
        self.check_writable()?;
        if parent != POOLS_INO {
            self.image_dir(parent)?;
        }
        if let Some(dir) = self.catalog.lookup(parent, name)?
            && !self.sessions.children(dir.ino).is_empty()
        {
            return Err(FsError::new(
                libc::ENOTEMPTY,
                format!("{name} holds a file being written"),
            ));
        }
        self.catalog.remove_dir(parent, name)?;
        Ok(())
    }

    pub(super) fn do_unlink(&self, parent: u64, name: &str) -> Res<()> {
        self.check_writable()?;
        self.image_dir(parent)?;
        self.settle_name(parent, name);
        if self.sessions.find(parent, name).is_some() {
            return Err(FsError::new(
                libc::EBUSY,
                format!("{name} is being written"),
            ));
        }
        // The image is gone once the catalog says so: a volume the recycle
        // could not return to scratch now is recycled at the next open.
        let removed = self
            .catalog
            .unlink(parent, name)
            .map_err(|e| self.refusal("unlink", name, e))?;
        if let Some(img) = removed {
            self.recycle_volumes_of(&img);
            tracing::info!(image = %format!("{}/{}", img.pool, img.path), "image removed");
        }
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
    ) -> Res<()> {
        self.check_writable()?;
        crate::engine::check_move(&self.store, parent, new_parent)?;
        self.image_dir(parent)?;
        self.image_dir(new_parent)?;
        self.settle_name(parent, name);
        self.settle_name(new_parent, new_name);
        if self.sessions.find(parent, name).is_some()
            || self.sessions.find(new_parent, new_name).is_some()
        {
            return Err(FsError::new(
                libc::EBUSY,
                "an image being written cannot be renamed or replaced",
            ));
        }
        // A folder replaced by a rename must be empty: files being written
        // in it count (as for rmdir).
        if let Some(target) = self.catalog.lookup(new_parent, new_name)?
            && target.kind.is_dir()
            && !self.sessions.children(target.ino).is_empty()
        {
            return Err(FsError::new(
                libc::ENOTEMPTY,
                format!("{new_name} holds a file being written"),
            ));
        }
        let replaced = self
            .catalog
            .rename(parent, name, new_parent, new_name)
            .map_err(|e| self.refusal("rename", new_name, e))?;
        if let Some(old) = replaced {
            self.recycle_volumes_of(&old);
        }
        // An LSU image's recipe file carries its name (`lsu recover`).
        if let Ok(Some(n)) = self.catalog.lookup(new_parent, new_name)
            && crate::catalog::lsu_of_pool(&n.pool).is_some()
        {
            match n.kind {
                crate::catalog::InodeKind::Image(id) => self.store.msdp.refresh_recipe(id),
                ref k if k.is_dir() => self.store.msdp.refresh_recipes_below(n.ino),
                _ => {}
            }
        }
        Ok(())
    }

    /// setattr on a stored entry (not a file being written).
    pub(super) fn set_stored_attrs(&self, ino: u64, ch: &AttrChange) -> Res<FileAttr> {
        let Entry::Stored(node) = self.entry(ino)? else {
            return Err(FsError::new(
                libc::EPERM,
                "attributes of this node are fixed",
            ));
        };
        if let Some(size) = ch.size {
            let cur = self.attr_of(ino)?.size;
            if size != cur {
                return Err(FsError::new(
                    libc::EPERM,
                    format!(
                        "{} is immutable: open it with O_TRUNC to write a new version",
                        node.name
                    ),
                ));
            }
        }
        self.check_writable()?;
        self.check_unlocked(&node, true)?;
        let mut a = node.attrs;
        ch.apply(&mut a);
        // chmod moves an access ACL's owner, mask and other entries along,
        // in the same transaction.
        let acl = match ch.mode {
            Some(m) => self
                .catalog
                .xattr(ino, super::acl::ACCESS)?
                .and_then(|acl| super::acl::chmod(&acl, m)),
            None => None,
        };
        match acl {
            Some(acl) => {
                let name = super::acl::ACCESS;
                self.catalog.set_attrs_and_xattr(ino, a, name, Some(&acl))?
            }
            None => self.catalog.set_attrs(ino, a)?,
        };
        self.attr_of(ino)
    }

    /// EPERM, logged with the image and its unlock time, when `node` is an
    /// image under a retention lock or legal hold.
    /// Refuses a change to a locked image; `attrs`: a change of its
    /// attributes only, allowed for [`super::ATTR_GRACE`] after a commit
    /// through this mount.
    pub(super) fn check_unlocked(&self, node: &crate::catalog::Inode, attrs: bool) -> Res<()> {
        let InodeKind::Image(id) = node.kind else {
            return Ok(());
        };
        if attrs
            && self
                .fresh
                .lock()
                .get(&node.ino)
                .is_some_and(|at| at.elapsed() < super::ATTR_GRACE)
        {
            return Ok(());
        }
        let Some(img) = self.catalog.image(id)? else {
            return Ok(());
        };
        match self.catalog.locked(&img)? {
            Some(why) => {
                let what = format!("{}/{}", img.pool, img.path);
                Err(self.refusal("change", &what, crate::catalog::CatalogError::Locked(why)))
            }
            None => Ok(()),
        }
    }

    /// (blocks, free blocks) in 1 MiB units: the volume library's
    /// capacity and what its volumes hold, plus the LSUs' containers (which
    /// grow into the store's disk), so `df` shows what the store uses.
    pub(super) fn do_statfs(&self) -> Res<(u64, u64)> {
        let cfg = &self.store.config;
        let library = u64::from(cfg.max_volumes) * cfg.volume_capacity;
        let on_volumes: u64 = self.catalog.volumes()?.iter().map(|v| v.used).sum();
        let mut in_lsus = 0;
        for l in self.catalog.lsus()? {
            in_lsus += self
                .catalog
                .containers(&l.name)?
                .iter()
                .map(|(_, c)| c.size)
                .sum::<u64>();
        }
        let free = library
            .saturating_sub(on_volumes)
            .min(disk_free(&self.store.dir));
        let total = (on_volumes + in_lsus + free).max(library);
        Ok((total >> 20, free >> 20))
    }
}

fn disk_free(dir: &std::path::Path) -> u64 {
    nix_statvfs(dir).unwrap_or(u64::MAX)
}

#[allow(unsafe_code)]
fn nix_statvfs(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `s` points to writable memory of the right type.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `s`.
    let s = unsafe { s.assume_init() };
    Some(s.f_bavail * s.f_frsize)
}
