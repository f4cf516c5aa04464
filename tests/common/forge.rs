//! Hand-made volumes, written from the byte tables of docs/format.md (not
//! with kmsfs's encoders), for the tests of what import does with a
//! volume that comes from the vault damaged, forged or hostile.

use std::path::Path;

/// One fragment of a forged clear (unencrypted) version-1 volume.
pub struct Frag<'a> {
    pub image_id: u128,
    pub number: u32,
    pub image_offset: u64,
    pub pool: &'a str,
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
    pub last_fragment: bool,
    /// Image size written in the file mark of a last fragment.
    pub image_size: u64,
}

impl Default for Frag<'_> {
    fn default() -> Self {
        Self {
            image_id: 0x1111_2222_3333_4444_5555_6666_7777_8888,
            number: 0,
            image_offset: 0,
            pool: "Scratch",
            path: "f.bin",
            mode: 0o100644,
            data: b"forged",
            last_fragment: true,
            image_size: 6,
        }
    }
}

fn padded(s: &str, n: usize) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.resize(n, 0);
    b.truncate(n);
    b
}

fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
    let c = crc32fast::hash(&b);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

const BLOCK: usize = 262_144;

/// Writes a version-1 volume holding clear fragments.
pub fn clear_volume_v1(path: &Path, barcode: &str, pool: &str, frags: &[Frag<'_>]) {
    let mut v = Vec::new();
    let mut m = b"KMSFSVOL".to_vec();
    m.extend_from_slice(&1u16.to_le_bytes());
    m.extend_from_slice(&512u16.to_le_bytes());
    m.extend_from_slice(&padded(barcode, 16));
    m.extend_from_slice(&padded(pool, 64));
    m.extend_from_slice(&(1u64 << 30).to_le_bytes());
    m.extend_from_slice(&1u64.to_le_bytes());
    m.extend_from_slice(&[7u8; 16]);
    m.resize(508, 0);
    v.extend_from_slice(&with_crc(m));
    for f in frags {
        let mut h = b"KMSFSFRG".to_vec();
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&((140 + f.pool.len() + f.path.len()) as u32).to_le_bytes());
        h.extend_from_slice(&f.image_id.to_le_bytes());
        h.extend_from_slice(&f.number.to_le_bytes());
        h.extend_from_slice(&(BLOCK as u32).to_le_bytes());
        h.extend_from_slice(&f.image_offset.to_le_bytes());
        h.extend_from_slice(&[5u8; 32]);
        h.extend_from_slice(&[0u8; 24]);
        h.extend_from_slice(&1u64.to_le_bytes());
        h.extend_from_slice(&f.mode.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&1u64.to_le_bytes());
        h.extend_from_slice(&(f.pool.len() as u16).to_le_bytes());
        h.extend_from_slice(&(f.path.len() as u16).to_le_bytes());
        h.extend_from_slice(f.pool.as_bytes());
        h.extend_from_slice(f.path.as_bytes());
        v.extend_from_slice(&with_crc(h));
        let chunks: Vec<&[u8]> = f.data.chunks(BLOCK).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let flags: u8 = match (last, f.last_fragment) {
                (true, true) => 3,
                (true, false) => 1,
                _ => 0,
            };
            v.extend_from_slice(&(c.len() as u32).to_le_bytes());
            v.extend_from_slice(&[flags, 0, 0, 0]);
            let mut aad = b"KMSFSBLK".to_vec();
            aad.extend_from_slice(&padded(barcode, 16));
            aad.extend_from_slice(&f.image_id.to_le_bytes());
            aad.extend_from_slice(&f.number.to_le_bytes());
            aad.extend_from_slice(&(i as u64).to_le_bytes());
            aad.extend_from_slice(&(c.len() as u32).to_le_bytes());
            aad.push(flags);
            aad.extend_from_slice(&[0u8; 4]);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&aad);
            crc.update(c);
            v.extend_from_slice(c);
            v.extend_from_slice(&crc.finalize().to_le_bytes());
            v.extend_from_slice(&[0u8; 12]);
        }
        let mut mk = b"KMSFSEOF".to_vec();
        mk.extend_from_slice(&1u16.to_le_bytes());
        mk.extend_from_slice(&u16::from(f.last_fragment).to_le_bytes());
        mk.extend_from_slice(&0u32.to_le_bytes());
        mk.extend_from_slice(&f.image_id.to_le_bytes());
        mk.extend_from_slice(&f.number.to_le_bytes());
        mk.extend_from_slice(&0u32.to_le_bytes());
        mk.extend_from_slice(&(f.data.len() as u64).to_le_bytes());
        mk.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
        mk.extend_from_slice(&(if f.last_fragment { f.image_size } else { 0 }).to_le_bytes());
        mk.extend_from_slice(&[0u8; 16]);
        mk.resize(124, 0);
        v.extend_from_slice(&with_crc(mk));
    }
    std::fs::write(path, v).unwrap();
}
