//! The file list of an image (the vendor's `.f` file), built while phase
//! two streams the image: the members of a tar archive, read by the `tar`
//! crate on a thread fed through a bounded channel, or else the image itself.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::catalog::FileEntry;

/// Feeds plaintext to the tar reader.
pub struct Lister {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<Option<Vec<FileEntry>>>>,
}

struct ChanReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn list(reader: &mut ChanReader) -> Option<Vec<FileEntry>> {
    let mut archive = tar::Archive::new(&mut *reader);
    let mut out = Vec::new();
    for entry in archive.entries().ok()? {
        let e = entry.ok()?;
        let h = e.header();
        out.push(FileEntry {
            path: e.path().ok()?.to_string_lossy().into_owned(),
            size: h.size().ok()?,
            mode: h.mode().ok()?,
            mtime: h.mtime().ok()?,
            kind: h.entry_type().as_byte(),
            link: e
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned()),
            offset: e.raw_file_position(),
        });
    }
    (!out.is_empty()).then_some(out)
}

impl Lister {
    pub fn new() -> Self {
        let (tx, rx) = sync_channel(8);
        let thread = std::thread::spawn(move || {
            let mut r = ChanReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            };
            let result = list(&mut r);
            // Keep consuming so the sender never blocks on a reader that stopped.
            while r.rx.recv().is_ok() {}
            result
        });
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn feed(&self, data: &[u8]) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(data.to_vec());
        }
    }

    /// The tar members, or `None` if the image is not a tar archive.
    pub fn finish(mut self) -> Option<Vec<FileEntry>> {
        self.tx = None;
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}
