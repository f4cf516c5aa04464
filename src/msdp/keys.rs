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
use crate::kms::{KmsClient, WrappedKey};
use crate::util::turns::Turns;

/// What a cached key is. Wrapped keys are known by a digest of their
/// wrapped form, not by an id alone: a KEK record rewritten with another
/// key (or rewrapped) can never be answered with a stale key.
#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyId {
    Fp(String, [u8; 32]),
    Kek(String, u32, [u8; 32]),
    Legacy(String),
}

/// Digest of a wrapped key (public bytes: root key tag and ciphertext).
fn wrapped_digest(w: &WrappedKey) -> [u8; 32] {
    let mut b = w.root_tag.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&w.sealed);
    crypto::name_digest(crypto::labels::CACHED_WRAPPED_KEY, &b)
}

/// Keys unwrapped from the KMS, each kept for at most `ttl`.
pub struct KeyCache {
    ttl: Duration,
    map: Mutex<HashMap<KeyId, (Arc<SecretKey>, Instant)>>,
    /// One lock per key being fetched: many readers missing the same key
    /// at once make one KMS call, not one each.
    fetching: Turns<KeyId>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::default(),
            fetching: Turns::default(),
        }
    }

    fn get(
        &self,
        id: KeyId,
        fetch: impl FnOnce() -> Result<SecretKey, MsdpError>,
    ) -> Result<Arc<SecretKey>, MsdpError> {
        if let Some(k) = self.cached(&id) {
            return Ok(k);
        }
        if self.ttl.is_zero() {
            // Nothing is kept: there is no fetch to share.
            return fetch().map(Arc::new);
        }
        // Whoever fetched while this caller waited left the key here.
        self.fetching.take(&id, || match self.cached(&id) {
            Some(k) => Ok(k),
            None => fetch().map(|k| {
                let k = Arc::new(k);
                self.put(id.clone(), k.clone());
                k
            }),
        })
    }

    fn cached(&self, id: &KeyId) -> Option<Arc<SecretKey>> {
        let mut m = self.map.lock();
        m.retain(|_, (_, at)| at.elapsed() < self.ttl);
        m.get(id).map(|(k, _)| k.clone())
    }

    fn put(&self, id: KeyId, k: Arc<SecretKey>) {
        self.map.lock().insert(id, (k, Instant::now()));
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }

    /// Drops (and so wipes) every key past its time.
    fn sweep(&self) {
        let ttl = self.ttl;
        self.map.lock().retain(|_, (_, at)| at.elapsed() < ttl);
    }

    /// Keys held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Sweeps the key cache of `msdp` while it lives, so an unwrapped key is
