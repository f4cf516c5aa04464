//! Reading a volume without a catalog, front to back, as a drive reads a
//! tape: the media header, then for each fragment its header, the 8-byte
//! header of every block (data is skipped, not read) and the file mark.
//! Import phase one and `fsck` use [`scan_volume`]; phase two reads and
//! authenticates the data of one fragment with [`read_fragment`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::TapeError;
use super::format::{
    self, BlockPlace, FileMark, FragmentHeader, FragmentKeys, LAST_IN_FRAGMENT, MediaHeader,
};
use crate::crypto::{self, SecretKey};

/// A fragment found on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFragment {
    pub header: FragmentHeader,
    pub header_offset: u64,
    pub data_offset: u64,
    pub blocks: u64,
    pub len: u64,
    /// Flags of the last block.
    pub last_flags: u8,
    pub mark: FileMark,
}

/// What a scan found.
#[derive(Debug)]
pub struct VolumeScan {
    pub media: MediaHeader,
    pub fragments: Vec<ScannedFragment>,
    /// A problem that stopped the scan (damage, or a dead writer's tail),
    /// with the offset where it was found. Fragments before it are good.
    pub stopped: Option<(u64, String)>,
}

fn read_at(f: &File, len: usize, at: u64) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at)?;
    Ok(b)
}

/// Reads the media header and every fragment header and file mark.
pub fn scan_volume(path: &Path) -> Result<VolumeScan, TapeError> {
    let f = File::open(path).map_err(|e| TapeError::io(format!("volume {}", path.display()), e))?;
    let end = f
        .metadata()
        .map_err(|e| TapeError::io(format!("volume {}", path.display()), e))?
        .len();
    let hdr = read_at(&f, format::MEDIA_HEADER_LEN as usize, 0).map_err(|_| TapeError::Format {
        what: "media header",
        why: format!("{} is shorter than a media header", path.display()),
    })?;
    let media = MediaHeader::decode(&hdr)?;
    let mut scan = VolumeScan {
        media,
        fragments: Vec::new(),
        stopped: None,
    };
    let mut pos = format::MEDIA_HEADER_LEN;
    while pos < end {
        match scan_fragment(&f, pos, end) {
            Ok(frag) => {
                pos = frag.data_offset + data_len(&frag) + format::FILEMARK_LEN;
                scan.fragments.push(frag);
            }
            Err(why) => {
                scan.stopped = Some((pos, why));
                break;
            }
        }
    }
    Ok(scan)
}

/// The fragment whose header starts at `offset` of the volume at `path`:
/// its header, its blocks' headers and its file mark, checked as a scan
/// checks them.
pub fn fragment_at(path: &Path, offset: u64) -> Result<ScannedFragment, TapeError> {
    let io = |e| TapeError::io(format!("volume {}", path.display()), e);
    let f = File::open(path).map_err(io)?;
    let end = f.metadata().map_err(io)?.len();
    scan_fragment(&f, offset, end).map_err(|why| TapeError::Format {
        what: "fragment",
        why: format!("at offset {offset} of {}: {why}", path.display()),
    })
}

/// Bytes of a fragment's blocks (headers, data, trailers) on the volume.
pub fn data_len(f: &ScannedFragment) -> u64 {
    f.len + f.blocks * (format::BLOCK_HEADER_LEN + format::BLOCK_TRAILER_LEN)
}

fn scan_fragment(f: &File, at: u64, end: u64) -> Result<ScannedFragment, String> {
    let head = read_at(f, 16, at).map_err(|_| "truncated fragment header".to_string())?;
    let len = FragmentHeader::peek_len(&head).map_err(|e| e.to_string())?;
    let bytes = read_at(f, len, at).map_err(|_| "truncated fragment header".to_string())?;
    let header = FragmentHeader::decode(&bytes).map_err(|e| e.to_string())?;
    let data_offset = at + len as u64;
    let (mut pos, mut blocks, mut total, mut flags) = (data_offset, 0u64, 0u64, 0u8);
    while flags & LAST_IN_FRAGMENT == 0 {
        let h = read_at(f, format::BLOCK_HEADER_LEN as usize, pos).map_err(|_| {
            format!(
                "fragment {} of image {:032x} ends without a file mark (writer died?)",
                header.number, header.image_id
            )
        })?;
        let (blen, bflags) = format::parse_block_header(&h)
            .map_err(|e| format!("block {blocks} at offset {pos}: {e}"))?;
        if blen > header.block_size || (bflags & LAST_IN_FRAGMENT == 0 && blen != header.block_size)
        {
            return Err(format!(
                "block {blocks} at offset {pos}: implausible block header"
            ));
        }
        pos += format::BLOCK_HEADER_LEN + u64::from(blen) + format::BLOCK_TRAILER_LEN;
        if pos > end {
            return Err(format!(
                "block {blocks} at offset {} runs past the end of the volume",
                pos
            ));
        }
        blocks += 1;
        total += u64::from(blen);
        flags = bflags;
    }
    let mb = read_at(f, format::FILEMARK_LEN as usize, pos)
        .map_err(|_| format!("file mark at offset {pos} missing (truncated volume?)"))?;
    let mark = FileMark::decode(&mb).map_err(|e| format!("at offset {pos}: {e}"))?;
    if mark.image_id != header.image_id
        || mark.version != header.version
        || mark.number != header.number
        || mark.blocks != blocks
        || mark.len != total
        || (header.key_tag.is_none() && mark.mac != [0; format::MAC_LEN])
    {
        return Err(format!(
            "file mark at offset {pos} does not match its fragment"
        ));
    }
    Ok(ScannedFragment {
        header,
        header_offset: at,
        data_offset,
        blocks,
        len: total,
        last_flags: flags,
        mark,
    })
}

