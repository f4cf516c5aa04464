//! Writing one image: sequential appends cut into data blocks, sealed under
//! a per-fragment subkey of the key registered with the drive, spanning
//! volumes as they fill, and committed to the catalog only after the data
//! is durable.
//!
//! A commit happens at every [`ImageWriter::checkpoint`] (close(2) of a
//! descriptor) that follows new data, and at [`ImageWriter::finish`]: the
//! open fragment is ended with its last block marked last-in-image and a
//! file mark, the volumes are fsynced, and the image as written so far
//! becomes the committed version. Writes after a checkpoint (a shell that
//! closed a duplicate descriptor) continue in a new fragment.

use crate::util::failpoint;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::format::{
    self, BLOCK_SIZE, BlockPlace, FileMark, FragmentHeader, FragmentKeys, LAST_IN_FRAGMENT,
    LAST_IN_IMAGE,
};
use super::library::LoadedVolume;
use super::{DriveGuard, Library, TapeError, is_encrypted_pool};
use crate::catalog::{Commit, FileAttrs, Fragment, ImageRec, VolumeState, VolumeUpdate};
use crate::crypto;
use crate::pipeline::WriteTarget;
use crate::util::clock::now_ns;

struct OpenFragment {
    number: u32,
    header_offset: u64,
    data_offset: u64,
    image_offset: u64,
    blocks: u64,
    len: u64,
    salt: [u8; 32],
    keys: Option<FragmentKeys>,
}

/// An image being written. Dropping it without a commit abandons what was
/// written since the last commit: the drive is returned and the next writer
/// of the volume cuts off the tail.
pub struct ImageWriter {
    lib: Arc<Library>,
    drive: DriveGuard,
    target: WriteTarget,
    id: u128,
    tag: Option<(String, [u8; 8])>,
    vol: Option<LoadedVolume>,
    frag: Option<OpenFragment>,
    fragments: Vec<Fragment>,
    /// Volumes filled and left by this image (they stay loaded until it ends).
    retired: Vec<VolumeUpdate>,
    /// `[block header | plaintext | trailer]`, plaintext up to BLOCK_SIZE.
    buf: Vec<u8>,
    size: u64,
    digest: crypto::ImageDigest,
    /// Set by the first failed write: a failed image never commits again.
    failed: bool,
    /// Data written since the last commit (or never committed).
    dirty: bool,
    /// Whether any commit happened.
    committed_once: bool,
}

const HDR: usize = format::BLOCK_HEADER_LEN as usize;

/// Room a fragment needs on a volume to start: header, one block, file mark.
fn fragment_room() -> u64 {
    8192 + format::block_stride(BLOCK_SIZE) + format::FILEMARK_LEN
}

