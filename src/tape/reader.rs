//! Reading an image at random offsets: each block read takes a drive, loads
//! the volume, registers the key by the tag recorded for the image (the
//! KAD), authenticates and decrypts the block, and returns the drive clean.
//! The last block read is kept per reader so sequential reads decrypt once.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::format;
use super::{Library, TapeError};
use crate::catalog::{Fragment, ImageRec};
use crate::crypto::{self, BlockCipher};

/// A block being read or read: (fragment, block, plaintext once loaded).
/// Requests for the same block wait on its slot instead of decrypting again.
type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;
type CachedBlock = (usize, u64, Slot);

const HDR: usize = format::BLOCK_HEADER_LEN as usize;

/// Blocks kept per open image: covers the kernel's parallel readahead.
const CACHED_BLOCKS: usize = 8;

/// An open image.
pub struct ImageReader {
    lib: Arc<Library>,
    img: ImageRec,
    cache: Mutex<std::collections::VecDeque<CachedBlock>>,
}

impl ImageReader {
    /// Opens an image; an encrypted one needs its key usable now (ENOKEY otherwise).
    pub fn open(lib: &Arc<Library>, img: ImageRec) -> Result<Self, TapeError> {
        check_layout(&img)?;
        if let Some(tag) = &img.key_tag {
            lib.kms.key_by_tag(tag).map_err(|source| TapeError::Kms {
                subject: format!("tag {tag}"),
                source,
            })?;
        }
        Ok(Self {
            lib: lib.clone(),
            img,
            cache: Mutex::default(),
        })
    }

