//! File operations: create, open, read, write, setattr of a file being
//! written, and the close that commits an image. The life of an image
//! being written is the engine's [`crate::engine::Sessions`]; this is its FUSE face.

use fuser::{FileAttr, FopenFlags};

use super::dir_ops::AttrChange;
use super::handles::Handle;
use super::{Entry, FsError, KmsFs, Node, Res, SETTLE_PATIENCE};
use crate::catalog::{FileAttrs, InodeKind};
use crate::engine::Reader;
use crate::pipeline::Committed;
use crate::pipeline::WriteTarget;

/// A write by a user other than root clears setuid, and setgid where the
/// group may execute (as the kernel does on a local file system).
fn kill_suid(mode: u32) -> u32 {
    let mut kill = libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        kill |= libc::S_ISGID;
    }
    mode & !kill
}

impl KmsFs {
    /// Starts a writer for `name` in directory `parent` (new image, or a new
    /// version of the image at `ino`). Returns the file handle.
    fn start_writer(&self, ino: u64, parent: u64, name: &str, attrs: FileAttrs) -> Res<u64> {
        self.check_writable()?;
        let dir = self.image_dir(parent)?;
        let path = match self.catalog.path_of(parent)?.split_once('/') {
            Some((_, rest)) => format!("{rest}/{name}"),
            None => name.to_string(),
        };
        let target = WriteTarget {
            ino,
            parent,
            name: name.into(),
            pool: dir.pool.clone(),
            path,
            attrs,
        };
        let session = self.sessions.begin(&self.store, target)?;
        tracing::info!(pool = %dir.pool, name, key_tag = session.key_tag().as_deref().unwrap_or("-"), "image write started");
        Ok(self.add_handle(Handle::Write(session)))
    }

    /// A new version written over a non-empty image forgets the retention
    /// asked for the old one (an empty one's request is for the data about
    /// to be written: `tar --xattrs` sets it before writing).
    fn forget_old_retention(&self, node: &crate::catalog::Inode) -> Res<()> {
        if let InodeKind::Image(id) = node.kind
            && self.catalog.image(id)?.is_some_and(|i| i.size > 0)
        {
            self.catalog.forget_retention(node.ino)?;
        }
        Ok(())
    }

    pub(super) fn do_create(
        &self,
        parent: u64,
        name: &str,
        attrs: FileAttrs,
    ) -> Res<(FileAttr, u64)> {
        let ino = match self.catalog.lookup(parent, name)? {
            Some(i) if matches!(i.kind, InodeKind::Image(_)) => {
                // A create that found the name taken (a lookup raced it) is
                // an O_TRUNC rewrite: refused at once on a locked image.
                self.check_unlocked(&i, false)?;
                self.forget_old_retention(&i)?;
                i.ino
            }
            Some(i) if i.kind.is_dir() => return Err(FsError::new(libc::EISDIR, name.to_string())),
            Some(_) => return Err(FsError::new(libc::EEXIST, name.to_string())),
            None => self.catalog.alloc_ino(),
        };
        let fh = self.start_writer(ino, parent, name, attrs)?;
        Ok((self.attr_of(ino)?, fh))
    }

