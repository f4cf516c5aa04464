//! The two kinds of image stream behind a file handle: a tape image in a
//! volume pool, or an LSU image in `msdp/`. The FUSE code sees one type
//! and errno values; which path a directory uses follows its pool.

use super::{FsError, Res};
use crate::catalog::{FileAttrs, ImageRec, lsu_of_pool};
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
            Writer::Tape($x) => $e.map_err(FsError::from),
            Writer::Lsu($x) => $e.map_err(FsError::from),
        }
    };
}

impl Writer {
    /// Starts a writer for the pool of `target`.
    pub fn begin(store: &Store, target: WriteTarget) -> Res<Self> {
        let path = format!("{}/{}", target.pool, target.path);
        if lsu_of_pool(&target.pool).is_some() {
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

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Res<()> {
        each!(self, w => w.write_at(offset, data))
    }

    pub fn extend_to(&mut self, len: u64) -> Res<()> {
        each!(self, w => w.extend_to(len))
    }

    pub fn set_attrs(&mut self, a: FileAttrs) -> Res<()> {
        each!(self, w => w.set_attrs(a))
    }

    pub fn sync(&self) -> Res<()> {
        each!(self, w => w.sync())
    }

    pub fn checkpoint(&mut self) -> Res<Committed> {
        each!(self, w => w.checkpoint())
    }

    pub fn finish(self) -> Res<Committed> {
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
    pub fn open(store: &Store, img: ImageRec) -> Res<Self> {
        if lsu_of_pool(&img.pool).is_some() {
            Ok(Reader::Lsu(Box::new(LsuReader::open(&store.msdp, img)?)))
        } else {
            Ok(Reader::Tape(Box::new(ImageReader::open(
                &store.library,
                img,
            )?)))
        }
    }

    pub fn read_at(&self, offset: u64, size: usize) -> Res<Vec<u8>> {
        match self {
            Reader::Tape(r) => Ok(r.read_at(offset, size)?),
            Reader::Lsu(r) => Ok(r.read_at(offset, size)?),
        }
    }
}
