//! File operations: create, open, read, write, setattr of a file being
//! written, and the close that commits an image.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fuser::{FileAttr, FopenFlags};
use parking_lot::Mutex;

use super::dir_ops::AttrChange;
use super::handles::Handle;
use super::streams::{Reader, Writer};
use super::{Entry, FsError, KmsFs, Node, Pending, Res};
use crate::catalog::{FileAttrs, InodeKind};
use crate::pipeline::Committed;
use crate::pipeline::WriteTarget;

impl KmsFs {
    /// Starts a writer for `name` in directory `parent` (new image, or a new
    /// version of the image at `ino`). Returns the file handle.
    fn start_writer(&self, ino: u64, parent: u64, name: &str, attrs: FileAttrs) -> Res<u64> {
        self.check_writable()?;
        let dir = self.image_dir(parent)?;
        if self.pending.lock().contains_key(&ino) {
            return Err(FsError::new(
                libc::EBUSY,
                format!("{name} is already being written"),
            ));
        }
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
        let writer = Writer::begin(&self.store, target)?;
        let size = Arc::new(AtomicU64::new(0));
        self.pending.lock().insert(
            ino,
            Pending {
                parent,
                name: name.into(),
                attrs,
                size: size.clone(),
            },
        );
        tracing::info!(pool = %dir.pool, name, key_tag = writer.key_tag().unwrap_or("-"), "image write started");
        Ok(self.add_handle(Handle::Write {
            ino,
            writer: Mutex::new(Some(Box::new(writer))),
            size,
            flushed: AtomicBool::new(false),
        }))
    }

    pub(super) fn do_create(
        &self,
        parent: u64,
        name: &str,
        attrs: FileAttrs,
    ) -> Res<(FileAttr, u64)> {
        let ino = match self.catalog.lookup(parent, name)? {
            Some(i) if matches!(i.kind, InodeKind::Image(_)) => i.ino,
            Some(_) => return Err(FsError::new(libc::EISDIR, name.to_string())),
            None => self.catalog.alloc_ino(),
        };
        let fh = self.start_writer(ino, parent, name, attrs)?;
        Ok((self.attr_of(ino)?, fh))
    }

