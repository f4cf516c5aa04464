//! The LSU's side of envelope encryption. DEKs are made per segment and
//! sealed under a KEK (AES-256-GCM, AAD binding LSU, KEK id and segment
//! fingerprint: a wrapped DEK cannot be moved to another segment, which
//! RFC 3394 key wrap would not prevent). KEKs are made here and wrapped by
//! the group's root key through [`KmsClient::wrap`]: the root key never
//! leaves the KMS. Unwrapped KEKs, fingerprint keys and legacy keys are
//! cached for a bounded time and zeroized when evicted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::format::{WRAPPED_DEK_LEN, dek_aad};
use super::{Msdp, MsdpError};
use crate::catalog::{KekRec, LsuRec, StoredKey};
use crate::crypto::{self, SecretKey};
use crate::kms::KmsClient;

#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyId {
    Fp(String),
    Kek(String, u32),
    Legacy(String),
}

/// Keys unwrapped from the KMS, each kept for at most `ttl`.
pub struct KeyCache {
    ttl: Duration,
    map: Mutex<HashMap<KeyId, (Arc<SecretKey>, Instant)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::default(),
        }
    }

    fn get(
        &self,
        id: KeyId,
        fetch: impl FnOnce() -> Result<SecretKey, MsdpError>,
    ) -> Result<Arc<SecretKey>, MsdpError> {
        {
            let mut m = self.map.lock();
            m.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if let Some((k, _)) = m.get(&id) {
                return Ok(k.clone());
            }
        }
        let k = Arc::new(fetch()?);
        self.map.lock().insert(id, (k.clone(), Instant::now()));
        Ok(k)
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }
}

impl Msdp {
    /// The LSU's fingerprint key.
    pub(crate) fn fp_key(&self, rec: &LsuRec) -> Result<Arc<SecretKey>, MsdpError> {
        match &rec.fp_key {
            StoredKey::Clear(b) => SecretKey::from_slice(b).map(Arc::new).ok_or_else(|| {
                MsdpError::Refused(format!("LSU {}: fingerprint key is not 32 bytes", rec.name))
            }),
            StoredKey::Wrapped(w) => self.keys.get(KeyId::Fp(rec.name.clone()), || {
                self.kms.unwrap(w).map_err(|e| {
                    MsdpError::kms(
                        format!(
                            "fingerprint key of LSU {} (root key {})",
                            rec.name, w.root_tag
                        ),
                        e,
                    )
                })
            }),
        }
    }

    /// An unwrapped KEK.
    pub(crate) fn kek(&self, lsu: &str, k: &KekRec) -> Result<Arc<SecretKey>, MsdpError> {
        self.keys.get(KeyId::Kek(lsu.into(), k.id), || {
            self.kms.unwrap(&k.wrapped).map_err(|e| {
                MsdpError::kms(
                    format!(
                        "KEK {} of LSU {lsu} (root key {})",
                        k.id, k.wrapped.root_tag
                    ),
                    e,
                )
            })
        })
    }

    /// A KMS key that legacy segments are sealed under.
    pub(crate) fn legacy_key(&self, tag: &str) -> Result<Arc<SecretKey>, MsdpError> {
        self.keys.get(KeyId::Legacy(tag.into()), || {
            self.kms
                .key_by_tag(tag)
                .map_err(|e| MsdpError::kms(format!("legacy LSU key {tag}"), e))
        })
    }

    /// The KEK new DEKs are wrapped by; a new one is made first when the
    /// LSU has none or the active one reached a rotation limit.
    pub(crate) fn active_kek(&self, rec: &LsuRec) -> Result<(KekRec, Arc<SecretKey>), MsdpError> {
        let keks = self.catalog.keks(&rec.name)?;
        let active = rec
            .active_kek
            .and_then(|id| keks.iter().find(|k| k.id == id))
            .filter(|k| !needs_rotation(rec, k));
        let k = match active {
            Some(k) => k.clone(),
            None => self.new_kek(rec)?,
        };
        let key = self.kek(&rec.name, &k)?;
        Ok((k, key))
    }

    /// Makes a new KEK, wraps it under the group's active root key and
    /// makes it the LSU's active KEK; the old ones stay to unwrap old DEKs.
    pub(crate) fn new_kek(&self, rec: &LsuRec) -> Result<KekRec, MsdpError> {
        let group = rec.key_group.as_deref().ok_or_else(|| {
            MsdpError::Refused(format!(
                "LSU {} is not in KMS mode: it has no KEKs",
                rec.name
            ))
        })?;
        let key = SecretKey::random()?;
        let wrapped = wrap_under_root(self.kms.as_ref(), group, &key, &rec.name)?;
        let id = self
            .catalog
            .keks(&rec.name)?
            .iter()
            .map(|k| k.id)
            .max()
            .unwrap_or(0)
            + 1;
        let k = KekRec {
            id,
            wrapped,
            created_ns: crate::tape::now_ns(),
            active: true,
            sealed_segments: 0,
            sealed_bytes: 0,
        };
        self.catalog.add_active_kek(&rec.name, &k)?;
        tracing::info!(lsu = %rec.name, kek = id, root_tag = %k.wrapped.root_tag, "new active KEK");
        Ok(k)
    }
}

/// Whether a KEK reached the count, bytes or age limit of the LSU's policy.
fn needs_rotation(rec: &LsuRec, k: &KekRec) -> bool {
    let p = rec.policy;
    let age = (crate::tape::now_ns() - k.created_ns).max(0) as u64 / 1_000_000_000;
    (p.max_segments > 0 && k.sealed_segments >= p.max_segments)
        || (p.max_bytes > 0 && k.sealed_bytes >= p.max_bytes)
        || (p.max_age_secs > 0 && age >= p.max_age_secs)
}

/// Wraps a key the LSU made under the group's active root key.
pub fn wrap_under_root(
    kms: &dyn KmsClient,
    group: &str,
    key: &SecretKey,
    lsu: &str,
) -> Result<crate::kms::WrappedKey, MsdpError> {
    kms.wrap(group, key)
        .map_err(|e| MsdpError::kms(format!("root key of group {group} (LSU {lsu})"), e))
}

/// Seals a segment's DEK under a KEK.
pub fn wrap_dek(
    kek: &SecretKey,
    lsu_id: &[u8; 16],
    kek_id: u32,
    fp: &[u8; 32],
    dek: &SecretKey,
) -> Result<[u8; WRAPPED_DEK_LEN], MsdpError> {
    let sealed = crypto::seal(kek, &dek_aad(lsu_id, kek_id, fp), dek.expose_secret())?;
    Ok(sealed.try_into().expect("12 + 32 + 16 bytes"))
}

/// Opens a DEK sealed by [`wrap_dek`].
pub fn unwrap_dek(
    kek: &SecretKey,
    lsu_id: &[u8; 16],
    kek_id: u32,
    fp: &[u8; 32],
    wrapped: &[u8; WRAPPED_DEK_LEN],
) -> Result<SecretKey, crypto::CryptoError> {
    let plain = crypto::open(kek, &dek_aad(lsu_id, kek_id, fp), wrapped)?;
    SecretKey::from_slice(&plain).ok_or(crypto::CryptoError::Truncated(plain.len()))
}
