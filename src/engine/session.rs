//! Write sessions: the life of an image from create (or open with O_TRUNC)
//! to the close that commits it.
//!
//! An image is written once, as a stream. Every close(2) of a descriptor
//! commits what was written so far (flush); more writes through a
//! descriptor still open continue the image; the last close ends the
//! writer (release). The kernel sends release *after* close(2) has
//! returned, so the next operation on the file (rsync: close, utimes,
//! rename) can arrive while the session is still open. [`Sessions::settle`]
//! decides what such an operation sees, without polling:
//!
//! | phase                 | settle                                       |
//! |-----------------------|----------------------------------------------|
//! | `Writing`             | returns: a descriptor is still writing       |
//! | `Flushing`            | waits: a close is committing                 |
//! | `Flushed`, clean      | ends the writer now (its data is committed)  |
//! | `Flushed`, not clean  | waits for release (a failed commit)          |
//! | `Ending`              | waits: the release is committing             |
//!
//! Waiting is on a condition variable that every phase change signals,
//! bounded by the caller's patience.
//!
//! Each session also lists the image as it streams by (a tar archive's
//! members and their offsets, [`Lister`]); every commit records the list
//! with the image, so `kmsfs image files` and `image restore` work for
//! every tar image written through the mount.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{EngineError, Writer};
use crate::catalog::{Catalog, FileAttrs};
use crate::pipeline::filelist::Lister;
use crate::pipeline::{Committed, WriteTarget};
use crate::store::Store;

/// How long a close waits for a commit another operation is making.
const END_PATIENCE: Duration = Duration::from_secs(120);

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Data may be arriving; no close since the last write.
    Writing,
    /// A close is committing what was written.
    Flushing,
    /// A close committed (`clean`) or failed to (`!clean`); release may
    /// be on its way.
    Flushed { clean: bool },
    /// The writer is being ended (by release or by settle).
    Ending,
}

/// An image being written.
pub struct Session {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    attrs: Mutex<FileAttrs>,
    size: AtomicU64,
    phase: Mutex<Phase>,
    /// `None` once ended.
    writer: Mutex<Option<Box<Writer>>>,
    /// The tar member list so far; `None` once the stream cannot be one.
    lister: Mutex<Option<Lister>>,
    /// Why the final commit failed, if it did: a close that finds the
    /// session being ended by someone else reports it.
    failure: Mutex<Option<String>>,
    catalog: Arc<Catalog>,
    /// Given back to the shared budget when the session is gone.
    _list_share: ListShare,
    /// The image this session committed last (a checkpoint), if any.
    committed: Mutex<Option<u128>>,
}

/// A snapshot of a session, for lookups and attributes.
#[derive(Debug, Clone)]
pub struct Pending {
    pub ino: u64,
    /// The folder or pool it is being written in.
    pub parent: u64,
    pub name: String,
    pub attrs: FileAttrs,
    pub size: u64,
    /// The image it committed last (a checkpoint: close of a duplicate,
    /// fsync), if any.
    pub committed: Option<u128>,
}

impl Session {
    fn snapshot(&self) -> Pending {
        Pending {
            ino: self.ino,
            parent: self.parent,
            name: self.name.clone(),
            attrs: *self.attrs.lock(),
            size: self.size.load(Ordering::SeqCst),
            committed: *self.committed.lock(),
        }
    }

    /// The key tag of the image, if encrypted.
    pub fn key_tag(&self) -> Option<String> {
        self.writer
            .lock()
            .as_ref()
            .and_then(|w| w.key_tag().map(str::to_string))
    }

    fn closed(&self) -> EngineError {
        EngineError::Closed(self.name.clone())
    }

    /// Feeds the lister the bytes at `offset` (zeros up to it first: a
    /// hole of a sparse copy). Called under the writer lock, in offset order.
    fn list(&self, offset: u64, data: &[u8]) {
        let mut guard = self.lister.lock();
        let Some(l) = guard.as_mut() else { return };
        if l.pos() < offset {
            l.feed_zeros(offset - l.pos());
        }
        if l.pos() != offset {
            *guard = None;
            return;
        }
        l.feed(data);
    }

