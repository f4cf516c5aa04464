//! Sealing one segment into a record and opening it again: the three ways
//! a segment can be stored (in clear, legacy, envelope) in one place.

use std::sync::Arc;

use super::format::{SEGMENT_HEADER_LEN, SegmentHeader, TAG_LEN, WRAPPED_DEK_LEN, segment_aad};
use super::keys::{unwrap_dek, wrap_dek};
use super::{Msdp, MsdpError};
use crate::catalog::{KekRec, LsuRec, SegKind, SegRec};
use crate::crypto::{self, SecretKey};

/// How new segments are sealed.
pub enum Sealer {
    Plain,
    Legacy { tag: String, key: Arc<SecretKey> },
    Kek { id: u32, key: Arc<SecretKey> },
}

impl Sealer {
    pub fn kind(&self) -> SegKind {
        match self {
            Sealer::Plain => SegKind::Plain,
            Sealer::Legacy { .. } => SegKind::Legacy,
            Sealer::Kek { .. } => SegKind::Kek,
        }
    }

    pub fn kek_id(&self) -> u32 {
        match self {
            Sealer::Kek { id, .. } => *id,
            _ => 0,
        }
    }
}

/// Length of the record of a `plain`-byte segment sealed by `s`.
pub fn record_len(s: &Sealer, plain: usize) -> usize {
    SEGMENT_HEADER_LEN
        + plain
        + if matches!(s, Sealer::Plain) {
            0
        } else {
            TAG_LEN
        }
}

/// Appends the record of `data` (fingerprint `fp`) to `buf`.
pub fn seal_into(
    buf: &mut Vec<u8>,
    lsu_id: &[u8; 16],
    fp: [u8; 32],
    data: &[u8],
    s: &Sealer,
) -> Result<(), MsdpError> {
    let at = buf.len();
    buf.resize(at + record_len(s, data.len()), 0);
    seal_to(&mut buf[at..], lsu_id, fp, data, s)
}

/// Writes the record of `data` into `out` (exactly [`record_len`] bytes).
pub fn seal_to(
    out: &mut [u8],
    lsu_id: &[u8; 16],
    fp: [u8; 32],
    data: &[u8],
    s: &Sealer,
) -> Result<(), MsdpError> {
    let mut h = SegmentHeader {
        kind: s.kind(),
        plain_len: data.len() as u32,
        fp,
        kek: s.kek_id(),
        nonce: [0; 12],
        key_tag: [0; 16],
        wrapped_dek: [0; WRAPPED_DEK_LEN],
    };
    let dek = match s {
        Sealer::Plain => None,
        Sealer::Legacy { tag, key } => {
            h.nonce = crypto::random_array()?;
            h.key_tag = crate::kms::tag_bytes(tag);
            Some(key.clone())
        }
        Sealer::Kek { id, key } => {
            // A fresh key per segment: nonce zero never repeats under it.
            let dek = SecretKey::random()?;
            h.wrapped_dek = wrap_dek(key, lsu_id, *id, &fp, &dek)?;
            Some(Arc::new(dek))
        }
    };
    out[..SEGMENT_HEADER_LEN].copy_from_slice(&h.encode());
    let (body, tag_out) = out[SEGMENT_HEADER_LEN..].split_at_mut(data.len());
    body.copy_from_slice(data);
    if let Some(k) = dek {
        let tag = crypto::seal_in_place(&k, &h.nonce, &segment_aad(lsu_id, &h), body);
        tag_out.copy_from_slice(&tag);
    }
    Ok(())
}

/// A segment's plaintext, decrypted where its record was read (after the
/// record header): opening a segment copies nothing.
pub struct Plain {
    buf: Vec<u8>,
    start: usize,
}

