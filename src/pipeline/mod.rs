//! A write pipeline in front of an image writer (a tape [`ImageSink`] or an
//! LSU one): the caller (a FUSE thread) checks the offset, copies the data
//! and queues it; a worker thread per image hashes, seals and appends. The
//! queue is bounded, so a fast writer waits for the worker instead of
//! filling memory. Tape and MSDP share it so both get the same poisoning
//! and commit-at-close behaviour.
//!
//! An error in the worker poisons the image: it is returned by the next
//! write and by the close that would have committed it, so a failed image
//! is never committed; what was committed before stays.

pub mod filelist;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use parking_lot::Mutex;

use crate::catalog::{FileAttrs, ImageRec};

/// Where an image goes in the namespace.
#[derive(Clone)]
pub struct WriteTarget {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub pool: String,
    /// Path inside the pool, written into fragment headers.
    pub path: String,
    pub attrs: FileAttrs,
}

/// What a commit returns: the image, and the older image at the same name
/// that the same transaction removed (its volumes may now be recycled).
pub type Committed = Option<(ImageRec, Option<ImageRec>)>;

/// What a pipeline needs of a writer's error type.
pub trait SinkError: std::error::Error + Send + Sync + Sized + 'static {
    /// An earlier write failed with `first`; nothing more will commit.
    fn deferred(first: Arc<Self>) -> Self;
    /// The writer failed earlier (the error was reported then).
    fn poisoned() -> Self;
    /// The worker thread could not start or ended.
    fn stopped(e: std::io::Error) -> Self;
    /// A write before the end of the image.
    fn not_sequential(path: String, offset: u64, end: u64) -> Self;
}

/// An image writer that a pipeline can drive.
pub trait ImageSink: Send + 'static {
    type Error: SinkError;
    /// The key tag new data is encrypted under, if any.
    fn key_tag(&self) -> Option<String>;
    /// Appends `data` at the end of the image. The pipeline turns holes
    /// (sparse writes, ftruncate past the end) into zeros and stops calling
    /// after the first failure, so a sink needs neither.
    fn append(&mut self, data: &[u8]) -> Result<(), Self::Error>;
    /// Changes the attributes the image will be committed with.
    fn set_attrs(&mut self, a: FileAttrs);
    /// Commits the image as written so far, if anything is new.
    fn checkpoint(&mut self) -> Result<Committed, Self::Error>;
    /// Ends the image, committing what is new.
    fn finish(self) -> Result<Committed, Self::Error>;
}

enum Cmd<E> {
    Write(u64, Vec<u8>),
    Extend(u64),
    Attrs(FileAttrs),
    Checkpoint(SyncSender<Result<Committed, E>>),
    Finish(SyncSender<Result<Committed, E>>),
}

/// Messages of up to 1 MiB each; 4 in flight.
const QUEUE: usize = 4;

/// An image being written through a worker thread.
pub struct PipelinedWriter<S: ImageSink> {
    tx: Option<SyncSender<Cmd<S::Error>>>,
    /// Buffers the worker is done with, reused so that a stream of 1 MiB
    /// writes does not allocate (and page-fault) 1 MiB per request.
    spare: Receiver<Vec<u8>>,
    error: Arc<Mutex<Option<Arc<S::Error>>>>,
    path: String,
    key_tag: Option<String>,
    size: u64,
    dirty: bool,
}

