//! Records of the deduplicating pools (LSUs): the LSU itself, its key
//! dictionary, its segment index, its containers, and each image's recipe.
//! Serialized like every catalog record (bincode, legacy config); layouts
//! in docs/format.md, pinned by a test.

use serde::{Deserialize, Serialize};

use crate::kms::WrappedKey;

/// How an LSU encrypts new segments (the `crcontrol --getmode` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LsuMode {
    /// Not encrypted.
    None,
    /// Segments sealed directly under the key group's active KMS key.
    Legacy,
    /// Envelope encryption: a DEK per segment, wrapped by a KEK, wrapped by
    /// the group's root key inside the KMS.
    Kms,
}

impl LsuMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LsuMode::None => "none",
            LsuMode::Legacy => "legacy-kms",
            LsuMode::Kms => "kms",
        }
    }
}

/// When the active KEK is replaced by a new one (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekPolicy {
    pub max_segments: u64,
    pub max_bytes: u64,
    pub max_age_secs: u64,
}

impl Default for KekPolicy {
    /// 2^24 DEKs per KEK keeps random-nonce wraps far below 2^32 per key.
    fn default() -> Self {
        Self {
            max_segments: 1 << 24,
            max_bytes: 1 << 40,
            max_age_secs: 30 * 24 * 3600,
        }
    }
}

/// A key the LSU keeps: wrapped by the KMS, or (unencrypted LSU) in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredKey {
    /// Only for an unencrypted LSU, whose data is in clear anyway.
    Clear(Vec<u8>),
    Wrapped(WrappedKey),
}

/// An LSU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsuRec {
    pub name: String,
    /// Random; written in every container header and bound into every AAD.
    pub id: [u8; 16],
    pub mode: LsuMode,
    /// Legacy segments remain to be converted (mode is already `Kms`).
    pub converting: bool,
    pub key_group: Option<String>,
    /// The fingerprint key (keyed BLAKE3; also seeds the chunker).
    pub fp_key: StoredKey,
    /// Tags of KMS keys that legacy segments are sealed under.
    pub legacy_tags: Vec<String>,
    pub active_kek: Option<u32>,
    pub policy: KekPolicy,
    /// FastCDC minimum, average and maximum segment sizes.
    pub chunking: [u32; 3],
    /// How the chunker's gear table comes from the fingerprint key: 1 =
    /// the public table XOR a 64-bit seed (LSUs made before catalog
    /// format 3), 2 = the whole table from a PRF of the key. Fixed for
    /// the life of the LSU, so its data keeps deduplicating.
    pub chunker: u8,
    pub created_ns: i64,
}

/// One key encryption key of an LSU (the key dictionary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRec {
    pub id: u32,
    /// The KEK wrapped by a root key of the group (its tag inside).
    pub wrapped: WrappedKey,
    pub created_ns: i64,
    pub active: bool,
    /// DEKs this KEK has wrapped, and their segments' bytes (rotation counters).
    pub sealed_segments: u64,
    pub sealed_bytes: u64,
}

/// How a stored segment is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegKind {
    Plain,
    Legacy,
    Kek,
}

/// Where a segment is and how many recipe entries use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegRec {
    pub container: u64,
    /// Offset of the segment record in the container file.
    pub offset: u64,
    /// Length of the whole record (header and sealed data).
    pub len: u32,
    /// Plaintext length.
    pub plain: u32,
    pub refs: u32,
    pub kind: SegKind,
    /// KEK id for `Kek` segments.
    pub kek: u32,
}

/// A container file of an LSU: bytes up to `size` are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRec {
    pub size: u64,
    pub created_ns: i64,
}

/// One entry of an image's recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegRef {
    pub fp: [u8; 32],
    pub len: u32,
}

#[cfg(test)]
mod tests {
    use super::super::tables::{dec, enc};
    use super::*;

    /// The record layouts are part of the catalog format: these bytes must
    /// not change without a catalog version bump (docs/format.md).
    #[test]
    fn golden_record_encodings() {
        let seg = SegRec {
            container: 7,
            offset: 64,
            len: 131248,
            plain: 131072,
            refs: 2,
            kind: SegKind::Kek,
            kek: 3,
        };
        assert_eq!(
            hex::encode(enc(&seg)),
            "07000000000000004000000000000000b000020000000200020000000200000003000000"
        );
        assert_eq!(dec::<SegRec>(&enc(&seg)).unwrap(), seg);
        let r = SegRef {
            fp: [0x11; 32],
            len: 5,
        };
        assert_eq!(hex::encode(enc(&r)), format!("{}05000000", "11".repeat(32)));
        let c = ContainerRec {
            size: 1 << 20,
            created_ns: 1,
        };
        assert_eq!(hex::encode(enc(&c)), "00001000000000000100000000000000");
        let k = KekRec {
            id: 1,
            wrapped: WrappedKey {
                root_tag: "ab".into(),
                sealed: vec![9; 2],
            },
            created_ns: 2,
            active: true,
            sealed_segments: 3,
            sealed_bytes: 4,
        };
        assert_eq!(
            hex::encode(enc(&k)),
            "01000000020000000000000061620200000000000000090902000000000000000103000000000000000400000000000000"
        );
    }
}