    /// Records the file list with the image a commit made. A list that
    /// cannot be stored is logged: the image itself is committed.
    fn record_files(&self, committed: &Committed) {
        let Some((img, _)) = committed else { return };
        *self.committed.lock() = Some(img.id);
        let Some(files) = self.lister.lock().as_ref().and_then(Lister::current) else {
            return;
        };
        if let Err(e) = self.catalog.put_files(img.id, &files) {
            tracing::warn!(image = %self.name, "file list not recorded: {e}");
        }
    }
}

/// The sessions of one mounted store, by inode.
pub struct Sessions {
    by_ino: Mutex<HashMap<u64, Arc<Session>>>,
    /// Signalled on every phase change and every session that ends.
    changed: Condvar,
    lists: Arc<ListBudget>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_list_budget(crate::pipeline::filelist::DEFAULT_BUDGET, PER_SESSION_LIST)
    }
}

/// Memory one session's file list may take (a little over 250,000
/// members with 100-byte paths).
const PER_SESSION_LIST: usize = 64 << 20;
/// Less than this left for a new session: its image gets no file list.
const LEAST_LIST: usize = 1 << 20;

/// Memory for the file lists of every session together: each session
/// takes its share at begin and gives it back when it is gone, so many
/// concurrent tar writes cannot take more than the total.
struct ListBudget {
    left: Mutex<usize>,
    per_session: usize,
}

impl ListBudget {
    fn take(&self) -> usize {
        let mut left = self.left.lock();
        let n = (*left).min(self.per_session);
        if n < LEAST_LIST.min(self.per_session) {
            return 0;
        }
        *left -= n;
        n
    }
}

/// A session's share of the list budget, given back when it is dropped.
struct ListShare {
    budget: Arc<ListBudget>,
    bytes: usize,
}

impl Drop for ListShare {
    fn drop(&mut self) {
        *self.budget.left.lock() += self.bytes;
    }
}

impl Sessions {
    /// Sessions whose file lists take at most `total` bytes together and
    /// `per_session` each.
    pub fn with_list_budget(total: usize, per_session: usize) -> Self {
        Self {
            by_ino: Mutex::default(),
            changed: Condvar::new(),
            lists: Arc::new(ListBudget {
                left: Mutex::new(total),
                per_session,
            }),
        }
    }

    /// A lister for a new session, within the shared budget.
    fn lister(&self, name: &str) -> (Option<Lister>, ListShare) {
        let bytes = self.lists.take();
        let share = ListShare {
            budget: self.lists.clone(),
            bytes,
        };
        if bytes == 0 {
            tracing::info!(
                image = name,
                "no file list for this image: the memory for file lists is taken by other images being written"
            );
            return (None, share);
        }
        (Some(Lister::with_budget(bytes)), share)
    }

    /// Starts writing the image `target` names (a new image, or a new
    /// version of the one at `target.ino`). EBUSY-like refusal if it is
    /// already being written.
    pub fn begin(&self, store: &Store, target: WriteTarget) -> Result<Arc<Session>, EngineError> {
        if self.by_ino.lock().contains_key(&target.ino) {
            return Err(EngineError::Busy(target.name));
        }
        let (ino, parent, name, attrs) =
            (target.ino, target.parent, target.name.clone(), target.attrs);
        let writer = Writer::begin(store, target)?;
        let (lister, list_share) = self.lister(&name);
        let session = Arc::new(Session {
            ino,
            parent,
            name,
            attrs: Mutex::new(attrs),
            size: AtomicU64::new(0),
            phase: Mutex::new(Phase::Writing),
            writer: Mutex::new(Some(Box::new(writer))),
            lister: Mutex::new(lister),
            _list_share: list_share,
            committed: Mutex::default(),
            failure: Mutex::new(None),
            catalog: store.catalog.clone(),
        });
        let mut map = self.by_ino.lock();
        if map.contains_key(&ino) {
            // Another begin won the race; this writer is dropped unused.
            return Err(EngineError::Busy(session.name.clone()));
        }
        map.insert(ino, session.clone());
        Ok(session)
    }

