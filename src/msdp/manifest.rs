//! What lets an LSU be rebuilt from its own directory alone once the
//! catalog is lost (docs/format.md, "LSU key dictionary and recipe
//! files"). Containers describe themselves already: every record names its
//! segment. These two files hold what only the catalog held besides: the
//! key dictionary (which root keys wrap the LSU's fingerprint key and
//! KEKs), and for each image the segments that make it, its name and its
//! attributes.
//!
//! Both are bound to their LSU by keys derived from its fingerprint key,
//! which only the KMS unwraps: the key dictionary carries an HMAC, each
//! recipe is sealed with AES-256-GCM, its header (LSU id, image id) as
//! associated data. Nothing read here is trusted before that check, and
//! every length and name is validated.

use crate::catalog::{FileAttrs, KekRec, LsuRec, SegRef};
use crate::crypto::{self, SecretKey, labels};

pub const KEYDICT_MAGIC: &[u8; 8] = b"KMSFSKD\0";
pub const RECIPE_MAGIC: &[u8; 8] = b"KMSFSRC\0";
pub const MANIFEST_VERSION: u16 = 1;
pub const RECIPE_HEADER_LEN: usize = 64;
/// The key dictionary file is never larger (a KEK record is about 120 bytes).
pub const MAX_KEYDICT: usize = 16 << 20;
/// The key dictionary file's name in the LSU's directory or bucket prefix.
pub const KEYDICT_FILE: &str = "keydict.kkd";
/// Nor is a recipe file: 36 bytes a segment, 64 KiB segments at least:
/// about 1.9 TiB of image (3.7 TiB at the average segment).
pub const MAX_RECIPE: usize = 1 << 30;
const SEGREF_LEN: usize = 36;
const PATH_MAX: usize = 32 << 10;

/// Why a key dictionary or recipe file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a kmsfs {0} file (bad magic)")]
    Magic(&'static str),
    #[error("{what} format version {version}; this kmsfs reads version 1")]
    Version { what: &'static str, version: u16 },
    #[error("header checksum mismatch")]
    Checksum,
    #[error("truncated or overlong ({0} bytes)")]
    Length(usize),
    #[error("fails authentication (altered, or not made with this LSU's keys)")]
    Authentication,
    #[error("{0}")]
    Field(String),
}

/// An LSU's record and key dictionary as a file holds them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyDict {
    pub lsu: LsuRec,
    pub keks: Vec<KekRec>,
}

/// The key that authenticates an LSU's key dictionary file.
pub fn keydict_mac_key(fp_key: &SecretKey) -> SecretKey {
    crypto::derive_subkey(fp_key, b"", labels::KEYDICT_MAC_KEY)
}

/// The key recipe files of an LSU are sealed under keys derived from.
pub fn recipe_key(fp_key: &SecretKey) -> SecretKey {
    crypto::derive_subkey(fp_key, b"", labels::RECIPE_KEY)
}

/// The key one image's recipe file is sealed under (a key per image: its
/// random nonces never meet another image's).
fn image_recipe_key(key: &SecretKey, image: u128) -> SecretKey {
    crypto::derive_subkey(key, &image.to_le_bytes(), labels::RECIPE_KEY)
}

