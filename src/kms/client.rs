//! [`KmsClient`]: the only way the rest of kmsfs gets keys, whatever the
//! backend. The embedded keystore is [`EmbeddedKms`]; [`Retrying`] adds the
//! bounded retry with backoff that every backend gets for temporary failures.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::{KeyState, Keystore, KmsError};
use crate::crypto::{self, SecretKey};

/// A key with its tag, as handed to a tape drive.
pub struct TaggedKey {
    pub tag: String,
    pub key: SecretKey,
}

/// A key wrapped under a group's root key; stored by the caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// Tag of the root key that wraps it.
    pub root_tag: String,
    /// `nonce || AES-256-GCM(root, key) || tag`, AAD `"kmsfs wrap v1" || root_tag`.
    pub sealed: Vec<u8>,
}

/// Who uses keys: the catalog answers for tape images and LSUs.
pub trait KeyUsers: Send + Sync {
    /// Users whose data needs this key: it may not be deleted.
    fn using(&self, tag: &str) -> Vec<String>;
    /// Users that pin this key to active/inactive (LSU root keys): it may
    /// not be deprecated, terminated or deleted.
    fn pinning(&self, tag: &str) -> Vec<String>;
    /// Images under a compliance retention lock that need this key: not
    /// even `modifykey --force` may take it away.
    fn compliance_locked(&self, tag: &str) -> Vec<String>;
}

/// Nobody uses any key (a keystore outside a store, and tests).
pub struct NoUsers;