impl<S: ImageSink> PipelinedWriter<S> {
    /// Starts the worker of a writer that has begun (so ENOKEY, EBUSY and
    /// ENOSPC came back at once); `path` names the image in errors.
    pub fn start(w: S, path: String) -> Result<Self, S::Error> {
        let key_tag = w.key_tag();
        let (tx, rx) = sync_channel(QUEUE);
        let (spare_tx, spare) = sync_channel(QUEUE + 2);
        let error = Arc::new(Mutex::new(None));
        let err2 = error.clone();
        std::thread::Builder::new()
            .name("kmsfs-writer".into())
            .spawn(move || worker(w, rx, spare_tx, err2))
            .map_err(S::Error::stopped)?;
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

    fn failed(&self) -> Result<(), S::Error> {
        match self.error.lock().as_ref() {
            Some(e) => Err(S::Error::deferred(e.clone())),
            None => Ok(()),
        }
    }

    fn ended(&self) -> S::Error {
        self.failed()
            .err()
            .unwrap_or_else(|| S::Error::stopped(std::io::Error::other("writer thread ended")))
    }

    fn send(&self, c: Cmd<S::Error>) -> Result<(), S::Error> {
        self.failed()?;
        let tx = self.tx.as_ref().expect("writer open");
        tx.send(c).map_err(|_| self.ended())
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(SyncSender<Result<T, S::Error>>) -> Cmd<S::Error>,
    ) -> Result<T, S::Error> {
        let (tx, rx) = sync_channel(1);
        self.send(make(tx))?;
        rx.recv().map_err(|_| self.ended())?
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
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), S::Error> {
        if offset < self.size {
            return Err(S::Error::not_sequential(
                self.path.clone(),
                offset,
                self.size,
            ));
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
    pub fn extend_to(&mut self, len: u64) -> Result<(), S::Error> {
        if len > self.size {
            self.send(Cmd::Extend(len))?;
            self.size = len;
            self.dirty = true;
        }
        Ok(())
    }

    /// Changes the attributes the image will be committed with.
    /// New attributes are something new to commit, like new bytes.
    pub fn set_attrs(&mut self, a: FileAttrs) -> Result<(), S::Error> {
        self.dirty = true;
        self.send(Cmd::Attrs(a))
    }

    /// Waits for the queue and commits (see [`ImageSink::checkpoint`]).
    pub fn checkpoint(&mut self) -> Result<Committed, S::Error> {
        let r = self.ask(Cmd::Checkpoint)?;
        if r.is_some() {
            self.dirty = false;
        }
        Ok(r)
    }

    /// Waits for the queue, commits what is new, returns the drive.
    pub fn finish(mut self) -> Result<Committed, S::Error> {
        let r = self.ask(Cmd::Finish);
        self.tx = None;
        r
    }
}

/// Appends zeros through `append` from `from` up to `to` (nothing if
/// `to <= from`): the holes of sparse copies and of ftruncate past the end.
pub fn append_zeros<E>(
    from: u64,
    to: u64,
    mut append: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    static ZEROS: [u8; 65536] = [0; 65536];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        append(&ZEROS[..n])?;
        at += n as u64;
    }
    Ok(())
}

fn worker<S: ImageSink>(
    w: S,
    rx: Receiver<Cmd<S::Error>>,
    spare: SyncSender<Vec<u8>>,
    error: Arc<Mutex<Option<Arc<S::Error>>>>,
) {
    let fail = |e: S::Error| {
        let mut slot = error.lock();
        let first = slot.get_or_insert_with(|| Arc::new(e)).clone();
        S::Error::deferred(first)
    };
    // The sink while the image is healthy. It is dropped at the first
    // failure, so its drive, volumes and pins are free at once, not when the
    // kernel releases the file (after close(2) has already returned).
    let mut sink = Some(w);
    // Bytes the sink holds; writes past it leave a hole of zeros.
    let mut end = 0u64;
    while let Ok(cmd) = rx.recv() {
        let Some(w) = sink.as_mut() else {
            if refuse(cmd, &fail, &spare) {
                return;
            }
            continue;
        };
        let failed = match cmd {
            Cmd::Write(off, data) => {
                let r = put(w, &mut end, off, &data).map_err(&fail);
                let _ = spare.try_send(data);
                r.is_err()
            }
            Cmd::Extend(len) => put(w, &mut end, len, &[]).map_err(&fail).is_err(),
            Cmd::Attrs(a) => {
                w.set_attrs(a);
                false
            }
            Cmd::Checkpoint(reply) => answer(&reply, w.checkpoint().map_err(&fail)),
            Cmd::Finish(reply) => {
                let w = sink.take().expect("sink present");
                let _ = reply.send(w.finish().map_err(&fail));
                return;
            }
        };
        if failed {
            sink = None;
        }
    }
}

/// Appends `data` at `offset`, zeros first over a hole; `end` follows.
fn put<S: ImageSink>(w: &mut S, end: &mut u64, offset: u64, data: &[u8]) -> Result<(), S::Error> {
    append_zeros(*end, offset, |z| w.append(z))?;
    if !data.is_empty() {
        w.append(data)?;
    }
    *end = (*end).max(offset + data.len() as u64);
    Ok(())
}

/// Sends a reply; whether it was a failure.
fn answer<T, E>(reply: &SyncSender<Result<T, E>>, r: Result<T, E>) -> bool {
    let failed = r.is_err();
    let _ = reply.send(r);
    failed
}

/// Answers a command of a failed image: writes are dropped, questions get
/// the first error. Whether the writer is finished.
fn refuse<E: SinkError>(cmd: Cmd<E>, fail: &impl Fn(E) -> E, spare: &SyncSender<Vec<u8>>) -> bool {
    match cmd {
        Cmd::Write(_, data) => {
            let _ = spare.try_send(data);
        }
        Cmd::Extend(_) | Cmd::Attrs(_) => {}
        Cmd::Checkpoint(r) => {
            let _ = r.send(Err(fail(E::poisoned())));
        }
        Cmd::Finish(r) => {
            let _ = r.send(Err(fail(E::poisoned())));
            return true;
        }
    }
    false
}
