//! Container and segment record layouts (docs/format.md, "LSU containers").
//!
//! A container file is a 64-byte header followed by segment records. Each
//! record is a 160-byte header and the segment's data (sealed, or in clear
//! in an unencrypted LSU). Everything needed to rebuild the index is in the
//! records: fingerprint, lengths, how it is sealed, the wrapped DEK, so
//! the key holder can rebuild the index from the containers alone. All
//! integers little-endian.

use crate::catalog::SegKind;

pub const CONTAINER_MAGIC: &[u8; 8] = b"KMSFSCT\0";
pub const CONTAINER_VERSION: u16 = 1;
pub const CONTAINER_HEADER_LEN: usize = 64;
/// No container is longer: twice the 64 MiB a writer aims at, room to
/// spare for the record past it (a longer object in a bucket is not one
/// of ours).
pub const CONTAINER_MAX: u64 = 128 << 20;
/// No container id is larger: ids count up from 1, one per container, so
/// a larger one (a name in a bucket) is not one of ours, and adding to
/// the largest never wraps around.
pub const MAX_CONTAINER_ID: u64 = 1 << 48;
pub const SEGMENT_MAGIC: &[u8; 4] = b"KSEG";
pub const SEGMENT_VERSION: u8 = 1;
pub const SEGMENT_HEADER_LEN: usize = 160;
/// Nonce, DEK and tag of a DEK sealed under a KEK.
pub const WRAPPED_DEK_LEN: usize = 60;
pub const TAG_LEN: usize = 16;

/// Why bytes read from a container are not what they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic")]
    Magic,
    #[error("format version {0}; this kmsfs reads version 1")]
    Version(u32),
    #[error("header checksum mismatch")]
    Checksum,
    #[error("{0}")]
    Field(String),
}

/// A container file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerHeader {
    pub lsu_id: [u8; 16],
    pub id: u64,
    pub created_ns: i64,
}

impl ContainerHeader {
    pub fn encode(&self) -> [u8; CONTAINER_HEADER_LEN] {
        let mut b = [0u8; CONTAINER_HEADER_LEN];
        b[..8].copy_from_slice(CONTAINER_MAGIC);
        b[8..10].copy_from_slice(&CONTAINER_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(CONTAINER_HEADER_LEN as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.lsu_id);
        b[32..40].copy_from_slice(&self.id.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_ns.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// (The reader reads containers segment by segment, at offsets from
    /// the index; the golden tests and the fuzz target read the header.)
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < CONTAINER_HEADER_LEN || &b[..8] != CONTAINER_MAGIC {
            return Err(FormatError::Magic);
        }
        if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
            return Err(FormatError::Checksum);
        }
        let v = u16::from_le_bytes([b[8], b[9]]);
        if v != CONTAINER_VERSION {
            return Err(FormatError::Version(v.into()));
        }
        Ok(Self {
            lsu_id: b[16..32].try_into().expect("16 bytes"),
            id: u64_at(b, 32),
            created_ns: u64_at(b, 40) as i64,
        })
    }
}

/// The header of one segment record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub kind: SegKind,
    pub plain_len: u32,
    pub fp: [u8; 32],
    pub kek: u32,
    /// Random nonce of a legacy segment; zero otherwise (fresh DEK).
    pub nonce: [u8; 12],
    /// Tag of the KMS key a legacy segment is sealed under.
    pub key_tag: [u8; 16],
    /// The DEK sealed under KEK `kek` (KEK segments).
    pub wrapped_dek: [u8; WRAPPED_DEK_LEN],
}

fn kind_byte(k: SegKind) -> u8 {
    match k {
        SegKind::Plain => 0,
        SegKind::Legacy => 1,
        SegKind::Kek => 2,
    }
}

impl SegmentHeader {
    /// Bytes of sealed data after the header.
    pub fn data_len(&self) -> usize {
        self.plain_len as usize
            + if self.kind == SegKind::Plain {
                0
            } else {
                TAG_LEN
            }
    }