/// wiped when its time is over even if nothing asks for a key again.
pub(super) fn start_sweeper(msdp: &Arc<Msdp>) {
    let weak = Arc::downgrade(msdp);
    let every = msdp
        .keys
        .ttl
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(50));
    let spawned = std::thread::Builder::new()
        .name("kek-sweeper".into())
        .spawn(move || {
            while let Some(m) = weak.upgrade() {
                m.keys.sweep();
                drop(m);
                std::thread::sleep(every);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no key cache sweeper: expired keys are wiped on next use");
    }
}

impl Msdp {
    /// The LSU's fingerprint key.
    pub(crate) fn fp_key(&self, rec: &LsuRec) -> Result<Arc<SecretKey>, MsdpError> {
        match &rec.fp_key {
            StoredKey::Clear(b) => SecretKey::from_slice(b).map(Arc::new).ok_or_else(|| {
                MsdpError::Refused(format!("LSU {}: fingerprint key is not 32 bytes", rec.name))
            }),
            StoredKey::Wrapped(w) => {
                let id = KeyId::Fp(rec.name.clone(), wrapped_digest(w));
                self.keys.get(id, || {
                    self.kms.unwrap(w).map_err(|e| {
                        MsdpError::kms(
                            format!(
                                "fingerprint key of LSU {} (root key {})",
                                rec.name, w.root_tag
                            ),
                            e,
                        )
                    })
                })
            }
        }
    }

    /// An unwrapped KEK.
    pub(crate) fn kek(&self, lsu: &str, k: &KekRec) -> Result<Arc<SecretKey>, MsdpError> {
        let id = KeyId::Kek(lsu.into(), k.id, wrapped_digest(&k.wrapped));
        self.keys.get(id, || {
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

    /// The KEK new DEKs are wrapped by. When the LSU has none or the
    /// active one reached a rotation limit, a new one is made, once:
    /// writers that start together decide again under the LSU's key lock,
    /// and the later ones find the KEK the first one made.
    pub(crate) fn active_kek(&self, name: &str) -> Result<(KekRec, Arc<SecretKey>), MsdpError> {
        let k = match self.usable_kek(name)? {
            Some(k) => k,
            None => {
                let state = self.state(name)?;
                // Asked before the lock: writers do not queue behind a
                // request to a store that does not answer.
                state.backend.check_owner()?;
                let _keys = state.keys.lock();
                match self.usable_kek(name)? {
                    Some(k) => k,
                    None => self.make_kek(name)?,
                }
            }
        };
        let key = self.kek(name, &k)?;
        Ok((k, key))
    }

    /// The active KEK as the catalog has it now, unless due for rotation.
    fn usable_kek(&self, name: &str) -> Result<Option<KekRec>, MsdpError> {
        let rec = self.lsu_rec(name)?;
        let keks = self.catalog.keks(name)?;
        Ok(rec
            .active_kek
            .and_then(|id| keks.into_iter().find(|k| k.id == id))
            .filter(|k| !needs_rotation(&rec, k)))
    }

    /// Makes a new active KEK (`lsu rotate-kek`); the old ones stay, inactive.
    pub(crate) fn new_kek(&self, name: &str) -> Result<KekRec, MsdpError> {
        let state = self.state(name)?;
        state.backend.check_owner()?;
        let _keys = state.keys.lock();
        self.make_kek(name)
    }

    /// Makes a KEK, wraps it under the group's active root key, checks
    /// that the wrapped form opens to the same key (nothing is sealed
    /// under a KEK that could not be unwrapped later), and records it as
    /// the active KEK under a fresh id. Call with the LSU's key lock held,
    /// after the prefix's claim was checked (a cloud LSU another store took
    /// over could not publish the key dictionary: nothing may be sealed
    /// under a KEK made then).
    fn make_kek(&self, name: &str) -> Result<KekRec, MsdpError> {
        let rec = self.lsu_rec(name)?;
        let group = rec.key_group.as_deref().ok_or_else(|| {
            MsdpError::Refused(format!("LSU {name} is not in KMS mode: it has no KEKs"))
        })?;
        let key = SecretKey::random()?;
        let wrapped = wrap_under_root(self.kms.as_ref(), group, &key, name)?;
        // The root key is pinned from here to the commit that records the
        // KEK; the unwrap below checks it was not retired just before.
        let _pin = super::state::TagPin::new(&self.state(name)?, &wrapped.root_tag);
        let back = self.kms.unwrap(&wrapped).map_err(|e| {
            MsdpError::kms(
                format!("new KEK of LSU {name} (root key {})", wrapped.root_tag),
                e,
            )
        })?;
        if !back.ct_eq(&key) {
            return Err(MsdpError::Refused(format!(
                "the KMS unwrapped the new KEK of LSU {name} to another key (root key {}): nothing was sealed under it",
                wrapped.root_tag
            )));
        }
        crate::util::failpoint::hit(crate::util::failpoint::KEK_CREATE)
            .map_err(|e| MsdpError::io(format!("new KEK of LSU {name}"), e))?;
        let k = self.catalog.insert_active_kek(name, |id| KekRec {
            id,
            wrapped,
            created_ns: crate::util::clock::now_ns(),
            active: true,
            sealed_segments: 0,
            sealed_bytes: 0,
        })?;
        let id = KeyId::Kek(name.into(), k.id, wrapped_digest(&k.wrapped));
        self.keys.put(id, Arc::new(key));
        tracing::info!(lsu = %name, kek = k.id, root_tag = %k.wrapped.root_tag, "new active KEK");
        // The KEK is recorded: a file that cannot be written now is
        // written by the next commit (before it) or gc.
        if let Err(e) = self.save_keydict(name, None) {
            tracing::warn!(lsu = %name, "key dictionary file not written: {e}");
        }
        Ok(k)
    }

    /// The record of LSU `name`.
    pub(crate) fn lsu_rec(&self, name: &str) -> Result<LsuRec, MsdpError> {
        self.catalog
            .lsu(name)?
            .ok_or_else(|| MsdpError::NoLsu(name.into()))
    }
}

/// Whether a KEK reached the count, bytes or age limit of the LSU's policy.
fn needs_rotation(rec: &LsuRec, k: &KekRec) -> bool {
    let p = rec.policy;
    let age = (crate::util::clock::now_ns() - k.created_ns).max(0) as u64 / 1_000_000_000;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::KekPolicy;
    use crate::testing::store_with_lsu;

    /// Readers missing one key at once make one KMS call between them.
    #[test]
    fn one_fetch_serves_every_reader_waiting_for_the_same_key() {
        let cache = Arc::new(KeyCache::new(Duration::from_secs(60)));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                std::thread::spawn(move || {
                    cache
                        .get(KeyId::Legacy("K".into()), || {
                            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(100));
                            Ok(SecretKey::from_slice(&[7; 32]).expect("32 bytes"))
                        })
                        .map(drop)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(cache.fetching.is_idle(), "no fetch lock left behind");
    }

    /// An unwrapped KEK is wiped when its cache time is over, even if
    /// nothing asks for a key again (a sweeper, not only the next lookup).
    #[test]
    fn unwrapped_keys_are_wiped_when_they_expire_unasked() {
        let (_t, s) = crate::testing::store_with(|c| c.kek_cache_secs = 1);
        crate::testing::add_lsu(&s, KekPolicy::default());
        s.msdp.active_kek("L").unwrap();
        assert!(s.msdp.keys.len() > 0);
        std::thread::sleep(std::time::Duration::from_millis(2600));
        assert_eq!(s.msdp.keys.len(), 0, "expired keys wiped with no lookup");
    }

    /// A KEK record is never overwritten: each insert gets the next id.
    #[test]
    fn kek_ids_are_allocated_and_inserted_in_one_transaction() {
        let (_t, s) = store_with_lsu(KekPolicy::default());
        let w = s.catalog.keks("L").unwrap()[0].wrapped.clone();
        let a = s
            .catalog
            .insert_active_kek("L", |id| KekRec {
                id,
                wrapped: w.clone(),
                created_ns: 0,
                active: true,
                sealed_segments: 0,
                sealed_bytes: 0,
            })
            .unwrap();
        assert_eq!(a.id, 2);
        let clash = s.catalog.insert_active_kek("L", |_| KekRec {
            id: 2,
            wrapped: w.clone(),
            created_ns: 0,
            active: true,
            sealed_segments: 0,
            sealed_bytes: 0,
        });
        assert!(clash.is_err(), "an existing KEK id is refused");
        let ids: Vec<u32> = s.catalog.keks("L").unwrap().iter().map(|k| k.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(s.catalog.lsu("L").unwrap().unwrap().active_kek, Some(2));
    }

    /// Writers that find the active KEK due for rotation at the same
    /// moment make one new KEK between them, and each gets the key the
    /// key dictionary holds.
    #[test]
    fn writers_starting_together_make_one_new_kek() {
        let policy = KekPolicy {
            max_segments: 1,
            ..KekPolicy::default()
        };
        let (_t, s) = store_with_lsu(policy);
        let w = s.catalog.keks("L").unwrap()[0].wrapped.clone();
        // The active KEK reached its limit.
        let full = s
            .catalog
            .insert_active_kek("L", |id| KekRec {
                id,
                wrapped: w,
                created_ns: 0,
                active: true,
                sealed_segments: 5,
                sealed_bytes: 0,
            })
            .unwrap();
        let msdp = s.msdp.clone();
        let got: Vec<(u32, [u8; 32])> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    sc.spawn(|| {
                        let (k, key) = msdp.active_kek("L").unwrap();
                        (k.id, *key.expose_secret())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ids: std::collections::BTreeSet<u32> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids.len(), 1, "one new KEK: {ids:?}");
        let id = *ids.iter().next().unwrap();
        assert_eq!(id, full.id + 1);
        msdp.forget_keys();
        let rec = s
            .catalog
            .keks("L")
            .unwrap()
            .into_iter()
            .find(|k| k.id == id)
            .unwrap();
        let stored = msdp.kek("L", &rec).unwrap();
        for (_, key) in got {
            assert_eq!(&key, stored.expose_secret());
        }
    }
}