impl KeyDict {
    /// The file's bytes: magic, version, body length, body (the catalog's
    /// encoding of the records; rotation counters left out, as they change
    /// with every write), HMAC-SHA-256 of all before it.
    pub fn encode(&self, mac_key: &SecretKey) -> Vec<u8> {
        let mut d = self.clone();
        for k in &mut d.keks {
            k.sealed_segments = 0;
            k.sealed_bytes = 0;
        }
        let body = crate::util::codec::encode(&d).expect("records serialize");
        let mut b = Vec::with_capacity(16 + body.len() + 32);
        b.extend_from_slice(KEYDICT_MAGIC);
        b.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(body.len() as u32).to_le_bytes());
        b.extend_from_slice(&body);
        let tag = crypto::mac(mac_key, &[labels::KEYDICT_MAC, &b]);
        b.extend_from_slice(&tag);
        b
    }

    /// Reads a key dictionary file without authenticating it: its
    /// fingerprint key has to be unwrapped (by the KMS) first. Call
    /// [`KeyDict::authenticate`] before using anything else in it.
    pub fn decode_unverified(b: &[u8]) -> Result<Self, ManifestError> {
        let body = keydict_body(b)?;
        let d: KeyDict = crate::util::codec::decode(body)
            .map_err(|e| ManifestError::Field(format!("key dictionary: {e}")))?;
        crate::kms::model_check_name(&d.lsu.name)
            .map_err(|e| ManifestError::Field(format!("LSU name: {e}")))?;
        Ok(d)
    }

    /// Whether `b` carries a valid MAC under `mac_key`.
    pub fn authenticate(b: &[u8], mac_key: &SecretKey) -> Result<(), ManifestError> {
        let body = keydict_body(b)?;
        let end = 16 + body.len();
        let tag: [u8; 32] = b[end..].try_into().expect("checked length");
        if crypto::mac_verify(mac_key, &[labels::KEYDICT_MAC, &b[..end]], &tag) {
            Ok(())
        } else {
            Err(ManifestError::Authentication)
        }
    }
}

fn keydict_body(b: &[u8]) -> Result<&[u8], ManifestError> {
    if b.len() < 16 + 32 || b.len() > MAX_KEYDICT {
        return Err(ManifestError::Length(b.len()));
    }
    if &b[..8] != KEYDICT_MAGIC {
        return Err(ManifestError::Magic("key dictionary"));
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != MANIFEST_VERSION {
        return Err(ManifestError::Version {
            what: "key dictionary",
            version,
        });
    }
    let n = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")) as usize;
    if b.len() != 16 + n + 32 {
        return Err(ManifestError::Length(b.len()));
    }
    Ok(&b[16..16 + n])
}

/// One image of an LSU as its recipe file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeFile {
    pub image: u128,
    /// Path inside the LSU (`a/b/file`), as when the image was written.
    pub path: String,
    pub size: u64,
    pub created_ns: i64,
    pub attrs: FileAttrs,
    pub segments: Vec<SegRef>,
}