    /// Length of the whole record.
    pub fn record_len(&self) -> usize {
        SEGMENT_HEADER_LEN + self.data_len()
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[..4].copy_from_slice(SEGMENT_MAGIC);
        b[4] = SEGMENT_VERSION;
        b[5] = kind_byte(self.kind);
        b[8..12].copy_from_slice(&self.plain_len.to_le_bytes());
        b[12..16].copy_from_slice(&(self.data_len() as u32).to_le_bytes());
        b[16..48].copy_from_slice(&self.fp);
        b[48..52].copy_from_slice(&self.kek.to_le_bytes());
        b[52..64].copy_from_slice(&self.nonce);
        b[64..80].copy_from_slice(&self.key_tag);
        b[80..140].copy_from_slice(&self.wrapped_dek);
        let crc = crc32fast::hash(&b[..156]);
        b[156..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SEGMENT_HEADER_LEN || &b[..4] != SEGMENT_MAGIC {
            return Err(FormatError::Magic);
        }
        if crc32fast::hash(&b[..156]) != u32_at(b, 156) {
            return Err(FormatError::Checksum);
        }
        if b[4] != SEGMENT_VERSION {
            return Err(FormatError::Version(b[4].into()));
        }
        let kind = match b[5] {
            0 => SegKind::Plain,
            1 => SegKind::Legacy,
            2 => SegKind::Kek,
            k => return Err(FormatError::Field(format!("segment kind {k}"))),
        };
        let h = Self {
            kind,
            plain_len: u32_at(b, 8),
            fp: b[16..48].try_into().expect("32 bytes"),
            kek: u32_at(b, 48),
            nonce: b[52..64].try_into().expect("12 bytes"),
            key_tag: b[64..80].try_into().expect("16 bytes"),
            wrapped_dek: b[80..140].try_into().expect("60 bytes"),
        };
        if h.data_len() as u32 != u32_at(b, 12) {
            return Err(FormatError::Field(
                "data length does not match kind and size".into(),
            ));
        }
        Ok(h)
    }
}

/// AAD of a segment's data: binds it to its LSU, fingerprint, kind and size.
pub fn segment_aad(lsu_id: &[u8; 16], h: &SegmentHeader) -> Vec<u8> {
    let mut a = crate::crypto::labels::SEGMENT_AAD.to_vec();
    a.extend_from_slice(lsu_id);
    a.extend_from_slice(&h.fp);
    a.push(kind_byte(h.kind));
    a.extend_from_slice(&h.plain_len.to_le_bytes());
    a
}

/// AAD of a DEK sealed under a KEK: binds it to its LSU, KEK and segment.
pub fn dek_aad(lsu_id: &[u8; 16], kek: u32, fp: &[u8; 32]) -> Vec<u8> {
    let mut a = crate::crypto::labels::DEK_AAD.to_vec();
    a.extend_from_slice(lsu_id);
    a.extend_from_slice(&kek.to_le_bytes());
    a.extend_from_slice(fp);
    a
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            kind: SegKind::Kek,
            plain_len: 131072,
            fp: [0x11; 32],
            kek: 3,
            nonce: [0; 12],
            key_tag: [0; 16],
            wrapped_dek: [0x22; 60],
        }
    }

    #[test]
    fn golden_container_header() {
        let h = ContainerHeader {
            lsu_id: [0xAB; 16],
            id: 7,
            created_ns: 1_795_570_499_000_000_000,
        };
        let b = h.encode();
        assert_eq!(
            hex::encode(b),
            "4b4d5346534354000100000040000000abababababababababababababababab\
             070000000000000000de1002db25eb18000000000000000000000000bb7d0f2a"
        );
        assert_eq!(ContainerHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn golden_segment_header() {
        let b = sample().encode();
        // Cross-checked with Python's struct and zlib.crc32.
        assert_eq!(hex::encode(&b[..16]), "4b534547010200000000020010000200");
        assert_eq!(hex::encode(&b[156..]), "7ed38d7e");
        assert_eq!(SegmentHeader::decode(&b).unwrap(), sample());
    }

    #[test]
    fn golden_aads() {
        let h = sample();
        assert_eq!(
            hex::encode(segment_aad(&[1; 16], &h)),
            "6b6d736673207365672076310101010101010101010101010101010111111111111111111111111111111111111111111111111111111111111111110200000200"
        );
        assert_eq!(
            hex::encode(dek_aad(&[1; 16], 3, &[2; 32])),
            "6b6d7366732064656b20763101010101010101010101010101010101030000000202020202020202020202020202020202020202020202020202020202020202"
        );
    }

    proptest! {
        #[test]
        fn any_flipped_header_byte_is_refused(i in 0usize..SEGMENT_HEADER_LEN, bit in 0u8..8) {
            let mut b = sample().encode();
            b[i] ^= 1 << bit;
            prop_assert!(SegmentHeader::decode(&b).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SegmentHeader::decode(&b);
            let _ = ContainerHeader::decode(&b);
        }
    }
}
