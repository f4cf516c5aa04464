//! Entries that are not images, and what is kept beside an entry:
//! symbolic links, special files (fifos, sockets, devices, kept as
//! metadata and never opened as devices), hard links, and extended
//! attributes. Everything a tree can hold goes in and comes back out.

use fuser::FileAttr;

use super::{Entry, FsError, KmsFs, Res};
use crate::catalog::{FileAttrs, InodeKind, RETAIN_XATTR, XATTR_NAME_MAX, XattrSet};

/// Longest symbolic link target (PATH_MAX less its NUL).
const SYMLINK_MAX: usize = libc::PATH_MAX as usize - 1;

/// An extended attribute value, or its size when the caller asked for it.
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// The answer to a getxattr/listxattr that gave a buffer of `size` bytes
/// (0: the caller asks how large a buffer it needs).
fn sized(bytes: Vec<u8>, size: u32) -> Res<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(bytes.len() as u32))
    } else if bytes.len() > size as usize {
        Err(FsError::new(
            libc::ERANGE,
            format!("extended attribute of {} bytes", bytes.len()),
        ))
    } else {
        Ok(XattrReply::Data(bytes))
    }
}

/// Whether an attribute name is in a namespace kmsfs keeps (the kernel
/// checks `trusted.` and `security.` itself, and leaves `system.` to the
/// file system).
fn kept_namespace(name: &str) -> bool {
    ["user.", "trusted.", "security."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
        || name == super::acl::ACCESS
        || name == super::acl::DEFAULT
}

impl KmsFs {
    pub(super) fn do_symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        attrs: FileAttrs,
    ) -> Res<FileAttr> {
        if target.is_empty() || target.len() > SYMLINK_MAX {
            return Err(FsError::new(
                if target.is_empty() {
                    libc::ENOENT
                } else {
                    libc::ENAMETOOLONG
                },
                format!("symbolic link target of {} bytes", target.len()),
            ));
        }
        self.make_node(parent, name, InodeKind::Symlink(target.into()), attrs)
    }

    pub(super) fn do_readlink(&self, ino: u64) -> Res<Vec<u8>> {
        match self.entry(ino)? {
            Entry::Stored(n) => match n.kind {
                InodeKind::Symlink(t) => Ok(t.into_bytes()),
                _ => Err(FsError::new(
                    libc::EINVAL,
                    format!("{} is not a symbolic link", n.name),
                )),
            },
            _ => Err(FsError::new(libc::EINVAL, "not a symbolic link")),
        }
    }

    /// mknod: a fifo, socket or device is an entry of its own; a regular
    /// file is an empty image.
    pub(super) fn do_mknod(
        &self,
        parent: u64,
        name: &str,
        attrs: FileAttrs,
        rdev: u32,
    ) -> Res<FileAttr> {
        match attrs.mode & libc::S_IFMT {
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {
                let rdev = u64::from(rdev);
                self.make_node(parent, name, InodeKind::Special { rdev }, attrs)
            }
            libc::S_IFREG | 0 => {
                if self.catalog.lookup(parent, name)?.is_some() {
                    return Err(FsError::new(libc::EEXIST, name.to_string()));
                }
                let (_, fh) = self.do_create(parent, name, attrs)?;
                self.do_release(fh)?;
                self.do_lookup(parent, name)
            }
            t => Err(FsError::new(libc::EINVAL, format!("file type {t:o}"))),
        }
    }

    /// An entry without data in a pool or an LSU.
    fn make_node(
        &self,
        parent: u64,
        name: &str,
        kind: InodeKind,
        attrs: FileAttrs,
    ) -> Res<FileAttr> {
        self.check_writable()?;
        let dir = self.image_dir(parent)?;
        self.settle_name(parent, name);
        if self.sessions.find(parent, name).is_some() {
            return Err(FsError::new(libc::EEXIST, name.to_string()));
        }
        let node = self
            .catalog
            .make_entry(parent, name, &dir.pool, kind, attrs)?;
        tracing::debug!(pool = %dir.pool, name, "entry created");
        self.attr_of(node.ino)
    }

    /// link(2): another name for a file, in the same pool or LSU.
    pub(super) fn do_link(&self, ino: u64, new_parent: u64, new_name: &str) -> Res<FileAttr> {
        self.check_writable()?;
        self.settle(ino);
        let node = match self.entry(ino)? {
            Entry::Stored(n) if !n.kind.is_dir() => n,
            Entry::Pending(_) => {
                return Err(FsError::new(libc::EBUSY, "the file is being written"));
            }
            _ => return Err(FsError::new(libc::EPERM, "directories have one name")),
        };
        let dir = self.image_dir(new_parent)?;
        if dir.pool != node.pool {
            return Err(FsError::new(
                libc::EXDEV,
                format!(
                    "{} is in {}, the new name in {}: a hard link stays in its pool",
                    node.name, node.pool, dir.pool
                ),
            ));
        }
        self.settle_name(new_parent, new_name);
        if self.sessions.find(new_parent, new_name).is_some() {
            return Err(FsError::new(libc::EEXIST, new_name.to_string()));
        }
        self.catalog.link(ino, new_parent, new_name)?;
        self.attr_of(ino)
    }

    /// The catalog inode extended attributes of `ino` are kept under.
    fn xattr_ino(&self, ino: u64, write: bool) -> Res<u64> {
        if write {
            self.check_writable()?;
        }
        self.settle(ino);
        match self.entry(ino)? {
            // A locked image's attributes (and the mode an ACL sets) stay.
            Entry::Stored(node) if write => {
                self.check_unlocked(&node, true)?;
                Ok(ino)
            }
            Entry::Stored(_) | Entry::Pending(_) => Ok(ino),
            Entry::Synthetic(_) => Err(FsError::new(
                libc::ENOTSUP,
                "extended attributes live on pools, folders and files",
            )),
        }
    }

    pub(super) fn do_getxattr(&self, ino: u64, name: &str, size: u32) -> Res<XattrReply> {
        let value = match self.xattr_ino(ino, false) {
            Ok(ino) if name == RETAIN_XATTR => self.retention_of(ino)?,
            Ok(ino) => self.catalog.xattr(ino, name)?,
            Err(e) if e.errno == fuser::Errno::ENOTSUP => None,
            Err(e) => return Err(e),
        };
        let value = value.ok_or_else(|| FsError::new(libc::ENODATA, name.to_string()))?;
        sized(value, size)
    }

    pub(super) fn do_listxattr(&self, ino: u64, size: u32) -> Res<XattrReply> {
        let names = match self.xattr_ino(ino, false) {
            Ok(ino) => self.catalog.xattr_names(ino)?,
            Err(e) if e.errno == fuser::Errno::ENOTSUP => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut list = Vec::new();
        for n in names {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        sized(list, size)
    }

    pub(super) fn do_setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> Res<()> {
        if name.len() > XATTR_NAME_MAX {
            return Err(FsError::new(
                libc::ERANGE,
                format!("attribute name of {} bytes", name.len()),
            ));
        }
        if !kept_namespace(name) {
            return Err(FsError::new(
                libc::EOPNOTSUPP,
                format!(
                    "extended attribute {name}: kmsfs keeps user., trusted., security. and POSIX ACLs"
                ),
            ));
        }
        let how = match flags {
            0 => XattrSet::Any,
            libc::XATTR_CREATE => XattrSet::Create,
            libc::XATTR_REPLACE => XattrSet::Replace,
            f => return Err(FsError::new(libc::EINVAL, format!("setxattr flags {f:#x}"))),
        };
        if name == RETAIN_XATTR {
            return self.set_retention(ino, value);
        }
        let ino = self.xattr_ino(ino, true)?;
        if name == super::acl::ACCESS {
            return self.set_access_acl(ino, value, how);
        }
        self.catalog.set_xattr(ino, name, value, how)?;
        Ok(())
    }

    /// [`RETAIN_XATTR`] set: a retention asked for one image, within its
    /// pool's bounds; on a locked image it only extends the lock. Every
    /// request is audited, refused ones too.
    fn set_retention(&self, ino: u64, value: &[u8]) -> Res<()> {
        self.check_writable()?;
        self.settle(ino);
        // The image a request may lock at once: the one committed at the
        // inode, or the checkpoint of the session writing it (not the older
        // version that session replaces).
        let (pool, image, path) = match self.entry(ino)? {
            Entry::Stored(crate::catalog::Inode {
                pool,
                kind: InodeKind::Image(id),
                ..
            }) => (pool, Some(id), self.catalog.path_of(ino)?),
            Entry::Pending(p) => {
                let dir = self.image_dir(p.parent)?;
                let path = self.catalog.path_of(dir.ino)?;
                (dir.pool, p.committed, format!("{path}/{}", p.name))
            }
            _ => {
                return Err(FsError::new(
                    libc::EINVAL,
                    "a retention is kept per image, not per folder or pool",
                ));
            }
        };
        let top = match crate::catalog::lsu_of_pool(&pool) {
            Some(_) => "msdp",
            None => "pools",
        };
        let what = format!("{top}/{path}");
        let text = String::from_utf8_lossy(value);
        let r = crate::catalog::parse_until(&text)
            .ok_or_else(|| {
                crate::catalog::CatalogError::Invalid(format!(
                    "{RETAIN_XATTR} '{}' is not a time (Unix seconds or 2027-01-01T00:00:00Z)",
                    text.escape_debug()
                ))
            })
            .and_then(|until| self.catalog.request_retention(ino, &pool, image, until));
        let outcome = match &r {
            Ok(t) => format!(
                "done: until {}",
                crate::util::clock::iso_time((t / 1_000_000_000) as u64)
            ),
            Err(e) => format!("refused: {e}"),
        };
        tracing::info!(image = %crate::util::names::printable(&what), "retention asked at write time: {outcome}");
        if let Err(e) = self.store.audit.record("retain", &what, &outcome) {
            tracing::error!("audit log: {e}");
        }
        r.map(drop).map_err(|e| {
            let mut fe = FsError::from(e);
            fe.why = format!("{what}: {}", fe.why);
            fe
        })
    }

    /// [`RETAIN_XATTR`] read: the unlock time in force on a locked image,
    /// else the time asked for (if any).
    fn retention_of(&self, ino: u64) -> Res<Option<Vec<u8>>> {
        if let Entry::Stored(node) = self.entry(ino)?
            && let InodeKind::Image(id) = node.kind
            && let Some(l) = self.catalog.lock_of(id)?
            && l.until_ns > 0
        {
            let at = crate::util::clock::iso_time((l.until_ns / 1_000_000_000) as u64);
            return Ok(Some(at.into_bytes()));
        }
        Ok(self.catalog.xattr(ino, RETAIN_XATTR)?)
    }

    /// An access ACL sets the mode bits, in the same transaction; one that
    /// says no more than they do is not kept.
    fn set_access_acl(&self, ino: u64, value: &[u8], how: XattrSet) -> Res<()> {
        let (bits, minimal) = super::acl::mode_of(value)
            .ok_or_else(|| FsError::new(libc::EINVAL, "malformed POSIX ACL"))?;
        let exists = self.catalog.xattr(ino, super::acl::ACCESS)?.is_some();
        match how {
            XattrSet::Create if exists => {
                return Err(FsError::new(libc::EEXIST, super::acl::ACCESS));
            }
            XattrSet::Replace if !exists => {
                return Err(FsError::new(libc::ENODATA, super::acl::ACCESS));
            }
            _ => {}
        }
        let keep = (!minimal).then_some(value);
        match self.entry(ino)? {
            Entry::Stored(node) => {
                let mut a = node.attrs;
                a.mode = (a.mode & !0o777) | bits;
                a.ctime_ns = crate::util::clock::now_ns();
                let name = super::acl::ACCESS;
                self.catalog.set_attrs_and_xattr(ino, a, name, keep)?;
            }
            _ => {
                // A file being written: its mode lives in its session.
                match keep {
                    Some(v) => self
                        .catalog
                        .set_xattr(ino, super::acl::ACCESS, v, XattrSet::Any)?,
                    None if exists => self.catalog.remove_xattr(ino, super::acl::ACCESS)?,
                    None => {}
                }
                let special = u32::from(self.attr_of(ino)?.perm) & 0o7000;
                let change = super::dir_ops::AttrChange {
                    mode: Some(special | bits),
                    ..Default::default()
                };
                self.do_setattr(ino, &change)?;
            }
        }
        Ok(())
    }

    pub(super) fn do_removexattr(&self, ino: u64, name: &str) -> Res<()> {
        if !kept_namespace(name) {
            return Err(FsError::new(libc::EOPNOTSUPP, name.to_string()));
        }
        let ino = self.xattr_ino(ino, true)?;
        if name == RETAIN_XATTR
            && let Entry::Stored(node) = self.entry(ino)?
        {
            // Not even in the attribute grace after a commit.
            self.check_unlocked(&node, false)?;
        }
        self.catalog.remove_xattr(ino, name)?;
        Ok(())
    }
}