    /// The session of `ino`, if it is being written.
    pub fn get(&self, ino: u64) -> Option<Pending> {
        self.by_ino.lock().get(&ino).map(|s| s.snapshot())
    }

    /// The inode being written as `name` in directory `parent`, if any.
    pub fn find(&self, parent: u64, name: &str) -> Option<u64> {
        self.by_ino
            .lock()
            .values()
            .find(|s| s.parent == parent && s.name == name)
            .map(|s| s.ino)
    }

    /// Every image being written in directory `parent`.
    pub fn children(&self, parent: u64) -> Vec<Pending> {
        self.by_ino
            .lock()
            .values()
            .filter(|s| s.parent == parent)
            .map(|s| s.snapshot())
            .collect()
    }

    /// The live session object of `ino` (for a door's second handle).
    pub fn session(&self, ino: u64) -> Option<Arc<Session>> {
        self.by_ino.lock().get(&ino).cloned()
    }

    /// The writer, locked, with the session marked as receiving data,
    /// unless it has ended. The mark is made under the writer lock, so a
    /// close's commit cannot slip between the mark and the data (and leave
    /// the session "flushed, clean" with data it did not commit).
    fn writing<'a>(
        &self,
        s: &'a Session,
    ) -> Result<MutexGuard<'a, Option<Box<Writer>>>, EngineError> {
        let guard = s.writer.lock();
        let mut phase = s.phase.lock();
        if *phase == Phase::Ending || guard.is_none() {
            return Err(s.closed());
        }
        *phase = Phase::Writing;
        Ok(guard)
    }

    /// Appends `data` at `offset` (ESPIPE-like refusal before the end).
    pub fn write(&self, s: &Session, offset: u64, data: &[u8]) -> Result<(), EngineError> {
        let mut w = self.writing(s)?;
        let w = w.as_mut().ok_or_else(|| s.closed())?;
        w.write_at(offset, data)?;
        s.list(offset, data);
        s.size.store(w.size(), Ordering::SeqCst);
        Ok(())
    }

    /// setattr of an image being written: the size may grow (zero fill),
    /// never shrink; `change` edits the attributes it will be committed with.
    pub fn set_attrs(
        &self,
        s: &Session,
        size: Option<u64>,
        change: impl FnOnce(&mut FileAttrs),
    ) -> Result<(), EngineError> {
        let mut guard = self.writing(s)?;
        let w = guard.as_mut().ok_or_else(|| s.closed())?;
        if let Some(to) = size {
            if to < w.size() {
                return Err(EngineError::Shrink {
                    name: s.name.clone(),
                    from: w.size(),
                    to,
                });
            }
            w.extend_to(to)?;
            s.list(to, &[]);
            s.size.store(w.size(), Ordering::SeqCst);
        }
        let attrs = {
            let mut a = s.attrs.lock();
            change(&mut a);
            *a
        };
        w.set_attrs(attrs)
    }

    /// fsync: what was written so far is committed, durable on return, so
    /// a crash before close keeps it (POSIX). The session goes on writing:
    /// unlike close, fsync does not let settle end it.
    /// The commit is returned like close's: an image it replaced (O_TRUNC)
    /// leaves the catalog here, and its volumes go back to the library.
    pub fn sync(&self, s: &Session) -> Result<Committed, EngineError> {
        let mut guard = s.writer.lock();
        let Some(w) = guard.as_mut() else {
            return Ok(None);
        };
        let c = w.checkpoint()?;
        s.record_files(&c);
        Ok(c)
    }

    /// close(2) of a descriptor: commits what was written so far.
    pub fn flush(&self, s: &Session) -> Result<Committed, EngineError> {
        {
            let mut phase = s.phase.lock();
            if *phase == Phase::Ending {
                drop(phase);
                return self.await_end(s);
            }
            *phase = Phase::Flushing;
        }
        let mut guard = s.writer.lock();
        let Some(w) = guard.as_mut() else {
            drop(guard);
            return self.await_end(s);
        };
        let result = w.checkpoint();
        if let Ok(c) = &result {
            s.record_files(c);
        }
        let clean = result.is_ok() && !w.is_dirty();
        {
            let mut phase = s.phase.lock();
            // A write that came in meanwhile keeps the session writing.
            if *phase == Phase::Flushing {
                *phase = Phase::Flushed { clean };
            }
        }
        drop(guard);
        self.set_phase_signal();
        result
    }

    fn set_phase_signal(&self) {
        let _map = self.by_ino.lock();
        self.changed.notify_all();
    }

    /// The last close of the handle: commits what is new, returns the drive,
    /// and the session ends. Nothing to do if settle ended it already.
    pub fn release(&self, s: &Arc<Session>) -> Result<Committed, EngineError> {
        {
            let mut phase = s.phase.lock();
            if *phase == Phase::Ending {
                drop(phase);
                return self.await_end(s);
            }
            *phase = Phase::Ending;
        }
        self.end(s)
    }

    /// A close that finds the session being ended by another operation
    /// (settle) waits for that end and reports its failure: close(2) never
    /// returns success for data whose commit failed.
    fn await_end(&self, s: &Session) -> Result<Committed, EngineError> {
        let deadline = Instant::now() + END_PATIENCE;
        let mut map = self.by_ino.lock();
        while map.get(&s.ino).is_some_and(|x| std::ptr::eq(x.as_ref(), s)) {
            if self.changed.wait_until(&mut map, deadline).timed_out() {
                break;
            }
        }
        drop(map);
        match s.failure.lock().clone() {
            Some(why) => Err(EngineError::CommitFailed {
                name: s.name.clone(),
                why,
            }),
            None => Ok(None),
        }
    }

    /// Ends a session whose phase is now `Ending` (set by the caller).
    fn end(&self, s: &Arc<Session>) -> Result<Committed, EngineError> {
        let writer = s.writer.lock().take();
        let result = writer.map(|w| w.finish()).unwrap_or(Ok(None));
        match &result {
            Ok(c) => s.record_files(c),
            Err(e) => *s.failure.lock() = Some(e.to_string()),
        }
        let mut map = self.by_ino.lock();
        if map.get(&s.ino).is_some_and(|x| Arc::ptr_eq(x, s)) {
            map.remove(&s.ino);
        }
        self.changed.notify_all();
        result
    }

    /// Before another operation touches `ino` (see the module table):
    /// returns the commit result if this call ended the session, `None` if
    /// it did not (nothing being written, a descriptor still writing, or
    /// `patience` ran out).
    pub fn settle(&self, ino: u64, patience: Duration) -> Option<Result<Committed, EngineError>> {
        let deadline = Instant::now() + patience;
        let mut map = self.by_ino.lock();
        loop {
            let s = map.get(&ino)?.clone();
            let mut phase = s.phase.lock();
            match *phase {
                Phase::Writing => return None,
                Phase::Flushed { clean: true } => {
                    *phase = Phase::Ending;
                    drop(phase);
                    drop(map);
                    return Some(self.end(&s));
                }
                Phase::Flushing | Phase::Flushed { clean: false } | Phase::Ending => {}
            }
            drop(phase);
            if self.changed.wait_until(&mut map, deadline).timed_out() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::write_target as target;

    fn committed_size(c: Committed) -> u64 {
        c.expect("a commit").0.size
    }

    const NO_WAIT: Duration = Duration::ZERO;

    #[test]
    fn flush_commits_and_release_ends() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"hello").unwrap();
        assert_eq!(sessions.get(s.ino).unwrap().size, 5);
        assert_eq!(committed_size(sessions.flush(&s).unwrap()), 5);
        assert!(sessions.release(&s).unwrap().is_none(), "nothing new");
        assert!(sessions.get(s.ino).is_none());
        assert!(matches!(
            sessions.write(&s, 5, b"x"),
            Err(EngineError::Closed(_))
        ));
    }

    #[test]
    fn a_second_writer_of_the_same_image_is_refused() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let t = target(&store, "P", "a");
        let again = WriteTarget {
            name: "a".into(),
            ..t.clone()
        };
        let s = sessions.begin(&store, t).unwrap();
        assert!(matches!(
            sessions.begin(&store, again),
            Err(EngineError::Busy(n)) if n == "a"
        ));
        sessions.release(&s).unwrap();
    }

    #[test]
    fn settle_leaves_a_session_that_is_still_writing() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"data").unwrap();
        assert!(sessions.settle(s.ino, Duration::from_secs(60)).is_none());
        assert!(sessions.get(s.ino).is_some(), "still being written");
        sessions.release(&s).unwrap();
    }

    #[test]
    fn settle_ends_a_flushed_clean_session_before_its_release_arrives() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"data").unwrap();
        sessions.flush(&s).unwrap();
        let ended = sessions.settle(s.ino, NO_WAIT).expect("ended by settle");
        assert!(ended.unwrap().is_none(), "already committed by flush");
        assert!(sessions.get(s.ino).is_none());
        assert!(sessions.release(&s).unwrap().is_none(), "late release");
    }

    #[test]
    fn a_write_after_a_flush_keeps_the_session_open() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"one").unwrap();
        sessions.flush(&s).unwrap();
        sessions.write(&s, 3, b"two").unwrap();
        assert!(sessions.settle(s.ino, NO_WAIT).is_none());
        assert_eq!(committed_size(sessions.release(&s).unwrap()), 6);
    }

    #[test]
    fn settle_waits_for_a_release_in_flight_without_polling() {
        let (_t, store) = crate::testing::store();
        let sessions = Arc::new(Sessions::default());
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"data").unwrap();
        // A release has begun (phase Ending) but not finished: settle must
        // wait for it, and wake as soon as it ends.
        *s.phase.lock() = Phase::Ending;
        let writer = s.writer.lock().take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let sessions = sessions.clone();
            let ino = s.ino;
            std::thread::spawn(move || {
                tx.send(()).unwrap();
                let r = sessions.settle(ino, Duration::from_secs(600));
                (r.is_none(), sessions.get(ino).is_none())
            })
        };
        rx.recv().unwrap();
        assert_eq!(committed_size(writer.finish().unwrap()), 4);
        sessions.end(&s).unwrap();
        assert_eq!(waiter.join().unwrap(), (true, true));
    }

    /// A close that arrives while settle is ending the session waits for
    /// that commit and reports its failure, never a success.
    #[test]
    fn a_close_after_a_failed_end_reports_the_failure() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"data").unwrap();
        *s.phase.lock() = Phase::Ending;
        let w = s.writer.lock().take().unwrap();
        drop(w);
        *s.failure.lock() = Some("No space left on device".into());
        sessions.by_ino.lock().remove(&s.ino);
        let e = sessions.release(&s).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert!(sessions.flush(&s).is_err());
    }

    #[test]
    fn settle_gives_up_after_its_patience_on_a_failed_commit() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        *s.phase.lock() = Phase::Flushed { clean: false };
        assert!(sessions.settle(s.ino, NO_WAIT).is_none());
        assert!(sessions.get(s.ino).is_some(), "left to its release");
        sessions.release(&s).unwrap();
    }

    /// `tar -c` of two files, the second 70,000 bytes into the archive.
    fn tar_bytes() -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("first"), vec![1u8; 70_000]).unwrap();
        std::fs::write(d.path().join("second"), b"second member").unwrap();
        let o = std::process::Command::new("tar")
            .args(["--format=pax", "-cf", "-", "-C"])
            .arg(d.path())
            .args(["first", "second"])
            .output()
            .unwrap();
        assert!(o.status.success());
        o.stdout
    }

    #[test]
    fn a_tar_image_gets_its_file_list_at_commit_and_loses_it_when_removed() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let t = target(&store, "P", "a.tar");
        let (parent, name) = (t.parent, t.name.clone());
        let s = sessions.begin(&store, t).unwrap();
        let tar = tar_bytes();
        // In pieces, as FUSE delivers them.
        for (i, chunk) in tar.chunks(4096 + 17).enumerate() {
            sessions.write(&s, (i * (4096 + 17)) as u64, chunk).unwrap();
        }
        let (img, _) = sessions.flush(&s).unwrap().unwrap();
        sessions.release(&s).unwrap();
        let files = store.catalog.files(img.id).unwrap().expect("a file list");
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        let second = &files[1];
        let at = second.offset as usize;
        assert_eq!(&tar[at..at + 13], b"second member");
        store.catalog.unlink(parent, &name).unwrap();
        assert!(
            store.catalog.files(img.id).unwrap().is_none(),
            "list removed with its image"
        );
    }

    /// File lists of concurrent writes share one memory budget: a session
    /// that finds it taken gets no list, and the budget comes back when a
    /// session is gone.
    #[test]
    fn concurrent_tar_writes_share_one_list_budget() {
        let (_t, store) = crate::testing::store();
        // The test store has two drives: two sessions at a time.
        let sessions = Sessions::with_list_budget(3 << 20, 2 << 20);
        let a = sessions
            .begin(&store, target(&store, "P", "a.tar"))
            .unwrap();
        let b = sessions
            .begin(&store, target(&store, "P", "b.tar"))
            .unwrap();
        assert!(a.lister.lock().is_some(), "2 MiB for the first");
        assert!(b.lister.lock().is_some(), "the last 1 MiB for the second");
        sessions.release(&a).unwrap();
        drop(a);
        let tar = tar_bytes();
        let small = Sessions::with_list_budget(2 << 20, 2 << 20);
        let c = small.begin(&store, target(&store, "P", "c.tar")).unwrap();
        sessions.release(&b).unwrap();
        let d = small.begin(&store, target(&store, "P", "d.tar")).unwrap();
        assert!(c.lister.lock().is_some());
        assert!(d.lister.lock().is_none(), "nothing left for the second");
        small.write(&d, 0, &tar).unwrap();
        let (img, _) = small.release(&d).unwrap().unwrap();
        assert!(store.catalog.files(img.id).unwrap().is_none());
        small.release(&c).unwrap();
        drop(c);
        let e = small.begin(&store, target(&store, "P", "e.tar")).unwrap();
        assert!(e.lister.lock().is_some(), "the first one's share came back");
        small.write(&e, 0, &tar).unwrap();
        let (img, _) = small.release(&e).unwrap().unwrap();
        assert!(store.catalog.files(img.id).unwrap().is_some());
    }

    #[test]
    fn an_image_that_is_not_tar_gets_no_file_list() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "b")).unwrap();
        sessions.write(&s, 0, &[7u8; 10_000]).unwrap();
        let (img, _) = sessions.release(&s).unwrap().unwrap();
        assert!(store.catalog.files(img.id).unwrap().is_none());
    }

    /// A huge hole after the lister stopped (not tar) costs nothing: it
    /// must not walk the hole in 64 KiB steps under the writer lock.
    #[test]
    fn a_huge_hole_after_the_listing_stopped_is_not_walked() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "c")).unwrap();
        sessions.write(&s, 0, &[7u8; 10_000]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        std::thread::spawn(move || {
            s2.list(1 << 50, b"x");
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "a 1 PiB hole took more than 10 s"
        );
        sessions.release(&s).unwrap();
    }

    #[test]
    fn setattr_grows_but_never_shrinks_an_image_being_written() {
        let (_t, store) = crate::testing::store();
        let sessions = Sessions::default();
        let s = sessions.begin(&store, target(&store, "P", "a")).unwrap();
        sessions.write(&s, 0, b"12345").unwrap();
        assert!(matches!(
            sessions.set_attrs(&s, Some(2), |_| {}),
            Err(EngineError::Shrink { from: 5, to: 2, .. })
        ));
        sessions
            .set_attrs(&s, Some(10), |a| a.mode = 0o100600)
            .unwrap();
        let p = sessions.get(s.ino).unwrap();
        assert_eq!((p.size, p.attrs.mode), (10, 0o100600));
        assert_eq!(committed_size(sessions.release(&s).unwrap()), 10);
    }
}
