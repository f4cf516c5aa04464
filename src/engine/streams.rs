//! The two kinds of image stream: a tape image in a volume pool, or an LSU
//! image in `msdp/`. The doors see one type; which backend an image uses
//! follows the [`PoolKind`] of its pool.

use super::{EngineError, PoolKind};
use crate::catalog::{FileAttrs, ImageRec};
use crate::msdp::{LsuReader, LsuWriter};
use crate::pipeline::WriteTarget;
use crate::pipeline::{Committed, PipelinedWriter};
use crate::store::Store;
use crate::tape::{ImageReader, ImageWriter};

/// An image being written.
pub enum Writer {
    Tape(PipelinedWriter<ImageWriter>),
    Lsu(PipelinedWriter<LsuWriter>),
}

macro_rules! each {
    ($w:expr, $x:ident => $e:expr) => {
        match $w {
            Writer::Tape($x) => $e.map_err(EngineError::from),
            Writer::Lsu($x) => $e.map_err(EngineError::from),
        }
    };
}

impl Writer {
    /// Starts a writer for the pool of `target`.
    pub fn begin(store: &Store, target: WriteTarget) -> Result<Self, EngineError> {
        let path = format!("{}/{}", target.pool, target.path);
        if !PoolKind::of(&target.pool).is_tape() {
            let w = LsuWriter::begin(&store.msdp, target)?;
            Ok(Writer::Lsu(PipelinedWriter::start(w, path)?))
        } else {
            let w = ImageWriter::begin(&store.library, target)?;
            Ok(Writer::Tape(PipelinedWriter::start(w, path)?))
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Writer::Tape(w) => w.size(),
            Writer::Lsu(w) => w.size(),
        }
    }

    pub fn is_dirty(&self) -> bool {
        match self {
            Writer::Tape(w) => w.is_dirty(),
            Writer::Lsu(w) => w.is_dirty(),
        }
    }

    pub fn key_tag(&self) -> Option<&str> {
        match self {
            Writer::Tape(w) => w.key_tag(),
            Writer::Lsu(w) => w.key_tag(),
        }
    }

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), EngineError> {
        each!(self, w => w.write_at(offset, data))
    }

    pub fn extend_to(&mut self, len: u64) -> Result<(), EngineError> {
        each!(self, w => w.extend_to(len))
    }

    pub fn set_attrs(&mut self, a: FileAttrs) -> Result<(), EngineError> {
        each!(self, w => w.set_attrs(a))
    }

    pub fn checkpoint(&mut self) -> Result<Committed, EngineError> {
        each!(self, w => w.checkpoint())
    }

    pub fn finish(self) -> Result<Committed, EngineError> {
        each!(self, w => w.finish())
    }
}

/// An image open for reading.
pub enum Reader {
    Tape(Box<ImageReader>),
    Lsu(Box<LsuReader>),
}

impl Reader {
    /// Opens an image; its keys must be usable now (ENOKEY otherwise).
    pub fn open(store: &Store, img: ImageRec) -> Result<Self, EngineError> {
        if !PoolKind::of(&img.pool).is_tape() {
            Ok(Reader::Lsu(Box::new(LsuReader::open(&store.msdp, img)?)))
        } else {
            Ok(Reader::Tape(Box::new(ImageReader::open(
                &store.library,
                img,
            )?)))
        }
    }

    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>, EngineError> {
        match self {
            Reader::Tape(r) => Ok(r.read_at(offset, size)?),
            Reader::Lsu(r) => Ok(r.read_at(offset, size)?),
        }
    }

    /// Fills `out` from `offset` (the FUSE reply buffer, reused): returns
    /// the bytes the image had there.
    pub fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<usize, EngineError> {
        match self {
            Reader::Tape(r) => Ok(r.read_into(offset, out)?),
            Reader::Lsu(r) => Ok(r.read_into(offset, out)?),
        }
    }
}