impl std::ops::Deref for Plain {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Opens a record read from a container: checks that it is the segment
/// `fp` sealed the way the index entry `loc` says, authenticates and
/// decrypts it in place. Returns the plaintext. How a segment is sealed
/// (kind, KEK, legacy key) is taken from the index and the LSU record,
/// never from the container alone: a forged header cannot make the reader
/// ask the KMS for a key of its choosing or skip authentication.
pub fn open_record(
    msdp: &Msdp,
    rec: &LsuRec,
    keks: &[KekRec],
    fp: &[u8; 32],
    loc: &SegRec,
    h: &SegmentHeader,
    mut buf: Vec<u8>,
) -> Result<Plain, OpenError> {
    let start = SEGMENT_HEADER_LEN;
    match record_key(msdp, rec, keks, fp, loc, h)? {
        None => check_plain(msdp, rec, fp, &buf[start..])?,
        Some(key) => {
            let n = buf.len() - TAG_LEN;
            let tag: [u8; TAG_LEN] = buf[n..].try_into().expect("tag");
            buf.truncate(n);
            crypto::open_in_place(
                &key,
                &h.nonce,
                &segment_aad(&rec.id, h),
                &mut buf[start..],
                &tag,
            )
            .map_err(|_| failed_authentication())?;
        }
    }
    Ok(Plain { buf, start })
}

/// [`open_record`] into `out` (the segment's length): the plaintext goes
/// straight where the reader wants it, `record` is left as read.
#[allow(clippy::too_many_arguments)]
pub fn open_record_into(
    msdp: &Msdp,
    rec: &LsuRec,
    keks: &[KekRec],
    fp: &[u8; 32],
    loc: &SegRec,
    h: &SegmentHeader,
    record: &[u8],
    out: &mut [u8],
) -> Result<(), OpenError> {
    let body = &record[SEGMENT_HEADER_LEN..];
    let key = record_key(msdp, rec, keks, fp, loc, h)?;
    let ct_len = body.len() - if key.is_some() { TAG_LEN } else { 0 };
    if ct_len != out.len() {
        return Err(OpenError::Damaged(format!(
            "record holds {ct_len} bytes, the reader expects {}",
            out.len()
        )));
    }
    match key {
        None => {
            out.copy_from_slice(body);
            check_plain(msdp, rec, fp, out).inspect_err(|_| out.fill(0))
        }
        Some(key) => {
            let (ct, tag) = body.split_at(ct_len);
            let tag: [u8; TAG_LEN] = tag.try_into().expect("tag");
            crypto::open_to(&key, &h.nonce, &segment_aad(&rec.id, h), ct, &tag, out)
                .map_err(|_| failed_authentication())
        }
    }
}

fn failed_authentication() -> OpenError {
    OpenError::Damaged("segment data fails authentication".into())
}

/// A segment stored in clear is checked against its fingerprint.
fn check_plain(msdp: &Msdp, rec: &LsuRec, fp: &[u8; 32], data: &[u8]) -> Result<(), OpenError> {
    let fk = msdp.fp_key(rec).map_err(OpenError::Key)?;
    if &crypto::fingerprint(&fk, data) != fp {
        return Err(OpenError::Damaged(
            "data does not match its fingerprint".into(),
        ));
    }
    Ok(())
}

/// The key a record opens with (`None` for a segment stored in clear),
/// after checking that the record is the segment the index says.
fn record_key(
    msdp: &Msdp,
    rec: &LsuRec,
    keks: &[KekRec],
    fp: &[u8; 32],
    loc: &SegRec,
    h: &SegmentHeader,
) -> Result<Option<Arc<SecretKey>>, OpenError> {
    if &h.fp != fp {
        return Err(OpenError::Damaged("record holds another segment".into()));
    }
    check_sealing(rec, loc, h).map_err(OpenError::Damaged)?;
    Ok(Some(match h.kind {
        SegKind::Plain => return Ok(None),
        SegKind::Legacy => msdp
            .legacy_key(&hex::encode(h.key_tag))
            .map_err(OpenError::Key)?,
        SegKind::Kek => {
            let k = keks.iter().find(|k| k.id == h.kek).ok_or_else(|| {
                OpenError::Key(MsdpError::Refused(format!(
                    "KEK {} of LSU {} is not in its key dictionary",
                    h.kek, rec.name
                )))
            })?;
            let kek = msdp.kek(&rec.name, k).map_err(OpenError::Key)?;
            Arc::new(
                unwrap_dek(&kek, &rec.id, h.kek, fp, &h.wrapped_dek)
                    .map_err(|_| OpenError::Damaged("wrapped DEK fails authentication".into()))?,
            )
        }
    }))
}

/// The record's header agrees with the index entry and the LSU record.
fn check_sealing(rec: &LsuRec, loc: &SegRec, h: &SegmentHeader) -> Result<(), String> {
    if h.kind != loc.kind || h.plain_len != loc.plain {
        return Err(format!(
            "record header says {:?} segment of {} bytes, the index says {:?} of {}",
            h.kind, h.plain_len, loc.kind, loc.plain
        ));
    }
    match h.kind {
        SegKind::Kek if h.kek != loc.kek => Err(format!(
            "record header says KEK {}, the index says KEK {}",
            h.kek, loc.kek
        )),
        SegKind::Legacy if !rec.legacy_tags.contains(&hex::encode(h.key_tag)) => Err(format!(
            "record header names KMS key {}, which is not a legacy key of the LSU's index",
            hex::encode(h.key_tag)
        )),
        _ => Ok(()),
    }
}

/// Why a record did not open.
#[derive(Debug)]
pub enum OpenError {
    /// A key could not be had (ENOKEY, or EIO if the KMS is unreachable).
    Key(MsdpError),
    /// The bytes are not what was stored (EIO).
    Damaged(String),
}