    /// Up to `size` bytes from `offset`.
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>, TapeError> {
        let end = (offset + size as u64).min(self.img.size);
        self.prefetch(offset, end);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (fi, frag) = self.fragment_at(pos)?;
            let within = pos - frag.image_offset;
            let bi = within / u64::from(self.img.block_size);
            let block = self.block(fi, bi)?;
            let start = (within % u64::from(self.img.block_size)) as usize;
            let data = &block[HDR..];
            let n = (data.len() - start).min((end - pos) as usize);
            out.extend_from_slice(&data[start..start + n]);
            pos += n as u64;
        }
        Ok(out)
    }

    /// Loads the second half of the blocks of a large request on another
    /// thread while this one loads the first half (two cores decrypt).
    fn prefetch(&self, offset: u64, end: u64) {
        let bs = u64::from(self.img.block_size);
        let mut blocks = Vec::new();
        let mut pos = offset;
        while pos < end {
            let Ok((fi, f)) = self.fragment_at(pos) else {
                return;
            };
            let bi = (pos - f.image_offset) / bs;
            blocks.push((fi, bi));
            pos = (f.image_offset + (bi + 1) * bs).min(f.image_offset + f.len);
        }
        if blocks.len() < 2 {
            return;
        }
        let (first, second) = blocks.split_at(blocks.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| second.iter().for_each(|&(fi, bi)| drop(self.block(fi, bi))));
            first.iter().for_each(|&(fi, bi)| drop(self.block(fi, bi)));
        });
    }

    fn fragment_at(&self, pos: u64) -> Result<(usize, &Fragment), TapeError> {
        self.img
            .fragments
            .iter()
            .enumerate()
            .find(|(_, f)| pos >= f.image_offset && pos < f.image_offset + f.len)
            .ok_or_else(|| TapeError::Format {
                what: "catalog",
                why: format!("no fragment holds offset {pos} of image {}", self.name()),
            })
    }

    fn name(&self) -> String {
        format!("{}/{}", self.img.pool, self.img.path)
    }

    fn block(&self, fi: usize, bi: u64) -> Result<Arc<Vec<u8>>, TapeError> {
        let slot = {
            let mut cache = self.cache.lock();
            match cache.iter().find(|(f, b, _)| *f == fi && *b == bi) {
                Some((_, _, s)) => s.clone(),
                None => {
                    let s: Slot = Arc::default();
                    cache.push_back((fi, bi, s.clone()));
                    if cache.len() > CACHED_BLOCKS {
                        cache.pop_front();
                    }
                    s
                }
            }
        };
        let mut data = slot.lock();
        if let Some(d) = data.as_ref() {
            return Ok(d.clone());
        }
        let d = Arc::new(self.load_block(fi, bi)?);
        *data = Some(d.clone());
        Ok(d)
    }

    /// Reads and authenticates block (returned as `[block header | plaintext]`) `bi` of fragment `fi` through a drive.
    fn load_block(&self, fi: usize, bi: u64) -> Result<Vec<u8>, TapeError> {
        let frag = &self.img.fragments[fi];
        let bs = u64::from(self.img.block_size);
        let len = (frag.len - bi * bs).min(bs) as usize;
        let flags = if bi + 1 == frag.blocks {
            frag.last_flags
        } else {
            0
        };
        let drive = self.lib.drives.acquire("reading")?;
        drive.load(&frag.volume, &self.img.pool);
        if let Some(tag) = &self.img.key_tag {
            let key = self
                .lib
                .kms
                .key_by_tag(tag)
                .map_err(|source| TapeError::Kms {
                    subject: format!("tag {tag}"),
                    source,
                })?;
            drive.register_key(tag, key);
        }
        let file = self.lib.reader(&frag.volume)?;
        let mut raw =
            vec![0u8; format::BLOCK_HEADER_LEN as usize + len + format::BLOCK_TRAILER_LEN as usize];
        let at = frag.data_offset + bi * format::block_stride(self.img.block_size);
        file.read_exact_at(&mut raw, at)
            .map_err(|e| self.integrity(frag, bi, format!("read at offset {at}: {e}")))?;
        let (hdr, rest) = raw.split_at_mut(format::BLOCK_HEADER_LEN as usize);
        if format::block_header(len as u32, flags) != *hdr {
            let why = match format::parse_block_header(hdr) {
                Ok((l, f)) => {
                    format!("block header says {l} bytes, flags {f}; expected {len}, flags {flags}")
                }
                Err(e) => e.to_string(),
            };
            return Err(self.integrity(frag, bi, why));
        }
        let (data, trailer) = rest.split_at_mut(len);
        let place = format::BlockPlace {
            version: frag.format,
            barcode: &frag.volume,
            image_id: self.img.id,
            fragment: frag.number,
            index: bi,
            image_offset: frag.image_offset + bi * bs,
        };
        let (aad, n) = format::block_aad(&place, len as u32, flags);
        let aad = &aad[..n];
        let trailer: [u8; 16] = (&*trailer).try_into().expect("16 bytes");
        let ok = drive.with_key(|k| match k {
            Some(k) => BlockCipher::new(&crypto::derive_subkey(
                k,
                &frag.salt,
                crypto::labels::TAPE_BLOCK_KEY,
            ))
            .open_block(bi, aad, data, &trailer)
            .is_ok(),
            None => format::clear_trailer(aad, data) == trailer,
        });
        drop(drive);
        if !ok {
            return Err(self.integrity(frag, bi, "authentication failed".into()));
        }
        // The plaintext stays where it was decrypted, after the block header.
        raw.truncate(HDR + len);
        Ok(raw)
    }

    fn integrity(&self, frag: &Fragment, block: u64, why: String) -> TapeError {
        let e = TapeError::Integrity {
            volume: frag.volume.clone(),
            image: self.name(),
            fragment: frag.number,
            block,
            why,
        };
        tracing::error!("{e}");
        e
    }
}

/// The fragments of an image cover it from 0 to its size, one after the
/// other, each with the blocks its length needs: what the reader's
/// arithmetic relies on, checked once at open (EIO, never a panic).
fn check_layout(img: &ImageRec) -> Result<(), TapeError> {
    let bad = |why: String| {
        let e = TapeError::Format {
            what: "catalog",
            why: format!("image {}/{}: {why}", img.pool, img.path),
        };
        tracing::error!("{e}");
        e
    };
    if img.block_size == 0 && img.size > 0 {
        return Err(bad("block size 0".into()));
    }
    let mut at = 0u64;
    for f in &img.fragments {
        if f.image_offset != at {
            return Err(bad(format!(
                "fragment {} starts at {}, expected {at}",
                f.number, f.image_offset
            )));
        }
        // An empty image is one fragment with one empty block.
        if f.blocks != f.len.div_ceil(u64::from(img.block_size.max(1))).max(1) {
            return Err(bad(format!(
                "fragment {}: {} bytes in {} blocks",
                f.number, f.len, f.blocks
            )));
        }
        at += f.len;
    }
    if at != img.size {
        return Err(bad(format!(
            "fragments hold {at} bytes, size is {}",
            img.size
        )));
    }
    Ok(())
}