/// Checks the MACs of a format-2 fragment's header and file mark under the
/// fragment's MAC key (format 1 has none: its headers are only CRC'd).
pub fn verify_records(
    frag: &ScannedFragment,
    barcode: &str,
    mac_key: &SecretKey,
) -> Result<(), String> {
    if frag.header.version < 2 {
        return Ok(());
    }
    if !crypto::mac_verify(
        mac_key,
        &[&frag.header.mac_input(barcode)],
        &frag.header.mac,
    ) {
        return Err(
            "fragment header fails authentication (altered, or written under another key)".into(),
        );
    }
    if !crypto::mac_verify(mac_key, &[&frag.mark.mac_input(barcode)], &frag.mark.mac) {
        return Err(
            "file mark fails authentication (altered, or moved from another fragment)".into(),
        );
    }
    Ok(())
}

/// Reads and authenticates every block of a fragment, in order, handing the
/// plaintext to `sink`. `key` is the fragment's key (None for clear data).
pub fn read_fragment(
    path: &Path,
    barcode: &str,
    frag: &ScannedFragment,
    key: Option<&SecretKey>,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), TapeError> {
    let f = File::open(path).map_err(|e| TapeError::io(format!("volume {}", path.display()), e))?;
    let keys = key.map(|k| FragmentKeys::derive(k, &frag.header.salt));
    if let Some(k) = &keys {
        verify_records(frag, barcode, &k.mac).map_err(|why| TapeError::Integrity {
            volume: barcode.into(),
            image: format!(
                "{}/{}",
                frag.header.pool.escape_debug(),
                frag.header.path.escape_debug()
            ),
            fragment: frag.header.number,
            block: 0,
            why,
        })?;
    }
    let bs = u64::from(frag.header.block_size);
    let mut pos = frag.data_offset;
    for bi in 0..frag.blocks {
        let fail = |why: String| TapeError::Integrity {
            volume: barcode.into(),
            image: format!("{:032x}", frag.header.image_id),
            fragment: frag.header.number,
            block: bi,
            why,
        };
        let h =
            read_at(&f, format::BLOCK_HEADER_LEN as usize, pos).map_err(|e| fail(e.to_string()))?;
        let (len, flags) = format::parse_block_header(&h).map_err(|e| fail(e.to_string()))?;
        let mut body = read_at(
            &f,
            len as usize + format::BLOCK_TRAILER_LEN as usize,
            pos + format::BLOCK_HEADER_LEN,
        )
        .map_err(|e| fail(e.to_string()))?;
        let (data, trailer) = body.split_at_mut(len as usize);
        let trailer: [u8; 16] = (&*trailer).try_into().expect("16 bytes");
        let place = BlockPlace {
            version: frag.header.version,
            barcode,
            image_id: frag.header.image_id,
            fragment: frag.header.number,
            index: bi,
            image_offset: frag.header.image_offset + bi * bs,
        };
        let (aad, n) = format::block_aad(&place, len, flags);
        let aad = &aad[..n];
        let ok = match &keys {
            Some(k) => k.cipher.open_block(bi, aad, data, &trailer).is_ok(),
            None => format::clear_trailer(aad, data) == trailer,
        };
        if !ok {
            return Err(fail("authentication failed".into()));
        }
        sink(data);
        pos += format::BLOCK_HEADER_LEN + u64::from(len) + format::BLOCK_TRAILER_LEN;
    }
    Ok(())
}
