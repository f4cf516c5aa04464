//! Records as catalog format 2 stored them, kept to read and upgrade an
//! older catalog (format 1 stored images the same way).

use serde::Deserialize;

use super::lsu_records::{KekPolicy, LsuMode, LsuRec, StoredKey};
use super::records::{Fragment, ImageRec};

#[derive(Deserialize)]
pub struct FragmentV2 {
    volume: String,
    number: u32,
    header_offset: u64,
    data_offset: u64,
    image_offset: u64,
    len: u64,
    blocks: u64,
    salt: [u8; 32],
    last_flags: u8,
}

/// An image of format 2: its plaintext digest was an unkeyed BLAKE3.
#[derive(Deserialize)]
pub struct ImageRecV2 {
    id: u128,
    pool: String,
    path: String,
    size: u64,
    block_size: u32,
    key_tag: Option<String>,
    kcv: Option<String>,
    _blake3: [u8; 32],
    created_ns: i64,
    fragments: Vec<FragmentV2>,
}

impl ImageRecV2 {
    /// The image in format 3: fragments of volume format 1, and no digest
    /// (the unkeyed one told anyone with the catalog which known file was
    /// backed up; it is dropped, not carried over).
    pub fn upgrade(self) -> ImageRec {
        ImageRec {
            id: self.id,
            pool: self.pool,
            path: self.path,
            size: self.size,
            block_size: self.block_size,
            key_tag: self.key_tag,
            kcv: self.kcv,
            digest: None,
            created_ns: self.created_ns,
            fragments: self
                .fragments
                .into_iter()
                .map(|f| Fragment {
                    volume: f.volume,
                    number: f.number,
                    header_offset: f.header_offset,
                    data_offset: f.data_offset,
                    image_offset: f.image_offset,
                    len: f.len,
                    blocks: f.blocks,
                    salt: f.salt,
                    last_flags: f.last_flags,
                    format: 1,
                })
                .collect(),
        }
    }
}

/// An LSU of format 2: its chunker was always chunker 1.
#[derive(Deserialize)]
pub struct LsuRecV2 {
    name: String,
    id: [u8; 16],
    mode: LsuMode,
    converting: bool,
    key_group: Option<String>,
    fp_key: StoredKey,
    legacy_tags: Vec<String>,
    active_kek: Option<u32>,
    policy: KekPolicy,
    chunking: [u32; 3],
    created_ns: i64,
}

impl LsuRecV2 {
    pub fn upgrade(self) -> LsuRec {
        LsuRec {
            name: self.name,
            id: self.id,
            mode: self.mode,
            converting: self.converting,
            key_group: self.key_group,
            fp_key: self.fp_key,
            legacy_tags: self.legacy_tags,
            active_kek: self.active_kek,
            policy: self.policy,
            chunking: self.chunking,
            chunker: 1,
            created_ns: self.created_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tables::{dec, enc};
    use super::*;

    /// A format-2 image record (bytes as catalog format 2 wrote them)
    /// upgrades to format 3 with its fragments marked volume format 1 and
    /// its unkeyed digest dropped; the format-3 bytes are pinned.
    #[test]
    fn golden_image_record_upgrade() {
        let mut v2 = Vec::new();
        v2.extend_from_slice(&7u128.to_le_bytes());
        for s in ["P", "a"] {
            v2.extend_from_slice(&(s.len() as u64).to_le_bytes());
            v2.extend_from_slice(s.as_bytes());
        }
        v2.extend_from_slice(&5u64.to_le_bytes()); // size
        v2.extend_from_slice(&262144u32.to_le_bytes());
        v2.extend_from_slice(&[0, 0]); // key_tag, kcv: None
        v2.extend_from_slice(&[0xEE; 32]); // unkeyed BLAKE3
        v2.extend_from_slice(&9i64.to_le_bytes());
        v2.extend_from_slice(&1u64.to_le_bytes()); // one fragment
        v2.extend_from_slice(&8u64.to_le_bytes());
        v2.extend_from_slice(b"K00001L9");
        for n in [
            0u32.to_le_bytes().to_vec(),
            512u64.to_le_bytes().to_vec(),
            679u64.to_le_bytes().to_vec(),
            0u64.to_le_bytes().to_vec(),
            5u64.to_le_bytes().to_vec(),
            1u64.to_le_bytes().to_vec(),
        ] {
            v2.extend_from_slice(&n);
        }
        v2.extend_from_slice(&[3; 32]);
        v2.push(3);
        let img = dec::<ImageRecV2>(&v2).unwrap().upgrade();
        assert_eq!(img.digest, None);
        assert_eq!(img.fragments[0].format, 1);
        assert_eq!(img.fragments[0].data_offset, 679);
        let v3 = enc(&img);
        // v3 = v2 with the 32-byte digest replaced by Option (1 byte: None)
        // and a u16 format after each fragment.
        assert_eq!(v3.len(), v2.len() - 32 + 1 + 2);
        assert_eq!(hex::encode(&v3[v3.len() - 3..]), "030100");
        assert_eq!(dec::<ImageRec>(&v3).unwrap(), img);
    }
}
