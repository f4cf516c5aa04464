//! Key groups and key records as the keystore holds them.

use serde::{Deserialize, Serialize};

use super::{KeyState, KmsError};
use crate::crypto::Argon2Params;

/// How a key's bits were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOrigin {
    /// From the random source; recoverable only from an exported keystore.
    Random,
    /// From a pass phrase (Argon2id then HKDF, version 1, with these parameters).
    Passphrase(Argon2Params),
}

/// A key record. `sealed` is the key sealed under the KPK; everything else
/// is metadata that is safe to print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub group: String,
    pub name: String,
    pub tag: String,
    pub state: KeyState,
    pub description: String,
    pub created: u64,
    pub modified: u64,
    pub origin: KeyOrigin,
    /// Key check value (see `crypto::key_check_value`), hex.
    pub kcv: String,
    /// `nonce || AES-256-GCM(KPK, key) || tag`, AAD `"kmsfs key v1" || tag`.
    pub sealed: Vec<u8>,
}

/// What is kept of a deleted key: enough to tell the right pass phrase
/// from a wrong one when it is recreated, never its bits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tombstone {
    pub group: String,
    pub name: String,
    pub tag: String,
    /// Key check value, hex.
    pub kcv: String,
    pub deleted: u64,
}

/// A key group record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub description: String,
    pub created: u64,
}

/// What `listkgs` shows of a group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub name: String,
    pub description: String,
    pub created: u64,
    pub keys: usize,
    pub active_tag: Option<String>,
}

/// What `listkeys` shows of a key: never key bytes.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub group: String,
    pub name: String,
    pub tag: String,
    pub state: KeyState,
    pub created: u64,
    pub modified: u64,
    pub description: String,
    pub origin: &'static str,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        Self {
            group: r.group.clone(),
            name: r.name.clone(),
            tag: r.tag.clone(),
            state: r.state,
            created: r.created,
            modified: r.modified,
            description: r.description.clone(),
            origin: match r.origin {
                KeyOrigin::Random => "random",
                KeyOrigin::Passphrase(_) => "passphrase",
            },
        }
    }
}

/// A fresh key tag: 128 random bits as 32 lower-case hex digits. It is
/// independent of the key, so it is safe to print and to write on media.
pub fn new_tag() -> Result<String, KmsError> {
    Ok(hex::encode(crate::crypto::random_array::<16>()?))
}

/// Whether `tag` is a key tag as kmsfs makes them: 32 lowercase hex digits.
pub fn check_tag(tag: &str) -> Result<(), KmsError> {
    let ok = tag.len() == 32 && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(())
        .ok_or_else(|| KmsError::BadTag(tag.to_string()))
}

/// A key tag (32 hex digits) as the 16 bytes written on media (fragment
/// headers, container records).
pub fn tag_bytes(tag: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(b) = hex::decode(tag) {
        let n = b.len().min(16);
        out[..n].copy_from_slice(&b[..n]);
    }
    out
}

/// Checks a group or key name: 1-64 of `[A-Za-z0-9_.-]`, not starting with '.'.
pub fn check_name(name: &str) -> Result<(), KmsError> {
    crate::util::names::check_name(name).map_err(|_| KmsError::BadName(name.to_string()))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
