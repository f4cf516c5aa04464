//! How the keystore is unlocked: the host master key (HMK) from a key file
//! or from a pass phrase, and the key protection key (KPK) sealed under it.
//!
//! Files (all 0600, formats in docs/format.md):
//! `hmk.key` raw HMK (file mode), `hmk.params` Argon2id salt and costs
//! (pass-phrase mode), `kpk.key` the KPK sealed under the HMK.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::KmsError;
use crate::crypto::{self, Argon2Params, SecretKey};
use crate::util::atomic::write_atomic;

const HMK_MAGIC: &[u8; 8] = b"KMSFSHMK";
const HPP_MAGIC: &[u8; 8] = b"KMSFSHPP";
const KPK_MAGIC: &[u8; 8] = b"KMSFSKPK";
const VERSION: u16 = 1;
const HMK_INFO: &[u8] = crypto::labels::HOST_MASTER_KEY;

/// Argon2id costs for a pass-phrase HMK (same as pass-phrase keys).
pub const HMK_PARAMS: Argon2Params = crypto::PASSPHRASE_KEY_PARAMS;

/// Where the HMK comes from.
pub enum HmkSource {
    /// A key file (default `STORE/kms/hmk.key`, or kept elsewhere).
    File(PathBuf),
    /// A pass phrase; its salt is in `STORE/kms/hmk.params`.
    Passphrase(Zeroizing<Vec<u8>>),
}

/// What the caller knows to unlock a store: an HMK file kept outside the
/// store and/or a pass phrase. Both optional; the store config says which
/// mode applies.
#[derive(Default)]
pub struct Unlock {
    pub hmk_file: Option<PathBuf>,
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
}

fn header(magic: &[u8; 8]) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// Checks magic and version of a small key file; returns the rest.
pub(super) fn parse_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    path: &Path,
) -> Result<&'a [u8], KmsError> {
    parse_header_versions(bytes, magic, path, VERSION..=VERSION).map(|(_, rest)| rest)
}

/// Checks magic and that the version is one of `versions`; returns the
/// version and the rest.
pub(super) fn parse_header_versions<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    path: &Path,
    versions: std::ops::RangeInclusive<u16>,
) -> Result<(u16, &'a [u8]), KmsError> {
    let damaged = |why: &str| KmsError::Damaged {
        path: path.display().to_string(),
        why: why.to_string(),
    };
    if bytes.len() < 12 {
        return Err(damaged("truncated header"));
    }
    if &bytes[..8] != magic {
        return Err(damaged("bad magic number"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if !versions.contains(&version) {
        return Err(KmsError::UnknownVersion {
            path: path.display().to_string(),
            version,
            supported: *versions.end(),
        });
    }
    Ok((version, &bytes[12..]))
}

fn read(path: &Path) -> Result<Vec<u8>, KmsError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KmsError::MissingKeyFile(path.display().to_string()),
        _ => KmsError::io(path, e),
    })
}

/// Makes a new random HMK in `path`.
pub fn create_hmk_file(path: &Path) -> Result<SecretKey, KmsError> {
    let hmk = SecretKey::random()?;
    let mut bytes = Zeroizing::new(header(HMK_MAGIC));
    bytes.extend_from_slice(hmk.expose_secret());
    write_atomic(path, &bytes, 0o600).map_err(|e| KmsError::io(path, e))?;
    Ok(hmk)
}

/// Reads the HMK from its key file.
pub fn read_hmk_file(path: &Path) -> Result<SecretKey, KmsError> {
    let bytes = Zeroizing::new(read(path)?);
    let rest = parse_header(&bytes, HMK_MAGIC, path)?;
    SecretKey::from_slice(rest).ok_or_else(|| KmsError::Damaged {
        path: path.display().to_string(),
        why: format!("key file holds {} key bytes, not 32", rest.len()),
    })
}

/// Makes the salt file of a pass-phrase HMK and derives the HMK.
pub fn create_passphrase_hmk(params_path: &Path, pass: &[u8]) -> Result<SecretKey, KmsError> {
    let salt = crypto::random_array::<16>()?;
    let bytes = hmk_params_bytes(HMK_PARAMS, &salt);
    write_atomic(params_path, &bytes, 0o600).map_err(|e| KmsError::io(params_path, e))?;
    Ok(crypto::passphrase_secret(
        pass, &salt, HMK_PARAMS, HMK_INFO,
    )?)
}

/// The bytes of an `hmk.params` file: header, costs, salt.
pub(super) fn hmk_params_bytes(params: Argon2Params, salt: &[u8; 16]) -> Vec<u8> {
    let mut bytes = header(HPP_MAGIC);
    for v in [params.m_kib, params.t, params.p] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(salt);
    bytes
}

/// Derives a pass-phrase HMK with the recorded salt and costs.
pub fn derive_passphrase_hmk(params_path: &Path, pass: &[u8]) -> Result<SecretKey, KmsError> {
    let bytes = read(params_path)?;
    let (params, salt) = parse_hmk_params(&bytes, params_path)?;
    Ok(crypto::passphrase_secret(pass, &salt, params, HMK_INFO)?)
}

/// The Argon2 costs and the salt an `hmk.params` file records, checked
/// (costs within [`Argon2Params::MAX`]) before any memory is taken.
pub(super) fn parse_hmk_params(
    bytes: &[u8],
    params_path: &Path,
) -> Result<(Argon2Params, [u8; 16]), KmsError> {
    let damaged = |why: String| KmsError::Damaged {
        path: params_path.display().to_string(),
        why,
    };
    let rest = parse_header(bytes, HPP_MAGIC, params_path)?;
    if rest.len() != 28 {
        return Err(damaged("wrong length".into()));
    }
    let u = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
    let params = Argon2Params {
        m_kib: u(0),
        t: u(4),
        p: u(8),
    };
    params.check().map_err(damaged)?;
    Ok((params, rest[12..28].try_into().expect("16 bytes")))
}

/// Writes a new random KPK sealed under `hmk`.
pub fn create_kpk(path: &Path, hmk: &SecretKey) -> Result<SecretKey, KmsError> {
    let kpk = SecretKey::random()?;
    let mut bytes = header(KPK_MAGIC);
    bytes.extend_from_slice(&crypto::key_check_value(hmk));
    let sealed = crypto::seal(hmk, &bytes, kpk.expose_secret())?;
    bytes.extend_from_slice(&sealed);
    write_atomic(path, &bytes, 0o600).map_err(|e| KmsError::io(path, e))?;
    Ok(kpk)
}

/// Opens the KPK. A check value that differs means the wrong HMK (pass
/// phrase or key file); a check value that matches with a failing seal
/// means the KPK file is damaged.
pub fn open_kpk(path: &Path, hmk: &SecretKey, store_dir: &Path) -> Result<SecretKey, KmsError> {
    let bytes = read(path)?;
    let rest = parse_header(&bytes, KPK_MAGIC, path)?;
    if rest.len() < 8 {
        return Err(KmsError::Damaged {
            path: path.display().to_string(),
            why: "truncated".into(),
        });
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &rest[..8],
        &crypto::key_check_value(hmk)[..],
    )) {
        return Err(KmsError::WrongHmk(store_dir.display().to_string()));
    }
    let plain = crypto::open(hmk, &bytes[..20], &rest[8..]).map_err(|e| KmsError::Damaged {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    SecretKey::from_slice(&plain).ok_or_else(|| KmsError::Damaged {
        path: path.display().to_string(),
        why: "sealed KPK is not 32 bytes".into(),
    })
}
