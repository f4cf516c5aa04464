//! Writing one image: sequential appends cut into data blocks, sealed under
//! a per-fragment subkey of the key registered with the drive, spanning
//! volumes as they fill, and committed to the catalog only after the data
//! is durable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::format::{self, BLOCK_SIZE, FileMark, FragmentHeader, LAST_IN_FRAGMENT, LAST_IN_IMAGE};
use super::library::{LoadedVolume, now_ns};
use super::{DriveGuard, Library, TapeError, is_encrypted_pool};
use crate::catalog::{Commit, FileAttrs, Fragment, ImageRec, VolumeState, VolumeUpdate};
use crate::crypto::{self, BlockCipher};

/// Where an image goes in the namespace.
pub struct WriteTarget {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub pool: String,
    /// Path inside the pool, written into fragment headers.
    pub path: String,
    pub attrs: FileAttrs,
}

struct OpenFragment {
    number: u32,
    header_offset: u64,
    data_offset: u64,
    image_offset: u64,
    blocks: u64,
    len: u64,
    salt: [u8; 32],
    cipher: Option<BlockCipher>,
}

/// An image being written. Dropping it without [`ImageWriter::finish`]
/// abandons it: nothing is committed, the drive is returned and the next
/// writer of the volume cuts off the tail.
pub struct ImageWriter {
    lib: Arc<Library>,
    drive: DriveGuard,
    target: WriteTarget,
    id: u128,
    tag: Option<(String, [u8; 8])>,
    vol: Option<LoadedVolume>,
    frag: Option<OpenFragment>,
    fragments: Vec<Fragment>,
    updates: Vec<VolumeUpdate>,
    synced: Vec<File>,
    /// `[block header | plaintext | trailer]`, plaintext up to BLOCK_SIZE.
    buf: Vec<u8>,
    size: u64,
    sha: Sha256,
    /// Set by the first failed write: a failed image never commits.
    failed: bool,
}

const HDR: usize = format::BLOCK_HEADER_LEN as usize;

impl ImageWriter {
    /// Seed 002: take a free drive, load a volume of the pool, and for an
    /// `ENCR_` pool get the active key of the group named like the pool and
    /// register key and tag with the drive.
    pub fn begin(lib: &Arc<Library>, target: WriteTarget) -> Result<Self, TapeError> {
        let drive = lib.drives.acquire("writing")?;
        let tag = if is_encrypted_pool(&target.pool) {
            let tk = lib
                .kms
                .active_key(&target.pool)
                .map_err(|source| TapeError::Kms {
                    subject: format!("key group {}", target.pool),
                    source,
                })?;
            let kcv = crypto::key_check_value(&tk.key);
            drive.register_key(&tk.tag, tk.key);
            Some((tk.tag, kcv))
        } else {
            None
        };
        let id = u128::from_le_bytes(crypto::random_array()?);
        let mut buf = Vec::with_capacity(HDR + BLOCK_SIZE as usize + 16);
        buf.resize(HDR, 0);
        let mut w = Self {
            lib: lib.clone(),
            drive,
            target,
            id,
            tag,
            vol: None,
            frag: None,
            fragments: Vec::new(),
            updates: Vec::new(),
            synced: Vec::new(),
            buf,
            size: 0,
            sha: Sha256::new(),
            failed: false,
        };
        w.start_fragment()?;
        Ok(w)
    }

    /// Changes the attributes the image will be committed with.
    pub fn set_attrs(&mut self, attrs: FileAttrs) {
        self.target.attrs = attrs;
    }

    /// Makes what was written so far durable on its volume (fsync); the
    /// image itself is committed only by [`ImageWriter::finish`].
    pub fn sync(&self) -> Result<(), TapeError> {
        match &self.vol {
            Some(v) => v
                .file
                .sync_data()
                .map_err(|e| TapeError::io(format!("volume {}", v.rec.barcode), e)),
            None => Ok(()),
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The key tag registered for this image, if encrypted.
    pub fn key_tag(&self) -> Option<&str> {
        self.tag.as_ref().map(|t| t.0.as_str())
    }

    /// Appends `data` at `offset`. Offsets past the end fill the hole with
    /// zeros (sparse copies); offsets before the end are refused.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TapeError> {
        if offset < self.size {
            // Refused without harm: the image stays good and may go on.
            return Err(TapeError::NotSequential {
                path: format!("{}/{}", self.target.pool, self.target.path),
                offset,
                end: self.size,
            });
        }
        self.guard(|w| {
            w.fill_zeros(offset)?;
            w.append(data)
        })
    }

    /// Grows the image with zeros up to `len` (ftruncate past the end).
    pub fn extend_to(&mut self, len: u64) -> Result<(), TapeError> {
        self.guard(|w| w.fill_zeros(len))
    }

    /// Runs a step that changes the volume; any failure poisons the writer.
    fn guard(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), TapeError>,
    ) -> Result<(), TapeError> {
        if self.failed {
            return Err(TapeError::Format {
                what: "image",
                why: "an earlier write failed: this image will not be committed".into(),
            });
        }
        let r = f(self);
        self.failed = r.is_err();
        r
    }

