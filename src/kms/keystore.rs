//! The embedded keystore file (NetBackup's KMS_DATA): key groups and key
//! records, sealed as a whole under the HMK, each key's bits sealed again
//! under the KPK. Written atomically, mode 0600.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{GroupRecord, KeyRecord, Tombstone};
use super::unlock::{self, HmkSource};
use super::{KeyUsers, KmsError, NoUsers};
use crate::crypto::{self, SecretKey};
use crate::util::atomic::write_atomic_past;
use crate::util::{codec, failpoint};

const MAGIC: &[u8; 8] = b"KMSFSKST";
/// Version 2 added the tombstones of deleted keys; version 1 is read.
const VERSION: u16 = 2;
pub(super) const HEADER_LEN: usize = 24;

/// File names inside the store's `kms/` directory.
pub const KEYSTORE_FILE: &str = "keystore.kks";
pub const HMK_FILE: &str = "hmk.key";
pub const HMK_PARAMS_FILE: &str = "hmk.params";
pub const KPK_FILE: &str = "kpk.key";

/// The plaintext of the keystore body (bincode, legacy config).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Body {
    pub groups: Vec<GroupRecord>,
    pub keys: Vec<KeyRecord>,
    /// Deleted keys: tag, group, name and check value.
    pub tombstones: Vec<Tombstone>,
}

/// The body of a version-1 keystore (no tombstones).
#[derive(Deserialize)]
struct BodyV1 {
    groups: Vec<GroupRecord>,
    keys: Vec<KeyRecord>,
}

/// An unlocked keystore in memory. Key bits stay sealed under the KPK until
/// a caller needs one.
pub struct Keystore {
    path: PathBuf,
    hmk: SecretKey,
    pub(super) kpk: SecretKey,
    pub(super) body: Body,
    pub(super) users: Box<dyn KeyUsers>,
}

impl Keystore {
    /// Creates the keystore and its key files in `dir` (normally `STORE/kms`).
    pub fn create(dir: &Path, source: HmkSource) -> Result<Self, KmsError> {
        std::fs::create_dir_all(dir).map_err(|e| KmsError::io(dir, e))?;
        let hmk = match source {
            HmkSource::File(p) => unlock::create_hmk_file(&p)?,
            HmkSource::Passphrase(pass) => {
                unlock::create_passphrase_hmk(&dir.join(HMK_PARAMS_FILE), &pass)?
            }
        };
        let kpk = unlock::create_kpk(&dir.join(KPK_FILE), &hmk)?;
        let ks = Self {
            path: dir.join(KEYSTORE_FILE),
            hmk,
            kpk,
            body: Body::default(),
            users: Box::new(NoUsers),
        };
        ks.save()?;
        Ok(ks)
    }

    /// Opens and unseals the keystore in `dir`.
    pub fn open(dir: &Path, source: HmkSource) -> Result<Self, KmsError> {
        let hmk = match source {
            HmkSource::File(p) => unlock::read_hmk_file(&p)?,
            HmkSource::Passphrase(pass) => {
                unlock::derive_passphrase_hmk(&dir.join(HMK_PARAMS_FILE), &pass)?
            }
        };
        let kpk = unlock::open_kpk(&dir.join(KPK_FILE), &hmk, dir)?;
        let path = dir.join(KEYSTORE_FILE);
        let body = read_body(&path, &hmk)?;
        Ok(Self {
            path,
            hmk,
            kpk,
            body,
            users: Box::new(NoUsers),
        })
    }

    /// Tells the keystore who uses keys (the catalog), so it can refuse to
    /// delete or retire a key in use.
    pub fn set_users(&mut self, users: Box<dyn KeyUsers>) {
        self.users = users;
    }

    /// Seals and writes the whole keystore atomically.
    pub fn save(&self) -> Result<(), KmsError> {
        let bytes = encode(&self.body, &self.hmk)?;
        write_atomic_past(&self.path, &bytes, 0o600, Some(failpoint::KEYSTORE_SAVE))
            .map_err(|e| KmsError::io(&self.path, e))
    }

    /// Points the keystore at a directory that does not exist, so every
    /// later save fails with a real I/O error.
    #[cfg(test)]
    pub(super) fn fail_saves_for_test(&mut self) {
        self.path = self.path.with_file_name("no-such-dir").join(KEYSTORE_FILE);
    }

    /// A key of this store for one purpose (`info`, a label from
    /// `crypto::labels`), derived from the key protection key: it never
    /// leaves memory and is the same at every open of the store.
    pub fn store_key(&self, info: &[u8]) -> SecretKey {
        crypto::derive_subkey(&self.kpk, b"", info)
    }

    /// The key of a record, unsealed from under the KPK.
    pub(super) fn unseal(&self, rec: &KeyRecord) -> Result<SecretKey, KmsError> {
        let plain = crypto::open(&self.kpk, &record_aad(&rec.tag), &rec.sealed).map_err(|_| {
            KmsError::Damaged {
                path: self.path.display().to_string(),
                why: format!("sealed key of tag {} does not open", rec.tag),
            }
        })?;
        SecretKey::from_slice(&plain).ok_or_else(|| KmsError::Damaged {
            path: self.path.display().to_string(),
            why: format!("key of tag {} is not 32 bytes", rec.tag),
        })
    }