/// The header of a recipe file (64 bytes, in clear; the body's AAD).
fn recipe_header(lsu_id: &[u8; 16], image: u128, sealed_len: u64) -> [u8; RECIPE_HEADER_LEN] {
    let mut h = [0u8; RECIPE_HEADER_LEN];
    h[..8].copy_from_slice(RECIPE_MAGIC);
    h[8..10].copy_from_slice(&MANIFEST_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(RECIPE_HEADER_LEN as u32).to_le_bytes());
    h[16..32].copy_from_slice(lsu_id);
    h[32..48].copy_from_slice(&image.to_le_bytes());
    h[48..56].copy_from_slice(&sealed_len.to_le_bytes());
    let crc = crc32fast::hash(&h[..60]);
    h[60..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn recipe_aad(header: &[u8]) -> Vec<u8> {
    [labels::RECIPE_AAD, header].concat()
}

impl RecipeFile {
    /// The file's bytes: header, then the body sealed under `key`.
    pub fn encode(&self, lsu_id: &[u8; 16], key: &SecretKey) -> Result<Vec<u8>, ManifestError> {
        check_path(&self.path)?;
        let body = self.body();
        let sealed_len = body.len() + 12 + crypto::TAG_LEN;
        let h = recipe_header(lsu_id, self.image, sealed_len as u64);
        let sealed = crypto::seal(&image_recipe_key(key, self.image), &recipe_aad(&h), &body)
            .map_err(|e| ManifestError::Field(e.to_string()))?;
        Ok([&h[..], &sealed].concat())
    }

    fn body(&self) -> Vec<u8> {
        let p = self.path.as_bytes();
        let mut b = Vec::with_capacity(64 + p.len() + self.segments.len() * SEGREF_LEN);
        b.extend_from_slice(&(p.len() as u16).to_le_bytes());
        b.extend_from_slice(p);
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.created_ns.to_le_bytes());
        let a = &self.attrs;
        for v in [a.mode, a.uid, a.gid] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [a.atime_ns, a.mtime_ns, a.ctime_ns] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.segments.len() as u64).to_le_bytes());
        for s in &self.segments {
            b.extend_from_slice(&s.fp);
            b.extend_from_slice(&s.len.to_le_bytes());
        }
        b
    }

    /// The LSU id and image id a recipe file's header claims (checked
    /// against the file name and the LSU before anything is opened).
    pub fn peek(b: &[u8]) -> Result<([u8; 16], u128), ManifestError> {
        if b.len() < RECIPE_HEADER_LEN || b.len() > MAX_RECIPE {
            return Err(ManifestError::Length(b.len()));
        }
        if &b[..8] != RECIPE_MAGIC {
            return Err(ManifestError::Magic("recipe"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Version {
                what: "recipe",
                version,
            });
        }
        let crc = u32::from_le_bytes(b[60..64].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&b[..60]) {
            return Err(ManifestError::Checksum);
        }
        let sealed = u64::from_le_bytes(b[48..56].try_into().expect("8 bytes"));
        if sealed != (b.len() - RECIPE_HEADER_LEN) as u64 {
            return Err(ManifestError::Length(b.len()));
        }
        let lsu: [u8; 16] = b[16..32].try_into().expect("16 bytes");
        let image = u128::from_le_bytes(b[32..48].try_into().expect("16 bytes"));
        Ok((lsu, image))
    }

    /// Opens a recipe file of LSU `lsu_id` sealed under `key`.
    pub fn decode(b: &[u8], lsu_id: &[u8; 16], key: &SecretKey) -> Result<Self, ManifestError> {
        let (lsu, image) = Self::peek(b)?;
        if &lsu != lsu_id {
            return Err(ManifestError::Field("recipe of another LSU".into()));
        }
        let (h, sealed) = b.split_at(RECIPE_HEADER_LEN);
        let body = crypto::open(&image_recipe_key(key, image), &recipe_aad(h), sealed)
            .map_err(|_| ManifestError::Authentication)?;
        parse_body(&body, image)
    }
}

/// A little-endian reader that fails instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        if self.0.len() < n {
            return Err(ManifestError::Field("recipe body truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, ManifestError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn i64(&mut self) -> Result<i64, ManifestError> {
        Ok(self.u64()? as i64)
    }
}

fn parse_body(b: &[u8], image: u128) -> Result<RecipeFile, ManifestError> {
    let mut c = Cursor(b);
    let n = c.u16()? as usize;
    let path = std::str::from_utf8(c.take(n)?)
        .map_err(|_| ManifestError::Field("image path is not UTF-8".into()))?
        .to_string();
    check_path(&path)?;
    let size = c.u64()?;
    let created_ns = c.i64()?;
    let (mode, uid, gid) = (c.u32()?, c.u32()?, c.u32()?);
    let (atime_ns, mtime_ns, ctime_ns) = (c.i64()?, c.i64()?, c.i64()?);
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ManifestError::Field(format!(
            "image {path}: mode {mode:o} is not a regular file's"
        )));
    }
    let count = c.u64()?;
    if count.checked_mul(SEGREF_LEN as u64) != Some(c.0.len() as u64) {
        return Err(ManifestError::Field(format!(
            "image {path}: {count} segments claimed, {} bytes hold them",
            c.0.len()
        )));
    }
    let mut segments = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for _ in 0..count {
        let fp: [u8; 32] = c.take(32)?.try_into().expect("32");
        let len = c.u32()?;
        if len == 0 {
            return Err(ManifestError::Field(format!(
                "image {path}: a segment of 0 bytes"
            )));
        }
        total += u64::from(len);
        segments.push(SegRef { fp, len });
    }
    if total != size {
        return Err(ManifestError::Field(format!(
            "image {path}: segments hold {total} bytes, the recipe says {size}"
        )));
    }
    Ok(RecipeFile {
        image,
        path,
        size,
        created_ns,
        attrs: FileAttrs {
            mode,
            uid,
            gid,
            atime_ns,
            mtime_ns,
            ctime_ns,
        },
        segments,
    })
}