    fn fill_zeros(&mut self, len: u64) -> Result<(), TapeError> {
        const ZEROS: [u8; 65536] = [0; 65536];
        while self.size < len {
            let n = (len - self.size).min(ZEROS.len() as u64) as usize;
            self.append(&ZEROS[..n])?;
        }
        Ok(())
    }

    fn append(&mut self, mut data: &[u8]) -> Result<(), TapeError> {
        while !data.is_empty() {
            if self.buf.len() == HDR + BLOCK_SIZE as usize {
                self.emit(false)?;
            }
            let n = (HDR + BLOCK_SIZE as usize - self.buf.len()).min(data.len());
            self.sha.update(&data[..n]);
            self.buf.extend_from_slice(&data[..n]);
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn room(&self) -> u64 {
        let v = self.vol.as_ref().expect("volume loaded");
        v.rec.capacity.saturating_sub(v.rec.used)
    }

    fn start_fragment(&mut self) -> Result<(), TapeError> {
        let min = 8192 + format::block_stride(BLOCK_SIZE) + format::FILEMARK_LEN;
        if self.vol.is_none() || self.room() < min {
            self.load_next_volume()?;
        }
        let salt: [u8; 32] = crypto::random_array()?;
        let cipher = self.drive.with_key(|k| {
            k.map(|k| BlockCipher::new(&crypto::derive_subkey(k, &salt, format::SUBKEY_INFO)))
        });
        let t = &self.target;
        let hdr = FragmentHeader {
            image_id: self.id,
            number: self.fragments.len() as u32,
            block_size: BLOCK_SIZE,
            image_offset: self.size_committed_to_fragments(),
            salt,
            key_tag: self.tag.as_ref().map(|(tag, _)| tag_bytes(tag)),
            kcv: self.tag.as_ref().map(|t| t.1).unwrap_or([0; 8]),
            created_ns: now_ns(),
            mode: t.attrs.mode,
            uid: t.attrs.uid,
            gid: t.attrs.gid,
            mtime_ns: t.attrs.mtime_ns,
            pool: t.pool.clone(),
            path: t.path.clone(),
        }
        .encode();
        let header_offset = self.vol.as_ref().expect("loaded").rec.used;
        self.put(&hdr)?;
        self.frag = Some(OpenFragment {
            number: self.fragments.len() as u32,
            header_offset,
            data_offset: header_offset + hdr.len() as u64,
            image_offset: header_offset_image(&self.fragments),
            blocks: 0,
            len: 0,
            salt,
            cipher,
        });
        Ok(())
    }

    fn size_committed_to_fragments(&self) -> u64 {
        header_offset_image(&self.fragments)
    }

    fn load_next_volume(&mut self) -> Result<(), TapeError> {
        if let Some(v) = self.vol.take() {
            self.retire_volume(v, VolumeState::Full)?;
        }
        let v = self.lib.load_for_write(&self.target.pool)?;
        self.drive.load(&v.rec.barcode, &self.target.pool);
        self.vol = Some(v);
        Ok(())
    }

    fn retire_volume(&mut self, v: LoadedVolume, state: VolumeState) -> Result<(), TapeError> {
        v.file
            .sync_data()
            .map_err(|e| TapeError::io(format!("volume {}", v.rec.barcode), e))?;
        // Stays loaded (no other writer may append) until this image is
        // committed or abandoned: see Drop.
        self.updates.push(VolumeUpdate {
            barcode: v.rec.barcode.clone(),
            used: v.rec.used,
            state,
        });
        self.synced.push(v.file);
        Ok(())
    }

    /// Appends bytes at the volume's end.
    fn put(&mut self, bytes: &[u8]) -> Result<(), TapeError> {
        let v = self.vol.as_mut().expect("volume loaded");
        v.file
            .write_all_at(bytes, v.rec.used)
            .map_err(|e| TapeError::io(format!("volume {}", v.rec.barcode), e))?;
        v.rec.used += bytes.len() as u64;
        Ok(())
    }

    /// Seals and writes the buffered block; ends the fragment if it is the
    /// image's last block or the next block would not fit on the volume.
    fn emit(&mut self, last_in_image: bool) -> Result<(), TapeError> {
        let len = (self.buf.len() - HDR) as u32;
        let after = self.room().saturating_sub(HDR as u64 + u64::from(len) + 16);
        let ends_fragment =
            last_in_image || after < format::block_stride(BLOCK_SIZE) + format::FILEMARK_LEN;
        let flags = if last_in_image {
            LAST_IN_FRAGMENT | LAST_IN_IMAGE
        } else if ends_fragment {
            LAST_IN_FRAGMENT
        } else {
            0
        };
        let barcode = self.vol.as_ref().expect("loaded").rec.barcode.clone();
        let frag = self.frag.as_mut().expect("fragment open");
        let aad = format::block_aad(&barcode, self.id, frag.number, frag.blocks, len, flags);
        self.buf[..HDR].copy_from_slice(&format::block_header(len, flags));
        let trailer = match &frag.cipher {
            Some(c) => c.seal_block(frag.blocks, &aad, &mut self.buf[HDR..]),
            None => format::clear_trailer(&aad, &self.buf[HDR..]),
        };
        self.buf.extend_from_slice(&trailer);
        frag.blocks += 1;
        frag.len += u64::from(len);
        let block = std::mem::take(&mut self.buf);
        let res = self.put(&block);
        self.buf = block;
        self.buf.truncate(HDR);
        res?;
        if ends_fragment {
            self.end_fragment(last_in_image)?;
            if !last_in_image {
                self.start_fragment()?;
            }
        }
        Ok(())
    }

    fn end_fragment(&mut self, last: bool) -> Result<(), TapeError> {
        let f = self.frag.take().expect("fragment open");
        let mark = FileMark {
            image_id: self.id,
            number: f.number,
            last_fragment: last,
            len: f.len,
            blocks: f.blocks,
            image_size: if last { self.size } else { 0 },
        };
        self.put(&mark.encode())?;
        let volume = self.vol.as_ref().expect("loaded").rec.barcode.clone();
        self.fragments.push(Fragment {
            volume,
            number: f.number,
            header_offset: f.header_offset,
            data_offset: f.data_offset,
            image_offset: f.image_offset,
            len: f.len,
            blocks: f.blocks,
            salt: f.salt,
        });
        Ok(())
    }

    /// Ends the image: last block, file mark, fsync, catalog commit; then
    /// seed 002's end: unregister the key, return the drive to clear mode.
    /// Returns the committed image and the id of an image it replaced.
    pub fn finish(mut self) -> Result<(ImageRec, Option<u128>), TapeError> {
        self.guard(|w| w.emit(true))?;
        let v = self.vol.take().expect("loaded");
        let state = if v.rec.capacity.saturating_sub(v.rec.used)
            < 8192 + format::block_stride(BLOCK_SIZE)
        {
            VolumeState::Full
        } else {
            VolumeState::Active
        };
        self.retire_volume(v, state)?;
        let t = &self.target;
        let img = ImageRec {
            id: self.id,
            pool: t.pool.clone(),
            path: t.path.clone(),
            size: self.size,
            block_size: BLOCK_SIZE,
            key_tag: self.tag.as_ref().map(|t| t.0.clone()),
            kcv: self.tag.as_ref().map(|t| hex::encode(t.1)),
            sha256: std::mem::take(&mut self.sha).finalize().into(),
            created_ns: now_ns(),
            fragments: std::mem::take(&mut self.fragments),
        };
        let replaced = self.lib.catalog.commit_image(Commit {
            ino: t.ino,
            parent: t.parent,
            name: &t.name,
            attrs: t.attrs,
            image: &img,
            volumes: &self.updates,
        })?;
        self.drive.unregister_key();
        tracing::info!(image = %format!("{}/{}", img.pool, img.path), size = img.size, key_tag = img.key_tag.as_deref().unwrap_or("-"), "image committed");
        Ok((img, replaced))
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if let Some(v) = self.vol.take() {
            self.lib.unload(&v.rec.barcode);
        }
        for u in &self.updates {
            self.lib.unload(&u.barcode);
        }
    }
}

fn header_offset_image(frags: &[Fragment]) -> u64 {
    frags.last().map(|f| f.image_offset + f.len).unwrap_or(0)
}

/// A key tag (32 hex digits) as the 16 bytes written in fragment headers.
pub fn tag_bytes(tag: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(b) = hex::decode(tag) {
        let n = b.len().min(16);
        out[..n].copy_from_slice(&b[..n]);
    }
    out
}