impl ImageWriter {
    /// As a tape drive does: take a free drive, load a volume of the pool, and for an
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
        let mut buf = Vec::with_capacity(HDR + BLOCK_SIZE as usize + 16);
        buf.resize(HDR, 0);
        let mut w = Self {
            lib: lib.clone(),
            drive,
            target,
            id: u128::from_le_bytes(crypto::random_array()?),
            tag,
            vol: None,
            frag: None,
            fragments: Vec::new(),
            retired: Vec::new(),
            buf,
            size: 0,
            digest: crypto::ImageDigest::new(&lib.digest_key),
            failed: false,
            dirty: true,
            committed_once: false,
        };
        w.load_next_volume()?;
        Ok(w)
    }

    /// Changes the attributes the image will be committed with.
    pub fn set_attrs(&mut self, attrs: FileAttrs) {
        self.target.attrs = attrs;
        self.dirty = true;
    }

    /// Makes what was written so far durable on its volume (fsync).
    pub fn sync(&self) -> Result<(), TapeError> {
        match &self.vol {
            Some(v) => failpoint::hit(failpoint::VOLUME_FSYNC)
                .and_then(|()| v.file.sync_data())
                .map_err(|e| TapeError::io(format!("volume {}", v.rec.barcode), e)),
            None => Ok(()),
        }
    }

    /// The key tag registered for this image, if encrypted.
    pub fn key_tag(&self) -> Option<&str> {
        self.tag.as_ref().map(|t| t.0.as_str())
    }

    /// Appends `data` at `offset`. Offsets past the end fill the hole with
    /// zeros (sparse copies); offsets before the end are refused, harmlessly.
    /// (The mount writes through the pipeline's `ImageSink::append`; the
    /// tests and the golden-volume generator drive the writer directly.)
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), TapeError> {
        if offset < self.size {
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
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, TapeError>,
    ) -> Result<T, TapeError> {
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
        crate::pipeline::append_zeros(self.size, len, |z| self.append(z))
    }

    fn append(&mut self, mut data: &[u8]) -> Result<(), TapeError> {
        while !data.is_empty() {
            if self.buf.len() == HDR + BLOCK_SIZE as usize {
                self.emit(false)?;
            }
            if self.frag.is_none() {
                self.start_fragment()?;
            }
            let n = (HDR + BLOCK_SIZE as usize - self.buf.len()).min(data.len());
            self.digest.update(&data[..n]);
            self.buf.extend_from_slice(&data[..n]);
            self.size += n as u64;
            self.dirty = true;
            data = &data[n..];
        }
        Ok(())
    }

    fn room(&self) -> u64 {
        let v = self.vol.as_ref().expect("volume loaded");
        v.rec.capacity.saturating_sub(v.rec.used)
    }

    fn start_fragment(&mut self) -> Result<(), TapeError> {
        if self.room() < fragment_room() {
            self.load_next_volume()?;
        }
        let salt: [u8; 32] = crypto::random_array()?;
        let keys = self
            .drive
            .with_key(|k| k.map(|k| FragmentKeys::derive(k, &salt)));
        let number = self.fragments.len() as u32;
        let t = &self.target;
        let barcode = self.vol.as_ref().expect("loaded").rec.barcode.clone();
        let mut hdr = FragmentHeader {
            version: format::FORMAT_VERSION,
            image_id: self.id,
            number,
            block_size: BLOCK_SIZE,
            image_offset: self.size,
            salt,
            key_tag: self.tag.as_ref().map(|(tag, _)| crate::kms::tag_bytes(tag)),
            kcv: self.tag.as_ref().map(|t| t.1).unwrap_or([0; 8]),
            created_ns: now_ns(),
            mode: t.attrs.mode,
            uid: t.attrs.uid,
            gid: t.attrs.gid,
            mtime_ns: t.attrs.mtime_ns,
            pool: t.pool.clone(),
            path: t.path.clone(),
            mac: [0; format::MAC_LEN],
        };
        if let Some(k) = &keys {
            hdr.mac = crypto::mac(&k.mac, &[&hdr.mac_input(&barcode)]);
        }
        let hdr = hdr.encode();
        let header_offset = self.vol.as_ref().expect("loaded").rec.used;
        self.put(&hdr)?;
        let data_offset = header_offset + hdr.len() as u64;
        self.frag = Some(OpenFragment {
            number,
            header_offset,
            data_offset,
            image_offset: self.size,
            blocks: 0,
            len: 0,
            salt,
            keys,
        });
        Ok(())
    }

    fn load_next_volume(&mut self) -> Result<(), TapeError> {
        if let Some(v) = self.vol.take() {
            self.retire_volume(v)?;
        }
        let v = self.lib.load_for_write(&self.target.pool)?;
        self.drive.load(&v.rec.barcode, &self.target.pool);
        self.vol = Some(v);
        Ok(())
    }

    /// A volume this image filled: synced, recorded full at the next commit,
    /// and kept loaded (no other writer may append) until the image ends.
    fn retire_volume(&mut self, v: LoadedVolume) -> Result<(), TapeError> {
        failpoint::hit(failpoint::VOLUME_FSYNC)
            .and_then(|()| v.file.sync_data())
            .map_err(|e| TapeError::io(format!("volume {}", v.rec.barcode), e))?;
        self.retired.push(VolumeUpdate {
            barcode: v.rec.barcode.clone(),
            used: v.rec.used,
            state: VolumeState::Full,
            count_only: false,
        });
        Ok(())
    }

    /// Appends bytes at the volume's end.
    fn put(&mut self, bytes: &[u8]) -> Result<(), TapeError> {
        let v = self.vol.as_mut().expect("volume loaded");
        failpoint::hit(failpoint::VOLUME_APPEND)
            .and_then(|()| v.file.write_all_at(bytes, v.rec.used))
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
        let flags = match (last_in_image, ends_fragment) {
            (true, _) => LAST_IN_FRAGMENT | LAST_IN_IMAGE,
            (false, true) => LAST_IN_FRAGMENT,
            _ => 0,
        };
        let barcode = self.vol.as_ref().expect("loaded").rec.barcode.clone();
        let frag = self.frag.as_mut().expect("fragment open");
        let place = BlockPlace {
            version: format::FORMAT_VERSION,
            barcode: &barcode,
            image_id: self.id,
            fragment: frag.number,
            index: frag.blocks,
            image_offset: frag.image_offset + frag.len,
        };
        let (aad, n) = format::block_aad(&place, len, flags);
        let aad = &aad[..n];
        self.buf[..HDR].copy_from_slice(&format::block_header(len, flags));
        let trailer = match &frag.keys {
            Some(k) => k.cipher.seal_block(frag.blocks, aad, &mut self.buf[HDR..]),
            None => format::clear_trailer(aad, &self.buf[HDR..]),
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
            self.end_fragment(flags)?;
        }
        Ok(())
    }

    /// Ends the open fragment with its file mark. A fragment that ends
    /// because the volume is full names the next volume in its mark (so
    /// import can say which volume of a set is missing) and moves to it.
    fn end_fragment(&mut self, last_flags: u8) -> Result<(), TapeError> {
        let f = self.frag.take().expect("fragment open");
        let last = last_flags & LAST_IN_IMAGE != 0;
        let next = if last {
            None
        } else {
            Some(self.lib.load_for_write(&self.target.pool)?)
        };
        let barcode = self.vol.as_ref().expect("loaded").rec.barcode.clone();
        let mut mark = FileMark {
            version: format::FORMAT_VERSION,
            mac: [0; format::MAC_LEN],
            next_volume: next
                .as_ref()
                .map(|v| v.rec.barcode.clone())
                .unwrap_or_default(),
            image_id: self.id,
            number: f.number,
            last_fragment: last,
            len: f.len,
            blocks: f.blocks,
            image_size: if last { self.size } else { 0 },
        };
        if let Some(k) = &f.keys {
            mark.mac = crypto::mac(&k.mac, &[&mark.mac_input(&barcode)]);
        }
        self.put(&mark.encode())?;
        self.fragments.push(Fragment {
            volume: barcode,
            number: f.number,
            header_offset: f.header_offset,
            data_offset: f.data_offset,
            image_offset: f.image_offset,
            len: f.len,
            blocks: f.blocks,
            salt: f.salt,
            last_flags,
            format: format::FORMAT_VERSION,
        });
        if let Some(v) = next {
            self.drive.load(&v.rec.barcode, &self.target.pool);
            let old = self.vol.replace(v).expect("loaded");
            self.retire_volume(old)?;
        }
        Ok(())
    }

    /// Commits the image as written so far, if anything is new: last block,
    /// file mark, fsync of every volume, one catalog transaction. Returns
    /// the committed image and the older image it replaced (already out of
    /// the catalog).
    ///
    /// An image that never held a byte is not committed here: a shell's
    /// `cmd > file` closes a duplicate descriptor before `cmd` writes, and
    /// an empty version must not stand in for an image whose writer then
    /// fails or dies. [`ImageWriter::finish`] commits empty images.
    pub fn checkpoint(&mut self) -> Result<crate::pipeline::Committed, TapeError> {
        if !self.dirty || (self.size == 0 && !self.committed_once) {
            return Ok(None);
        }
        self.guard(|w| w.commit()).map(Some)
    }

    fn commit(&mut self) -> Result<(ImageRec, Option<ImageRec>), TapeError> {
        if self.frag.is_none() {
            self.start_fragment()?;
        }
        self.emit(true)?;
        self.sync()?;
        let v = &self.vol.as_ref().expect("loaded").rec;
        let state = if v.capacity.saturating_sub(v.used) < fragment_room() {
            VolumeState::Full
        } else {
            VolumeState::Active
        };
        let mut updates = self.retired.clone();
        updates.push(VolumeUpdate {
            barcode: v.barcode.clone(),
            used: v.used,
            state,
            count_only: false,
        });
        let t = &self.target;
        let img = ImageRec {
            id: self.id,
            pool: t.pool.clone(),
            path: t.path.clone(),
            size: self.size,
            block_size: BLOCK_SIZE,
            key_tag: self.tag.as_ref().map(|t| t.0.clone()),
            kcv: self.tag.as_ref().map(|t| hex::encode(t.1)),
            digest: Some(self.digest.finalize()),
            created_ns: now_ns(),
            fragments: self.fragments.clone(),
        };
        let replaced = self.lib.catalog.commit_image(Commit {
            ino: t.ino,
            parent: t.parent,
            name: &t.name,
            attrs: t.attrs,
            image: &img,
            volumes: &updates,
            replace: true,
            files: None,
        })?;
        self.dirty = false;
        self.committed_once = true;
        tracing::info!(image = %format!("{}/{}", img.pool, img.path), size = img.size, key_tag = img.key_tag.as_deref().unwrap_or("-"), "image committed");
        Ok((img, replaced))
    }

    /// Ends the image: a last commit if anything is new, then what a drive
    /// does at the end of an image: unregister the key, return to clear mode.
    pub fn finish(mut self) -> Result<crate::pipeline::Committed, TapeError> {
        let r = if self.dirty {
            self.guard(|w| w.commit()).map(Some)
        } else {
            Ok(None)
        };
        self.drive.unregister_key();
        r
    }
}

impl crate::pipeline::ImageSink for ImageWriter {
    type Error = TapeError;
    fn key_tag(&self) -> Option<String> {
        ImageWriter::key_tag(self).map(str::to_string)
    }
    fn append(&mut self, data: &[u8]) -> Result<(), TapeError> {
        self.guard(|w| w.append(data))
    }
    fn set_attrs(&mut self, a: FileAttrs) {
        ImageWriter::set_attrs(self, a)
    }
    fn checkpoint(&mut self) -> Result<crate::pipeline::Committed, TapeError> {
        ImageWriter::checkpoint(self)
    }
    fn finish(self) -> Result<crate::pipeline::Committed, TapeError> {
        ImageWriter::finish(self)
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if let Some(v) = self.vol.take() {
            self.lib.unload(&v.rec.barcode);
        }
        for u in &self.retired {
            self.lib.unload(&u.barcode);
        }
    }
}
