//! Reading an image at random offsets: each request takes a drive (on the
//! caller's thread), loads the volumes it touches, registers the key by
//! the tag recorded for the image (the KAD), authenticates and decrypts
//! the blocks, and returns the drive clean.
//!
//! Blocks a request covers whole are read with one `preadv` straight into
//! the caller's buffer (the FUSE reply) and decrypted there, on every core
//! at once; a block a request covers in part is kept per reader, so the
//! next request does not decrypt it again.

use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::format;
use super::{DriveGuard, Library, TapeError};
use crate::catalog::{Fragment, ImageRec};
use crate::crypto::{self, BlockCipher};

/// A block being read or read: (fragment, block, plaintext once loaded).
/// Requests for the same block wait on its slot instead of decrypting again.
type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;
type CachedBlock = (usize, u64, Slot);

/// The block cipher of each fragment a request touches (`None`: clear).
type Ciphers = Vec<(usize, Option<Arc<BlockCipher>>)>;

/// Blocks kept per open image: the parts of blocks the kernel's requests
/// share.
const CACHED_BLOCKS: usize = 8;

/// The part of a request one block serves: fragment, block, offset in the
/// block's plaintext, and its part of the caller's buffer.
struct Piece<'a> {
    fi: usize,
    bi: u64,
    from: usize,
    out: &'a mut [u8],
}

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
        let mut out = vec![0u8; size];
        let n = self.read_into(offset, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Fills `out` from `offset`; returns how many bytes the image had
    /// (fewer than asked at its end).
    pub fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<usize, TapeError> {
        let end = offset.saturating_add(out.len() as u64).min(self.img.size);
        if offset >= end {
            return Ok(0);
        }
        let n = (end - offset) as usize;
        let pieces = self.pieces(offset, &mut out[..n])?;
        let (drive, ciphers) = self.ciphers(&pieces)?;
        use rayon::prelude::*;
        decrypting_pool().install(|| {
            pieces
                .into_par_iter()
                .try_for_each(|p| self.serve(p, &ciphers))
        })?;
        drop(drive);
        Ok(n)
    }

    /// Takes a drive for one request (waiting here, on the caller's
    /// thread, never on the pool that decrypts), loads each volume the
    /// request touches and registers the image's key, and returns the
    /// block cipher of each fragment touched (`None` in a clear pool), with
    /// the drive, held until the request is served. The key is fetched
    /// before the drive is taken, so a slow KMS never holds a drive.
    fn ciphers(&self, pieces: &[Piece<'_>]) -> Result<(DriveGuard, Ciphers), TapeError> {
        let key = match &self.img.key_tag {
            Some(tag) => Some((
                tag,
                self.lib
                    .kms
                    .key_by_tag(tag)
                    .map_err(|source| TapeError::Kms {
                        subject: format!("tag {tag}"),
                        source,
                    })?,
            )),
            None => None,
        };
        // Each fragment's subkey from the key in hand: no lock held.
        let mut ciphers: Ciphers = Vec::new();
        for p in pieces {
            if ciphers.iter().any(|(fi, _)| *fi == p.fi) {
                continue;
            }
            let frag = &self.img.fragments[p.fi];
            let cipher = key.as_ref().map(|(_, k)| {
                let sub = crypto::derive_subkey(k, &frag.salt, crypto::labels::TAPE_BLOCK_KEY);
                Arc::new(BlockCipher::new(&sub))
            });
            ciphers.push((p.fi, cipher));
        }
        let drive = self.lib.drives.acquire("reading")?;
        for (fi, _) in &ciphers {
            drive.load(&self.img.fragments[*fi].volume, &self.img.pool);
        }
        if let Some((tag, key)) = key {
            drive.register_key(tag, key);
        }
        Ok((drive, ciphers))
    }

    /// Cuts `out` (which starts at image offset `offset`) at block boundaries.
    fn pieces<'a>(&self, offset: u64, mut out: &'a mut [u8]) -> Result<Vec<Piece<'a>>, TapeError> {
        let bs = u64::from(self.img.block_size);
        let mut pieces = Vec::new();
        let mut pos = offset;
        while !out.is_empty() {
            let (fi, frag) = self.fragment_at(pos)?;
            let within = pos - frag.image_offset;
            let bi = within / bs;
            let from = (within % bs) as usize;
            let block_len = (frag.len - bi * bs).min(bs) as usize;
            let n = (block_len - from).min(out.len());
            let (head, rest) = std::mem::take(&mut out).split_at_mut(n);
            pieces.push(Piece {
                fi,
                bi,
                from,
                out: head,
            });
            out = rest;
            pos += n as u64;
        }
        Ok(pieces)
    }

    /// One piece: a whole block straight into its place, a part through
    /// the cache.
    fn serve(&self, p: Piece<'_>, ciphers: &Ciphers) -> Result<(), TapeError> {
        let cipher = ciphers
            .iter()
            .find(|(fi, _)| *fi == p.fi)
            .and_then(|(_, c)| c.as_deref());
        if p.from == 0 && p.out.len() == self.block_len(p.fi, p.bi) {
            return self.load_block_into(p.fi, p.bi, p.out, cipher);
        }
        let block = self.block(p.fi, p.bi, cipher)?;
        let n = p.out.len();
        p.out.copy_from_slice(&block[p.from..p.from + n]);
        Ok(())
    }

    fn block_len(&self, fi: usize, bi: u64) -> usize {
        let bs = u64::from(self.img.block_size);
        (self.img.fragments[fi].len - bi * bs).min(bs) as usize
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

    /// Block `bi` of fragment `fi`, decrypted once for every request that
    /// needs it.
    fn block(
        &self,
        fi: usize,
        bi: u64,
        cipher: Option<&BlockCipher>,
    ) -> Result<Arc<Vec<u8>>, TapeError> {
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
        let mut d = vec![0u8; self.block_len(fi, bi)];
        self.load_block_into(fi, bi, &mut d, cipher)?;
        let d = Arc::new(d);
        *data = Some(d.clone());
        Ok(d)
    }

    /// Reads block `bi` of fragment `fi` into `data` (the block's length),
    /// authenticated and decrypted in place with the fragment's `cipher`
    /// (checked against its clear trailer without one).
    fn load_block_into(
        &self,
        fi: usize,
        bi: u64,
        data: &mut [u8],
        cipher: Option<&BlockCipher>,
    ) -> Result<(), TapeError> {
        let frag = &self.img.fragments[fi];
        let len = data.len();
        let flags = if bi + 1 == frag.blocks {
            frag.last_flags
        } else {
            0
        };
        if self.img.key_tag.is_some() && cipher.is_none() {
            return Err(self.integrity(frag, bi, "no key registered to read it".into()));
        }
        let file = self.lib.reader(&frag.volume)?;
        let mut hdr = [0u8; format::BLOCK_HEADER_LEN as usize];
        let mut trailer = [0u8; format::BLOCK_TRAILER_LEN as usize];
        let at = frag.data_offset + bi * format::block_stride(self.img.block_size);
        read_parts(&file, at, &mut hdr, data, &mut trailer)
            .map_err(|e| self.integrity(frag, bi, format!("read at offset {at}: {e}")))?;
        if format::block_header(len as u32, flags) != hdr {
            let why = match format::parse_block_header(&hdr) {
                Ok((l, f)) => {
                    format!("block header says {l} bytes, flags {f}; expected {len}, flags {flags}")
                }
                Err(e) => e.to_string(),
            };
            return Err(self.integrity(frag, bi, why));
        }
        let bs = u64::from(self.img.block_size);
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
        let ok = match cipher {
            Some(c) => c.open_block(bi, aad, data, &trailer).is_ok(),
            None => format::clear_trailer(aad, data) == trailer,
        };
        if !ok {
            data.fill(0);
            return Err(self.integrity(frag, bi, "authentication failed".into()));
        }
        Ok(())
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

/// The threads that decrypt tape blocks: their own, not the pool LSU work
/// shares, so a tape request holding a drive never waits behind LSU work
/// that waits for the KMS.
fn decrypting_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("kmsfs-tape-{i}"))
            .build()
            .expect("a thread pool for tape reads")
    })
}

/// Reads a block's header, data and trailer from `at` with one `preadv`
/// (several if the kernel returns less).
fn read_parts(
    file: &std::fs::File,
    at: u64,
    hdr: &mut [u8],
    data: &mut [u8],
    trailer: &mut [u8],
) -> std::io::Result<()> {
    let total = hdr.len() + data.len() + trailer.len();
    let n = {
        let mut bufs = [
            IoSliceMut::new(hdr),
            IoSliceMut::new(data),
            IoSliceMut::new(trailer),
        ];
        loop {
            match rustix::io::preadv(file, &mut bufs, at) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r?,
            }
        }
    };
    if n == total {
        return Ok(());
    }
    // A short read: the rest, part by part (an error names what is missing).
    let mut pos = at;
    for part in [hdr, data, trailer] {
        let skip = n.saturating_sub((pos - at) as usize).min(part.len());
        file.read_exact_at(&mut part[skip..], pos + skip as u64)?;
        pos += part.len() as u64;
    }
    Ok(())
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