    /// Opens `ino` for `uid`.
    pub(super) fn do_open(&self, ino: u64, flags: i32, uid: u32) -> Res<(u64, FopenFlags)> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.settle(ino);
        match self.entry(ino)? {
            Entry::Synthetic(Node::DriveStatus(i)) if !write => {
                let text = self.lib.drives.status(i).unwrap_or_default().into_bytes();
                Ok((
                    self.add_handle(Handle::Status(text)),
                    FopenFlags::FOPEN_DIRECT_IO,
                ))
            }
            Entry::Synthetic(_) => Err(FsError::new(libc::EACCES, "read-only node")),
            Entry::Pending(_) if write => Err(FsError::new(libc::EBUSY, "image is being written")),
            // A reader of a file being written sees the version last
            // committed (nothing, for a new file) until a close commits.
            Entry::Pending(_) => {
                let committed = match self.catalog.inode(ino)?.map(|n| n.kind) {
                    Some(InodeKind::Image(id)) => self.catalog.image(id)?,
                    _ => None,
                };
                let h = match committed {
                    Some(img) => Handle::Read(Box::new(Reader::open(&self.store, img)?)),
                    None => Handle::Status(Vec::new()),
                };
                Ok((self.add_handle(h), FopenFlags::FOPEN_DIRECT_IO))
            }
            Entry::Stored(node) => {
                let InodeKind::Image(id) = node.kind else {
                    return Err(FsError::new(libc::EISDIR, node.name));
                };
                // An empty image has nothing to overwrite: a writer without
                // O_TRUNC (tar --xattrs makes the file with mknod, sets its
                // attributes, then opens it) writes its first version.
                let empty = || matches!(self.catalog.image(id), Ok(Some(i)) if i.size == 0);
                if write {
                    if flags & libc::O_TRUNC == 0 && !empty() {
                        tracing::warn!(image = %node.name, "write without O_TRUNC refused: images are immutable once closed");
                        return Err(FsError::new(
                            libc::EPERM,
                            format!(
                                "{} is immutable: open with O_TRUNC to write a new version",
                                node.name
                            ),
                        ));
                    }
                    self.check_unlocked(&node, false)?;
                    self.forget_old_retention(&node)?;
                    crate::util::failpoint::hit(crate::util::failpoint::IMAGE_REPLACE)
                        .map_err(|e| FsError::io(&node.name, e))?;
                    let mut attrs = node.attrs;
                    attrs.mtime_ns = crate::util::clock::now_ns();
                    attrs.ctime_ns = attrs.mtime_ns;
                    if uid != 0 {
                        attrs.mode = kill_suid(attrs.mode);
                    }
                    return Ok((
                        self.start_writer(ino, node.parent, &node.name, attrs)?,
                        FopenFlags::FOPEN_DIRECT_IO,
                    ));
                }
                let img = self.catalog.image(id)?.ok_or_else(|| {
                    FsError::new(
                        libc::EIO,
                        format!("image of {} missing from catalog", node.name),
                    )
                })?;
                let reader = Reader::open(&self.store, img)?;
                let keep = self.cached.lock().insert(ino, id) == Some(id);
                let flags = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                Ok((self.add_handle(Handle::Read(Box::new(reader))), flags))
            }
        }
    }

    /// Reads into `buf` (this FUSE thread's reply buffer, grown to `size`
    /// once and reused, so a read allocates and clears nothing); returns
    /// the number of bytes read.
    pub(super) fn do_read(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> Res<usize> {
        let size = size as usize;
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let out = &mut buf[..size];
        match &*self.handle(fh)? {
            Handle::Read(r) => Ok(r.read_into(offset, out)?),
            Handle::Status(t) => {
                let start = (offset as usize).min(t.len());
                let end = (start + size).min(t.len());
                out[..end - start].copy_from_slice(&t[start..end]);
                Ok(end - start)
            }
            Handle::Write(_) => Err(FsError::new(
                libc::EBADF,
                "image open for writing cannot be read until closed",
            )),
        }
    }

    pub(super) fn do_write(&self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let h = self.handle(fh)?;
        let Handle::Write(s) = &*h else {
            return Err(FsError::new(libc::EBADF, "not open for writing"));
        };
        self.sessions.write(s, offset, data)?;
        Ok(data.len() as u32)
    }

    /// setattr of a file being written: size may grow (zero fill), attributes change.
    pub(super) fn set_pending_attrs(&self, ino: u64, ch: &AttrChange) -> Res<FileAttr> {
        let s = self
            .sessions
            .session(ino)
            .ok_or_else(|| FsError::new(libc::EBUSY, "image is being written by another handle"))?;
        self.sessions.set_attrs(&s, ch.size, |a| ch.apply(a))?;
        self.attr_of(ino)
    }

    pub(super) fn do_setattr(&self, ino: u64, ch: &AttrChange) -> Res<FileAttr> {
        self.settle(ino);
        if self.sessions.get(ino).is_some() {
            self.set_pending_attrs(ino, ch)
        } else {
            self.set_stored_attrs(ino, ch)
        }
    }

    /// After a commit attempt: the image a commit replaced gives back its
    /// volumes, and the kernel must not serve pages of an older version; a
    /// failed commit is logged and becomes the errno of close(2).
    fn committed(&self, ino: u64, result: Res<Committed>) -> Res<()> {
        match result {
            Ok(Some((_, replaced))) => {
                self.cached.lock().remove(&ino);
                let mut fresh = self.fresh.lock();
                fresh.retain(|_, at| at.elapsed() < super::ATTR_GRACE);
                fresh.insert(ino, std::time::Instant::now());
                drop(fresh);
                if let Some(old) = replaced {
                    self.recycle_volumes_of(&old);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::error!("image not committed: {}", e.why);
                Err(e)
            }
        }
    }

    /// close(2) of a descriptor: the image as written so far is committed
    /// (durable and visible) before close returns. More writes through a
    /// descriptor still open (a shell's `> file` closes a duplicate first)
    /// continue the image; the next close commits the new version.
    pub(super) fn do_flush(&self, fh: u64) -> Res<()> {
        let h = self.handle(fh)?;
        let Handle::Write(s) = &*h else {
            return Ok(());
        };
        let result = self.sessions.flush(s).map_err(FsError::from);
        self.committed(s.ino, result)
    }

    /// Before anything else touches a file being written: see
    /// [`crate::engine::Sessions::settle`].
    pub(super) fn settle(&self, ino: u64) {
        if let Some(result) = self.sessions.settle(ino, SETTLE_PATIENCE) {
            let _ = self.committed(ino, result.map_err(FsError::from));
        }
    }

    /// [`KmsFs::settle`] by name.
    pub(super) fn settle_name(&self, parent: u64, name: &str) {
        if let Some(ino) = self.sessions.find(parent, name) {
            self.settle(ino);
        }
    }

    pub(super) fn do_fsync(&self, fh: u64) -> Res<()> {
        if let Handle::Write(s) = &*self.handle(fh)? {
            let result = self.sessions.sync(s).map_err(FsError::from);
            return self.committed(s.ino, result);
        }
        Ok(())
    }

    pub(super) fn do_release(&self, fh: u64) -> Res<()> {
        let h = self.handles.lock().remove(&fh);
        match h.as_deref() {
            Some(Handle::Write(s)) => {
                let result = self.sessions.release(s).map_err(FsError::from);
                self.committed(s.ino, result)
            }
            Some(_) => Ok(()),
            None => Err(FsError::new(libc::EBADF, format!("file handle {fh}"))),
        }
    }
}