    /// Seals a key for a record with this tag.
    pub(super) fn seal_for(&self, tag: &str, key: &SecretKey) -> Result<Vec<u8>, KmsError> {
        Ok(crypto::seal(
            &self.kpk,
            &record_aad(tag),
            key.expose_secret(),
        )?)
    }
}

fn record_aad(tag: &str) -> Vec<u8> {
    [crypto::labels::KEY_RECORD_AAD, tag.as_bytes()].concat()
}

pub(super) fn encode(body: &Body, hmk: &SecretKey) -> Result<Vec<u8>, KmsError> {
    let plain = zeroize::Zeroizing::new(
        codec::encode(body).map_err(|e| KmsError::Container(e.to_string()))?,
    );
    seal_body(&plain, hmk)
}

/// The keystore file of a body's bincode `plain`: header, then the body
/// sealed under the HMK with the header as AAD.
pub(super) fn seal_body(plain: &[u8], hmk: &SecretKey) -> Result<Vec<u8>, KmsError> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&crypto::key_check_value(hmk));
    let sealed_len = plain.len() + 12 + crypto::TAG_LEN;
    out.extend_from_slice(&(sealed_len as u32).to_le_bytes());
    let sealed = crypto::seal(hmk, &out, plain)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn read_body(path: &Path, hmk: &SecretKey) -> Result<Body, KmsError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KmsError::Damaged {
            path: path.display().to_string(),
            why: "keystore file is missing".into(),
        },
        _ => KmsError::io(path, e),
    })?;
    decode(&bytes, hmk, path)
}

pub(super) fn decode(bytes: &[u8], hmk: &SecretKey, path: &Path) -> Result<Body, KmsError> {
    let damaged = |why: String| KmsError::Damaged {
        path: path.display().to_string(),
        why,
    };
    let (version, rest) = unlock::parse_header_versions(bytes, MAGIC, path, 1..=VERSION)?;
    if bytes.len() < HEADER_LEN {
        return Err(damaged("truncated header".into()));
    }
    let len = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes")) as usize;
    if bytes.len() - HEADER_LEN != len {
        return Err(damaged(format!(
            "body is {} bytes, header says {len} (truncated?)",
            bytes.len() - HEADER_LEN
        )));
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &rest[..8],
        &crypto::key_check_value(hmk)[..],
    )) {
        return Err(KmsError::WrongHmk(path.display().to_string()));
    }
    let plain = crypto::open(hmk, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
        .map_err(|e| damaged(format!("sealed body does not open: {e}")))?;
    let undecodable =
        |e: bincode::error::DecodeError| damaged(format!("body does not decode: {e}"));
    if version == 1 {
        let v1: BodyV1 = codec::decode(&plain).map_err(undecodable)?;
        return Ok(Body {
            groups: v1.groups,
            keys: v1.keys,
            tombstones: Vec::new(),
        });
    }
    codec::decode(&plain).map_err(undecodable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn pass(s: &str) -> HmkSource {
        HmkSource::Passphrase(Zeroizing::new(s.as_bytes().to_vec()))
    }

    #[test]
    fn file_mode_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let hmk = d.path().join(HMK_FILE);
        let mut ks = Keystore::create(d.path(), HmkSource::File(hmk.clone())).unwrap();
        ks.create_group("ENCR_A", "").unwrap();
        let ks2 = Keystore::open(d.path(), HmkSource::File(hmk)).unwrap();
        assert_eq!(ks2.list_groups().len(), 1);
    }

    #[test]
    fn wrong_passphrase_damage_truncation_and_missing_file_are_distinct() {
        let d = tempfile::tempdir().unwrap();
        Keystore::create(d.path(), pass("right")).unwrap();
        assert!(matches!(
            Keystore::open(d.path(), pass("wrong")),
            Err(KmsError::WrongHmk(_))
        ));
        let p = d.path().join(KEYSTORE_FILE);
        let good = std::fs::read(&p).unwrap();
        let mut bad = good.clone();
        let n = bad.len() - 5;
        bad[n] ^= 0x40;
        std::fs::write(&p, &bad).unwrap();
        let e = Keystore::open(d.path(), pass("right")).err().unwrap();
        assert!(matches!(e, KmsError::Damaged { .. }), "{e}");
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        let e = Keystore::open(d.path(), pass("right")).err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
        std::fs::write(&p, &good).unwrap();
        Keystore::open(d.path(), pass("right")).unwrap();
        std::fs::remove_file(d.path().join(KPK_FILE)).unwrap();
        assert!(matches!(
            Keystore::open(d.path(), pass("right")),
            Err(KmsError::MissingKeyFile(_))
        ));
    }

    #[test]
    fn future_version_is_a_typed_error() {
        let d = tempfile::tempdir().unwrap();
        let hmk = d.path().join(HMK_FILE);
        Keystore::create(d.path(), HmkSource::File(hmk.clone())).unwrap();
        let p = d.path().join(KEYSTORE_FILE);
        let mut b = std::fs::read(&p).unwrap();
        b[8] = 9;
        std::fs::write(&p, &b).unwrap();
        let e = Keystore::open(d.path(), HmkSource::File(hmk))
            .err()
            .unwrap();
        assert!(
            matches!(e, KmsError::UnknownVersion { version: 9, .. }),
            "{e}"
        );
    }
}
