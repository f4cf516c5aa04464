//! Appending segment records to a container file, and reading one back.
//! A writer owns its container until the writer ends; records are gathered
//! in a buffer and written in large pieces; a commit fsyncs before the
//! catalog records the container's new size.

use crate::util::failpoint;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::MsdpError;
use super::format::{ContainerHeader, SEGMENT_HEADER_LEN, SegmentHeader};
use super::state::{ContainerPin, FileError, LsuState};
use crate::catalog::ContainerRec;

/// A container grows to about this size, then the next one starts.
pub const CONTAINER_TARGET: u64 = 64 << 20;
const WRITE_BUFFER: usize = 8 << 20;

/// A container being appended to.
pub struct ContainerWriter {
    state: Arc<LsuState>,
    /// Keeps the id in flight; handed on by [`ContainerWriter::into_pin`].
    pin: ContainerPin,
    pub id: u64,
    file: File,
    /// Bytes in the file.
    written: u64,
    buf: Vec<u8>,
    pub created_ns: i64,
}

impl ContainerWriter {
    /// Creates a new container file (its id stays in flight until drop).
    pub fn create(state: &Arc<LsuState>) -> Result<Self, MsdpError> {
        let pin = ContainerPin::new(state)?;
        let id = pin.id;
        let path = state.path(id);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| {
                // Its name is durable before any commit can refer to it.
                crate::util::atomic::sync_dir(&state.dir).map(|()| f)
            })
            .map_err(|e| MsdpError::io(format!("container {}", path.display()), e))?;
        let created_ns = crate::util::clock::now_ns();
        let mut buf = Vec::with_capacity(WRITE_BUFFER + (1 << 20));
        buf.extend_from_slice(
            &ContainerHeader {
                lsu_id: state.id,
                id,
                created_ns,
            }
            .encode(),
        );
        Ok(Self {
            state: state.clone(),
            pin,
            id,
            file,
            written: 0,
            buf,
            created_ns,
        })
    }

    /// Bytes in the container, buffered ones included.
    pub fn size(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Appends a record built by `fill` into the buffer (it gets the
    /// buffer and must append exactly one record). Returns its offset.
    pub fn append(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), MsdpError>,
    ) -> Result<u64, MsdpError> {
        let at = self.size();
        fill(&mut self.buf)?;
        self.flush_if_full()?;
        Ok(at)
    }

    /// Reserves `n` bytes at the end for records the caller fills in
    /// (several at once, on several cores). Returns their offset.
    pub fn reserve(&mut self, n: usize) -> (u64, &mut [u8]) {
        let at = self.size();
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        (at, &mut self.buf[start..])
    }

    /// Writes the buffer out once it is large.
    pub fn flush_if_full(&mut self) -> Result<(), MsdpError> {
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MsdpError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        failpoint::hit(failpoint::CONTAINER_WRITE)
            .and_then(|()| self.file.write_all_at(&self.buf, self.written))
            .map_err(|e| self.err(e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and fsyncs; returns the record to commit.
    pub fn sync(&mut self) -> Result<ContainerRec, MsdpError> {
        self.flush()?;
        failpoint::hit(failpoint::CONTAINER_FSYNC)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.err(e))?;
        Ok(ContainerRec {
            size: self.written,
            created_ns: self.created_ns,
        })
    }

    fn err(&self, e: std::io::Error) -> MsdpError {
        MsdpError::io(
            format!("LSU {} container {:016x}", self.state.name, self.id),
            e,
        )
    }
}

impl ContainerWriter {
    /// Ends appending; the returned pin keeps the container in flight until
    /// whoever holds it (a writer, until its commit) drops it.
    pub fn into_pin(self) -> ContainerPin {
        self.pin
    }
}

/// Reads the record at `offset` of `len` bytes and parses its header.
pub fn read_record(
    state: &LsuState,
    container: u64,
    offset: u64,
    len: u32,
) -> Result<(SegmentHeader, Vec<u8>), RecordError> {
    let mut buf = Vec::new();
    let h = read_record_with(state, container, offset, len, &mut buf)?;
    Ok((h, buf))
}

/// [`read_record`] into `buf`, resized to the record (a buffer reused
/// from record to record is cleared only where it grows).
pub fn read_record_with(
    state: &LsuState,
    container: u64,
    offset: u64,
    len: u32,
    buf: &mut Vec<u8>,
) -> Result<SegmentHeader, RecordError> {
    if u64::from(len) > CONTAINER_TARGET {
        return Err(RecordError::Damaged(format!(
            "record of {len} bytes is longer than any container holds"
        )));
    }
    let f = state.file(container).map_err(|e| match e {
        FileError::Missing(e) => RecordError::Missing(e),
        FileError::Io(e) => RecordError::Io(e),
        FileError::Fetch(e) => RecordError::Fetch(e),
    })?;
    buf.resize(len as usize, 0);
    f.read_exact_at(buf, offset).map_err(RecordError::Io)?;
    let h = SegmentHeader::decode(&buf[..SEGMENT_HEADER_LEN.min(buf.len())])
        .map_err(|e| RecordError::Damaged(format!("segment header: {e}")))?;
    if h.record_len() != buf.len() {
        return Err(RecordError::Damaged(format!(
            "record is {} bytes, index says {len}",
            h.record_len()
        )));
    }
    Ok(h)
}

/// Why a record could not be read.
#[derive(Debug)]
pub enum RecordError {
    /// The container file is gone (moved by a reclaim: look up again).
    Missing(std::io::Error),
    Io(std::io::Error),
    Damaged(String),
    /// A cloud LSU's container could not be fetched (the error names the
    /// object store, or the cache file).
    Fetch(MsdpError),
}

impl RecordError {
    /// What a reader reports: the object store that did not answer, or
    /// damage of segment `offset` of `container` (`context` says who read).
    pub fn report(self, lsu: &str, container: u64, offset: u64, context: &str) -> MsdpError {
        let why = match self {
            Self::Fetch(e) => return e,
            Self::Missing(e) | Self::Io(e) => e.to_string(),
            Self::Damaged(w) => w,
        };
        MsdpError::Integrity {
            lsu: lsu.to_string(),
            container,
            offset,
            why: format!("{context}{why}"),
        }
    }
}
