//! An LSU container file read front to back, record by record, as a
//! recovery from the containers alone reads it: the container header, then
//! each segment record's header, its length against the file, and its data
//! authenticated and opened. For the fuzz targets in `fuzz/`; the keys are
//! fixed (a KEK, a legacy key, a fingerprint key), and
//! [`sample_container`] seals records under them so the fuzzer starts from
//! records that open.

use std::sync::Arc;

use super::format::{CONTAINER_HEADER_LEN, ContainerHeader, SegmentHeader, TAG_LEN, segment_aad};
use super::keys::unwrap_dek;
use super::segment::{Sealer, seal_into};
use crate::catalog::SegKind;
use crate::crypto::{self, SecretKey};

const LSU_ID: [u8; 16] = [0x4c; 16];
const KEK_ID: u32 = 1;

fn key(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).expect("32 bytes")
}

/// Reads a container file; returns the number of records that opened.
pub(crate) fn container_file(bytes: &[u8]) -> Result<usize, String> {
    let header = ContainerHeader::decode(bytes).map_err(|e| format!("container header: {e}"))?;
    let mut pos = CONTAINER_HEADER_LEN;
    let mut opened = 0;
    while pos < bytes.len() {
        let h = SegmentHeader::decode(&bytes[pos..])
            .map_err(|e| format!("segment header at byte {pos}: {e}"))?;
        let end = pos
            .checked_add(h.record_len())
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("record at byte {pos} runs past the end of the file"))?;
        let data = &bytes[pos + super::format::SEGMENT_HEADER_LEN..end];
        if open(&header.lsu_id, &h, data).is_ok() {
            opened += 1;
        }
        pos = end;
    }
    Ok(opened)
}

/// Authenticates and opens one record's data under the fixed keys.
fn open(lsu_id: &[u8; 16], h: &SegmentHeader, data: &[u8]) -> Result<Vec<u8>, String> {
    let key = match h.kind {
        SegKind::Plain => {
            return if crypto::fingerprint(&key(0x46), data) == h.fp {
                Ok(data.to_vec())
            } else {
                Err("data does not match its fingerprint".into())
            };
        }
        SegKind::Legacy => key(0x4c),
        SegKind::Kek => unwrap_dek(&key(0x4b), lsu_id, h.kek, &h.fp, &h.wrapped_dek)
            .map_err(|e| format!("wrapped DEK: {e}"))?,
    };
    let n = data.len() - TAG_LEN;
    let tag: [u8; TAG_LEN] = data[n..].try_into().expect("a tag");
    let mut plain = data[..n].to_vec();
    crypto::open_in_place(&key, &h.nonce, &segment_aad(lsu_id, h), &mut plain, &tag)
        .map_err(|_| "segment data fails authentication".to_string())?;
    Ok(plain)
}

/// A container with one record of each kind, sealed under the fixed keys.
pub(crate) fn sample_container() -> Vec<u8> {
    let mut out = ContainerHeader {
        lsu_id: LSU_ID,
        id: 1,
        created_ns: 1_700_000_000_000_000_000,
    }
    .encode()
    .to_vec();
    let sealers = [
        Sealer::Plain,
        Sealer::Legacy {
            tag: "4c".repeat(16),
            key: Arc::new(key(0x4c)),
        },
        Sealer::Kek {
            id: KEK_ID,
            key: Arc::new(key(0x4b)),
        },
    ];
    for (i, s) in sealers.iter().enumerate() {
        let data = vec![i as u8 + b'a'; 100 + i * 37];
        let fp = crypto::fingerprint(&key(0x46), &data);
        seal_into(&mut out, &LSU_ID, fp, &data, s).expect("sealing in memory");
    }
    out
}

/// A key dictionary file rewritten as a forger would: the fingerprint key
/// put in clear (`key`), `legacy_tag` named, and the MAC made under the
/// key derived from it (for the hostile-replica test of `lsu recover`).
pub(crate) fn forged_keydict(file: &[u8], key: [u8; 32], legacy_tag: &str) -> Option<Vec<u8>> {
    let mut d = super::manifest::KeyDict::decode_unverified(file).ok()?;
    d.lsu.fp_key = crate::catalog::StoredKey::Clear(key.to_vec());
    d.lsu.legacy_tags = vec![legacy_tag.to_string()];
    let k = SecretKey::from_slice(&key)?;
    Some(d.encode(&super::manifest::keydict_mac_key(&k)))
}