    pub(super) fn do_open(&self, ino: u64, flags: i32) -> Res<(u64, FopenFlags)> {
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
            Entry::Pending(_) => Err(FsError::new(libc::EBUSY, "image is being written")),
            Entry::Stored(node) => {
                let InodeKind::Image(id) = node.kind else {
                    return Err(FsError::new(libc::EISDIR, node.name));
                };
                if write {
                    if flags & libc::O_TRUNC == 0 {
                        tracing::warn!(image = %node.name, "write without O_TRUNC refused: images are immutable once closed");
                        return Err(FsError::new(
                            libc::EPERM,
                            format!(
                                "{} is immutable: open with O_TRUNC to write a new version",
                                node.name
                            ),
                        ));
                    }
                    let mut attrs = node.attrs;
                    attrs.mtime_ns = crate::util::clock::now_ns();
                    attrs.ctime_ns = attrs.mtime_ns;
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

    pub(super) fn do_read(&self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        match &*self.handle(fh)? {
            Handle::Read(r) => Ok(r.read_at(offset, size as usize)?),
            Handle::Status(t) => {
                let start = (offset as usize).min(t.len());
                let end = (start + size as usize).min(t.len());
                Ok(t[start..end].to_vec())
            }
            Handle::Write { .. } => Err(FsError::new(
                libc::EBADF,
                "image open for writing cannot be read until closed",
            )),
        }
    }

    pub(super) fn do_write(&self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let h = self.handle(fh)?;
        let Handle::Write {
            writer,
            size,
            flushed,
            ..
        } = &*h
        else {
            return Err(FsError::new(libc::EBADF, "not open for writing"));
        };
        flushed.store(false, Ordering::SeqCst);
        let mut w = writer.lock();
        let w = w
            .as_mut()
            .ok_or_else(|| FsError::new(libc::EBADF, "image already closed"))?;
        w.write_at(offset, data)?;
        size.store(w.size(), Ordering::SeqCst);
        Ok(data.len() as u32)
    }

    /// setattr of a file being written: size may grow (zero fill), attributes change.
    pub(super) fn set_pending_attrs(&self, ino: u64, ch: &AttrChange) -> Res<FileAttr> {
        let fh = self
            .handles
            .lock()
            .iter()
            .find(|(_, h)| matches!(&***h, Handle::Write { ino: i, .. } if *i == ino))
            .map(|(f, _)| *f);
        let h = fh
            .map(|f| self.handle(f))
            .transpose()?
            .ok_or_else(|| FsError::new(libc::EBUSY, "image is being written by another handle"))?;
        let Handle::Write { writer, size, .. } = &*h else {
            unreachable!("found as a write handle")
        };
        let mut guard = writer.lock();
        let w = guard
            .as_mut()
            .ok_or_else(|| FsError::new(libc::EBADF, "image already closed"))?;
        if let Some(s) = ch.size {
            if s < w.size() {
                return Err(FsError::new(
                    libc::ESPIPE,
                    format!(
                        "cannot shrink an image being written from {} to {s}",
                        w.size()
                    ),
                ));
            }
            w.extend_to(s)?;
            size.store(w.size(), Ordering::SeqCst);
        }
        let mut pend = self.pending.lock();
        if let Some(p) = pend.get_mut(&ino) {
            ch.apply(&mut p.attrs);
            w.set_attrs(p.attrs)?;
        }
        drop(pend);
        drop(guard);
        self.attr_of(ino)
    }

    pub(super) fn do_setattr(&self, ino: u64, ch: &AttrChange) -> Res<FileAttr> {
        self.settle(ino);
        if self.pending.lock().contains_key(&ino) {
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
                if let Some(old) = replaced {
                    self.recycle_replaced(&old);
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

    /// Ends the writer of a handle: a last commit if it has new data, the
    /// drive returned, the file no longer pending.
    fn end_writer(&self, h: &Handle) -> Res<()> {
        let Handle::Write { ino, writer, .. } = h else {
            return Ok(());
        };
        let Some(w) = writer.lock().take() else {
            return Ok(());
        };
        let result = w.finish();
        self.pending.lock().remove(ino);
        self.committed(*ino, result)
    }

    /// close(2) of a descriptor: the image as written so far is committed
    /// (durable and visible) before close returns. More writes through a
    /// descriptor still open (a shell's `> file` closes a duplicate first)
    /// continue the image; the next close commits the new version.
    pub(super) fn do_flush(&self, fh: u64) -> Res<()> {
        let h = self.handle(fh)?;
        let Handle::Write {
            ino,
            writer,
            flushed,
            ..
        } = &*h
        else {
            return Ok(());
        };
        flushed.store(true, Ordering::SeqCst);
        let result = writer
            .lock()
            .as_mut()
            .map(|w| w.checkpoint())
            .unwrap_or(Ok(None));
        self.committed(*ino, result)
    }

    /// The write handle of a file being written, if any.
    fn writer_of(&self, ino: u64) -> Option<Arc<Handle>> {
        self.handles.lock().values().find(|h| matches!(&***h, Handle::Write { ino: i, writer, .. } if *i == ino && writer.lock().is_some())).cloned()
    }

    /// Before anything else touches a file being written: if its descriptors
    /// are all closed and its data committed (rsync: close, utimes, rename),
    /// end the writer so the change applies to the committed image. Waits a
    /// little for a writer that is closing.
    pub(super) fn settle(&self, ino: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let late = std::time::Instant::now() > deadline;
            match self.writer_of(ino) {
                Some(h) => {
                    let Handle::Write {
                        writer, flushed, ..
                    } = &*h
                    else {
                        return;
                    };
                    let dirty = writer.lock().as_ref().is_some_and(|w| w.is_dirty());
                    if !flushed.load(Ordering::SeqCst) || (dirty && late) {
                        return;
                    }
                    if !dirty {
                        let _ = self.end_writer(&h);
                        return;
                    }
                }
                // No writer but still pending: its release is ending it now.
                None if self.pending.lock().contains_key(&ino) && !late => {}
                None => return,
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// [`KmsFs::settle`] by name.
    pub(super) fn settle_name(&self, parent: u64, name: &str) {
        let ino = self
            .pending
            .lock()
            .iter()
            .find(|(_, p)| p.parent == parent && p.name == name)
            .map(|(i, _)| *i);
        if let Some(ino) = ino {
            self.settle(ino);
        }
    }

    pub(super) fn do_fsync(&self, fh: u64) -> Res<()> {
        if let Handle::Write { writer, .. } = &*self.handle(fh)?
            && let Some(w) = writer.lock().as_ref()
        {
            w.sync()?;
        }
        Ok(())
    }

    pub(super) fn do_release(&self, fh: u64) -> Res<()> {
        let r = self.handle(fh).and_then(|h| self.end_writer(&h));
        self.handles.lock().remove(&fh);
        r
    }
}
