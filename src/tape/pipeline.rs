//! A write pipeline in front of [`ImageWriter`]: the caller (a FUSE
//! thread) checks the offset, copies the data and queues it; a worker
//! thread per image hashes, seals and appends. The queue is bounded, so a
//! fast writer waits for the worker instead of filling memory.
//!
//! An error in the worker poisons the image: it is returned by the next
//! write and by the close that would have committed it, so a failed image
//! is never committed; what was committed before stays.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use parking_lot::Mutex;

use super::{ImageWriter, Library, TapeError, WriteTarget};
use crate::catalog::{FileAttrs, ImageRec};

/// What a commit returns: the image and the id of an image it replaced.
pub type Committed = Option<(ImageRec, Option<u128>)>;

enum Cmd {
    Write(u64, Vec<u8>),
    Extend(u64),
    Attrs(FileAttrs),
    Sync(SyncSender<Result<(), TapeError>>),
    Checkpoint(SyncSender<Result<Committed, TapeError>>),
    Finish(SyncSender<Result<Committed, TapeError>>),
}

/// Messages of up to 1 MiB each; 4 in flight.
const QUEUE: usize = 4;

/// An image being written through a worker thread.
pub struct PipelinedWriter {
    tx: Option<SyncSender<Cmd>>,
    /// Buffers the worker is done with, reused so that a stream of 1 MiB
    /// writes does not allocate (and page-fault) 1 MiB per request.
    spare: Receiver<Vec<u8>>,
    error: Arc<Mutex<Option<Arc<TapeError>>>>,
    path: String,
    key_tag: Option<String>,
    size: u64,
    dirty: bool,
}

impl PipelinedWriter {
    /// Starts an image (drive, volume and key taken here, so ENOKEY,
    /// EBUSY and ENOSPC come back at once) and its worker.
    pub fn begin(lib: &Arc<Library>, target: WriteTarget) -> Result<Self, TapeError> {
        let path = format!("{}/{}", target.pool, target.path);
        let w = ImageWriter::begin(lib, target)?;
        let key_tag = w.key_tag().map(str::to_string);
        let (tx, rx) = sync_channel(QUEUE);
        let (spare_tx, spare) = sync_channel(QUEUE + 2);
        let error = Arc::new(Mutex::new(None));
        let err2 = error.clone();
        std::thread::Builder::new()
            .name("kmsfs-writer".into())
            .spawn(move || worker(w, rx, spare_tx, err2))
            .map_err(|e| TapeError::io("starting the image writer thread", e))?;
        Ok(Self {
            tx: Some(tx),
            spare,
            error,
            path,
            key_tag,
            size: 0,
            dirty: true,
        })
    }

    fn failed(&self) -> Result<(), TapeError> {
        match self.error.lock().as_ref() {
            Some(e) => Err(TapeError::Deferred(e.clone())),
            None => Ok(()),
        }
    }

    fn send(&self, c: Cmd) -> Result<(), TapeError> {
        self.failed()?;
        let tx = self.tx.as_ref().expect("writer open");
        tx.send(c).map_err(|_| {
            self.failed().err().unwrap_or_else(|| {
                TapeError::io("image writer", std::io::Error::other("writer thread ended"))
            })
        })
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(SyncSender<Result<T, TapeError>>) -> Cmd,
    ) -> Result<T, TapeError> {
        let (tx, rx) = sync_channel(1);
        self.send(make(tx))?;
        rx.recv().map_err(|_| {
            self.failed().err().unwrap_or_else(|| {
                TapeError::io("image writer", std::io::Error::other("writer thread ended"))
            })
        })?
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether data was accepted since the last commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The key tag registered for this image, if encrypted.
    pub fn key_tag(&self) -> Option<&str> {
        self.key_tag.as_deref()
    }

    /// Queues `data` at `offset` (ESPIPE at once if before the end).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TapeError> {
        if offset < self.size {
            return Err(TapeError::NotSequential {
                path: self.path.clone(),
                offset,
                end: self.size,
            });
        }
        let mut buf = self.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.send(Cmd::Write(offset, buf))?;
        self.size = offset + data.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Grows the image with zeros up to `len`.
    pub fn extend_to(&mut self, len: u64) -> Result<(), TapeError> {
        if len > self.size {
            self.send(Cmd::Extend(len))?;
            self.size = len;
            self.dirty = true;
        }
        Ok(())
    }

    /// Changes the attributes the image will be committed with.
    pub fn set_attrs(&mut self, a: FileAttrs) -> Result<(), TapeError> {
        self.send(Cmd::Attrs(a))
    }

    /// Waits for the queue and fsyncs what was written.
    pub fn sync(&self) -> Result<(), TapeError> {
        self.ask(Cmd::Sync)
    }

    /// Waits for the queue and commits (see [`ImageWriter::checkpoint`]).
    pub fn checkpoint(&mut self) -> Result<Committed, TapeError> {
        let r = self.ask(Cmd::Checkpoint)?;
        if r.is_some() {
            self.dirty = false;
        }
        Ok(r)
    }

    /// Waits for the queue, commits what is new, returns the drive.
    pub fn finish(mut self) -> Result<Committed, TapeError> {
        let r = self.ask(Cmd::Finish);
        self.tx = None;
        r
    }
}

fn worker(
    mut w: ImageWriter,
    rx: Receiver<Cmd>,
    spare: SyncSender<Vec<u8>>,
    error: Arc<Mutex<Option<Arc<TapeError>>>>,
) {
    let fail = |e: TapeError| {
        let mut slot = error.lock();
        let first = slot.get_or_insert_with(|| Arc::new(e)).clone();
        TapeError::Deferred(first)
    };
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Write(off, data) => {
                if let Err(e) = w.write_at(off, &data) {
                    fail(e);
                }
                let _ = spare.try_send(data);
            }
            Cmd::Extend(len) => {
                if let Err(e) = w.extend_to(len) {
                    fail(e);
                }
            }
            Cmd::Attrs(a) => w.set_attrs(a),
            Cmd::Sync(reply) => {
                let _ = reply.send(if error.lock().is_some() {
                    Err(fail(TapeError::Poisoned))
                } else {
                    w.sync().map_err(fail)
                });
            }
            Cmd::Checkpoint(reply) => {
                let _ = reply.send(if error.lock().is_some() {
                    Err(fail(TapeError::Poisoned))
                } else {
                    w.checkpoint().map_err(fail)
                });
            }
            Cmd::Finish(reply) => {
                let r = if error.lock().is_some() {
                    Err(fail(TapeError::Poisoned))
                } else {
                    w.finish().map_err(fail)
                };
                let _ = reply.send(r);
                return;
            }
        }
    }
}