/// A path inside an LSU: relative, components 1 to 255 bytes, none of
/// them `.` or `..`, no NUL.
pub fn check_path(p: &str) -> Result<(), ManifestError> {
    let bad = |why: &str| Err(ManifestError::Field(format!("image path {p:?}: {why}")));
    if p.is_empty() || p.len() > PATH_MAX {
        return bad("empty or longer than 32 KiB");
    }
    if p.contains('\0') {
        return bad("holds a NUL byte");
    }
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.len() > 255 {
            return bad("not a plain relative path");
        }
    }
    Ok(())
}

/// `recipes/` file name of image `id`.
pub fn recipe_file_name(id: u128) -> String {
    format!("{id:032x}.krc")
}

/// The image id a recipe file name stands for.
pub fn recipe_id_of(name: &str) -> Option<u128> {
    let hex = name.strip_suffix(".krc")?;
    (hex.len() == 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{KekPolicy, LsuMode, StoredKey};
    use crate::kms::WrappedKey;
    use proptest::prelude::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_slice(&[b; 32]).unwrap()
    }

    fn recipe() -> RecipeFile {
        RecipeFile {
            image: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            path: "daily/db.dump".into(),
            size: 300,
            created_ns: 1_795_570_499_000_000_000,
            attrs: FileAttrs {
                mode: libc::S_IFREG | 0o644,
                uid: 1000,
                gid: 1000,
                atime_ns: 1,
                mtime_ns: 2,
                ctime_ns: 3,
            },
            segments: vec![
                SegRef {
                    fp: [0x11; 32],
                    len: 100,
                },
                SegRef {
                    fp: [0x22; 32],
                    len: 200,
                },
            ],
        }
    }

    fn dict() -> KeyDict {
        KeyDict {
            lsu: LsuRec {
                name: "lsu1".into(),
                id: [0xAB; 16],
                mode: LsuMode::Kms,
                converting: false,
                key_group: Some("grp".into()),
                fp_key: StoredKey::Wrapped(WrappedKey {
                    root_tag: "00".repeat(16),
                    sealed: vec![7; 60],
                }),
                legacy_tags: Vec::new(),
                active_kek: Some(1),
                policy: KekPolicy::default(),
                chunking: [65536, 131072, 524288],
                chunker: 2,
                created_ns: 5,
            },
            keks: vec![KekRec {
                id: 1,
                wrapped: WrappedKey {
                    root_tag: "00".repeat(16),
                    sealed: vec![8; 60],
                },
                created_ns: 6,
                active: true,
                sealed_segments: 9,
                sealed_bytes: 10,
            }],
        }
    }

    #[test]
    fn golden_recipe_header_and_round_trip() {
        let r = recipe();
        let b = r.encode(&[0xAB; 16], &key(1)).unwrap();
        assert_eq!(
            hex::encode(&b[..RECIPE_HEADER_LEN]),
            // Cross-checked with Python's struct and zlib.crc32.
            "4b4d5346535243000100000040000000abababababababababababababababab\
             100f0e0d0c0b0a090807060504030201af000000000000000000000085ecd603"
        );
        assert_eq!(b.len(), 64 + 12 + 2 + 13 + 8 + 8 + 12 + 24 + 8 + 72 + 16);
        // The body before sealing (Python's struct gives the same bytes).
        assert_eq!(
            hex::encode(r.body()),
            "0d006461696c792f64622e64756d702c0100000000000000de1002db25eb18a481\
             0000e8030000e8030000010000000000000002000000000000000300000000000000\
             0200000000000000111111111111111111111111111111111111111111111111111111\
             11111111116400000022222222222222222222222222222222222222222222222222222222\
             22222222c8000000"
        );
        assert_eq!(RecipeFile::decode(&b, &[0xAB; 16], &key(1)).unwrap(), r);
        assert_eq!(
            RecipeFile::decode(&b, &[0xAB; 16], &key(2)),
            Err(ManifestError::Authentication)
        );
        assert!(RecipeFile::decode(&b, &[0xAC; 16], &key(1)).is_err());
    }

    #[test]
    fn golden_labels() {
        assert_eq!(labels::RECIPE_AAD, b"kmsfs recipe v1");
        assert_eq!(labels::RECIPE_KEY, b"kmsfs recipe key v1");
        assert_eq!(labels::KEYDICT_MAC_KEY, b"kmsfs keydict mac key v1");
        assert_eq!(labels::KEYDICT_MAC, b"KMSFSKD1");
        // The derived keys are pinned too: a change would orphan every recipe.
        assert_eq!(
            hex::encode(&crypto::mac(&recipe_key(&key(1)), &[b"x"])[..8]),
            hex::encode(
                &crypto::mac(
                    &crypto::derive_subkey(&key(1), b"", b"kmsfs recipe key v1"),
                    &[b"x"]
                )[..8]
            )
        );
    }

    #[test]
    fn keydict_round_trip_leaves_counters_out_and_is_authenticated() {
        let d = dict();
        let b = d.encode(&key(3));
        assert_eq!(
            hex::encode(&b[..16]),
            format!(
                "4b4d5346534b440001000000{}",
                hex::encode(((b.len() - 48) as u32).to_le_bytes())
            )
        );
        let back = KeyDict::decode_unverified(&b).unwrap();
        assert_eq!(back.lsu, d.lsu);
        assert_eq!(back.keks[0].sealed_segments, 0);
        KeyDict::authenticate(&b, &key(3)).unwrap();
        assert_eq!(
            KeyDict::authenticate(&b, &key(4)),
            Err(ManifestError::Authentication)
        );
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert_eq!(
            KeyDict::authenticate(&bad, &key(3)),
            Err(ManifestError::Authentication)
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a/",
            "a\0b",
        ] {
            assert!(check_path(p).is_err(), "{p:?}");
        }
        let long = "x".repeat(256);
        assert!(check_path(&long).is_err());
        let deep = "x/".repeat(20_000) + "y";
        assert!(check_path(&deep).is_err());
        let mut r = recipe();
        r.path = deep;
        assert!(r.encode(&[0xAB; 16], &key(1)).is_err());
        check_path("a/b c/d.tar").unwrap();
        // Refused when written, and when read (a body made by another hand).
        let mut r = recipe();
        r.path = "../../escape".into();
        assert!(r.encode(&[0xAB; 16], &key(1)).is_err());
        assert!(parse_body(&r.body(), r.image).is_err());
    }

    #[test]
    fn a_recipe_whose_segments_disagree_with_its_size_is_refused() {
        let mut r = recipe();
        r.size = 301;
        let b = r.encode(&[0xAB; 16], &key(1)).unwrap();
        assert!(RecipeFile::decode(&b, &[0xAB; 16], &key(1)).is_err());
    }

    #[test]
    fn recipe_names() {
        assert_eq!(recipe_id_of(&recipe_file_name(77)), Some(77));
        assert_eq!(recipe_id_of("77.krc"), None);
        assert_eq!(recipe_id_of(&format!("{}.krc", "g".repeat(32))), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeyDict::decode_unverified(&b);
            let _ = RecipeFile::decode(&b, &[0xAB; 16], &key(1));
            let _ = parse_body(&b, 1);
        }

        #[test]
        fn any_flipped_recipe_byte_is_refused(i in 0usize..239, bit in 0u8..8) {
            let mut b = recipe().encode(&[0xAB; 16], &key(1)).unwrap();
            prop_assume!(i < b.len());
            b[i] ^= 1 << bit;
            prop_assert!(RecipeFile::decode(&b, &[0xAB; 16], &key(1)).is_err());
        }
    }
}