impl KeyUsers for NoUsers {
    fn using(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn pinning(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn compliance_locked(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
}

/// What every KMS backend offers the data paths.
pub trait KmsClient: Send + Sync {
    /// Which backend answers, for `status`.
    fn describe(&self) -> String;
    /// The active key of `group` and its tag, for encrypting new data.
    fn active_key(&self, group: &str) -> Result<TaggedKey, KmsError>;
    /// The key with `tag`, for decrypting; fails unless active or inactive.
    fn key_by_tag(&self, tag: &str) -> Result<SecretKey, KmsError>;
    /// The state of the key with `tag`, or `None` if the KMS lacks it.
    fn key_state(&self, tag: &str) -> Result<Option<KeyState>, KmsError>;
    /// Wraps `key` under the active root key of `group`; the root key stays in the KMS.
    fn wrap(&self, group: &str, key: &SecretKey) -> Result<WrappedKey, KmsError>;
    /// Unwraps a key wrapped by [`KmsClient::wrap`].
    fn unwrap(&self, wrapped: &WrappedKey) -> Result<SecretKey, KmsError>;
}

fn wrap_aad(root_tag: &str) -> Vec<u8> {
    [crate::crypto::labels::WRAP_AAD, root_tag.as_bytes()].concat()
}

/// The embedded keystore as a KMS backend.
pub struct EmbeddedKms {
    ks: RwLock<Keystore>,
}

impl EmbeddedKms {
    pub fn new(ks: Keystore) -> Self {
        Self {
            ks: RwLock::new(ks),
        }
    }

    /// Runs an administrative read on the keystore.
    pub fn read<T>(&self, f: impl FnOnce(&Keystore) -> T) -> T {
        f(&self.ks.read())
    }

    /// Runs an administrative change on the keystore; the change is saved
    /// by the operation itself and seen by the next data operation.
    pub fn write<T>(&self, f: impl FnOnce(&mut Keystore) -> T) -> T {
        f(&mut self.ks.write())
    }
}

impl KmsClient for EmbeddedKms {
    fn describe(&self) -> String {
        "embedded keystore".into()
    }

    fn active_key(&self, group: &str) -> Result<TaggedKey, KmsError> {
        let (tag, key) = self.ks.read().active_key(group)?;
        Ok(TaggedKey { tag, key })
    }

    fn key_by_tag(&self, tag: &str) -> Result<SecretKey, KmsError> {
        self.ks.read().key_for_decrypt(tag)
    }

    fn key_state(&self, tag: &str) -> Result<Option<KeyState>, KmsError> {
        Ok(self.ks.read().state_of(tag))
    }

    fn wrap(&self, group: &str, key: &SecretKey) -> Result<WrappedKey, KmsError> {
        let ks = self.ks.read();
        let (root_tag, root) = ks.active_key(group)?;
        let sealed = crypto::seal(&root, &wrap_aad(&root_tag), key.expose_secret())?;
        Ok(WrappedKey { root_tag, sealed })
    }

    fn unwrap(&self, w: &WrappedKey) -> Result<SecretKey, KmsError> {
        let root = self.ks.read().key_for_decrypt(&w.root_tag)?;
        let plain = crypto::open(&root, &wrap_aad(&w.root_tag), &w.sealed)?;
        SecretKey::from_slice(&plain)
            .ok_or_else(|| KmsError::Container("wrapped key is not 32 bytes".into()))
    }
}

/// Retries temporary failures with exponential backoff, for at most `timeout`;
/// permanent failures return at once. No backend ever waits forever.
pub struct Retrying {
    inner: Arc<dyn KmsClient>,
    timeout: Duration,
}

impl Retrying {
    pub fn new(inner: Arc<dyn KmsClient>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    fn run<T>(
        &self,
        op: &str,
        f: impl Fn(&dyn KmsClient) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let mut b = super::backoff::Backoff::new(self.timeout);
        loop {
            match f(self.inner.as_ref()) {
                Err(e) if e.is_temporary() => {
                    let delay = b.next_delay();
                    tracing::warn!(op, error = %e, "KMS temporarily unavailable, retrying in {delay:?}");
                    if !b.wait() {
                        tracing::error!(op, error = %e, "KMS unreachable, giving up after {:?}", b.elapsed());
                        return Err(KmsError::Unreachable {
                            secs: self.timeout.as_secs(),
                            why: e.to_string(),
                        });
                    }
                }
                other => return other,
            }
        }
    }
}

impl KmsClient for Retrying {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn active_key(&self, group: &str) -> Result<TaggedKey, KmsError> {
        self.run("active_key", |k| k.active_key(group))
    }
    fn key_by_tag(&self, tag: &str) -> Result<SecretKey, KmsError> {
        self.run("key_by_tag", |k| k.key_by_tag(tag))
    }
    fn key_state(&self, tag: &str) -> Result<Option<KeyState>, KmsError> {
        self.run("key_state", |k| k.key_state(tag))
    }
    fn wrap(&self, group: &str, key: &SecretKey) -> Result<WrappedKey, KmsError> {
        self.run("wrap", |k| k.wrap(group, key))
    }
    fn unwrap(&self, w: &WrappedKey) -> Result<SecretKey, KmsError> {
        self.run("unwrap", |k| k.unwrap(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{HmkSource, NewKey};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// A KMS that is down for its first `down` calls: stands in for a remote
    /// server outage (the embedded backend never has one).
    struct Flaky {
        inner: EmbeddedKms,
        down: u32,
        calls: AtomicU32,
    }
    impl KmsClient for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn active_key(&self, g: &str) -> Result<TaggedKey, KmsError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.down {
                return Err(KmsError::Unreachable {
                    secs: 0,
                    why: "connection refused".into(),
                });
            }
            self.inner.active_key(g)
        }
        fn key_by_tag(&self, t: &str) -> Result<SecretKey, KmsError> {
            self.inner.key_by_tag(t)
        }
        fn key_state(&self, t: &str) -> Result<Option<KeyState>, KmsError> {
            self.inner.key_state(t)
        }
        fn wrap(&self, g: &str, k: &SecretKey) -> Result<WrappedKey, KmsError> {
            self.inner.wrap(g, k)
        }
        fn unwrap(&self, w: &WrappedKey) -> Result<SecretKey, KmsError> {
            self.inner.unwrap(w)
        }
    }

    fn embedded() -> (tempfile::TempDir, EmbeddedKms) {
        let d = tempfile::tempdir().unwrap();
        let mut ks = Keystore::create(d.path(), HmkSource::File(d.path().join("h"))).unwrap();
        ks.create_group("G", "").unwrap();
        ks.create_key(NewKey {
            group: "G",
            name: "root",
            description: "",
            passphrase: None,
            activate: true,
        })
        .unwrap();
        (d, EmbeddedKms::new(ks))
    }

    #[test]
    fn retry_recovers_from_a_short_outage_and_gives_up_on_a_long_one() {
        let (_d, e) = embedded();
        let flaky = Arc::new(Flaky {
            inner: e,
            down: 2,
            calls: AtomicU32::new(0),
        });
        let r = Retrying::new(flaky.clone(), Duration::from_secs(5));
        r.active_key("G").unwrap();
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        let (_d2, e2) = embedded();
        let down = Arc::new(Flaky {
            inner: e2,
            down: u32::MAX,
            calls: AtomicU32::new(0),
        });
        let start = Instant::now();
        let err = Retrying::new(down, Duration::from_millis(300))
            .active_key("G")
            .err()
            .unwrap();
        assert!(matches!(err, KmsError::Unreachable { .. }));
        assert!(start.elapsed() < Duration::from_secs(2), "bounded");
    }

    #[test]
    fn wrap_unwrap_and_root_key_rules() {
        let (_d, e) = embedded();
        let dek = SecretKey::random().unwrap();
        let w = e.wrap("G", &dek).unwrap();
        assert!(e.unwrap(&w).unwrap().ct_eq(&dek));
        let mut bad = w.clone();
        bad.sealed[20] ^= 1;
        assert!(e.unwrap(&bad).is_err());
        e.write(|ks| ks.modify_key("G", "root", Some(KeyState::Inactive), None, None))
            .unwrap();
        assert!(e.unwrap(&w).is_ok(), "inactive root still unwraps");
        assert!(e.wrap("G", &dek).is_err(), "no active root: no new wraps");
        e.write(|ks| ks.modify_key("G", "root", Some(KeyState::Deprecated), None, None))
            .unwrap();
        assert!(e.unwrap(&w).err().unwrap().is_missing_key());
    }
}
