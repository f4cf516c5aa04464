//! [`KmipKms`]: the [`KmsClient`] of a store whose keys live in KMIP
//! servers. It fails over between servers by priority, retries with backoff
//! within a bounded time, holds a failed server off for a few seconds so
//! that later calls fail fast instead of queueing, caches fetched tape keys
//! for a bounded time (zeroized on expiry), and wraps LSU KEKs with the
//! server's Encrypt/Decrypt so root keys never leave the server:
//! encrypt-then-MAC, the MAC key derived from the root key by a Decrypt of
//! a fixed label, so an altered wrapped key fails before the server
//! decrypts anything, and every failure looks the same (no padding
//! oracle). Only AES-256 keys are used; a root key must allow Encrypt and
//! Decrypt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use zeroize::Zeroizing;

use super::KmipConfig;
use super::conn::Conn;
use super::msg::{self, KeyAttrs, KmipState, Op, Refusal};
use super::ttlv::Item;
use crate::crypto::{self, SecretKey};
use crate::kms::{KeyState, KmsClient, KmsError, TaggedKey, WrappedKey};

/// Rounds over the server list within one call.
const ROUNDS: u32 = 3;
/// Longest time a failed server is skipped.
const MAX_HOLD: Duration = Duration::from_secs(5);

/// Result reason "General Failure": the server is in trouble, not saying no.
const GENERAL_FAILURE: u32 = 0x100;
/// Result reasons that mean "this key is not available to you".
const MISSING_KEY_REASONS: [u32; 5] = [
    msg::REASON_ITEM_NOT_FOUND,
    0x0C, // Permission Denied
    0x13, // Key Value Not Present
    0x16, // Sensitive
    0x17, // Not Extractable
];

/// A key fetched with Get, kept until `fetched + ttl`.
struct Cached {
    key: SecretKey,
    state: KeyState,
    fetched: Instant,
}

/// Health of one server.
#[derive(Default)]
struct Health {
    failures: u32,
    hold_until: Option<Instant>,
    last_error: Option<String>,
}

struct Server {
    conn: Conn,
    health: Mutex<Health>,
}

/// The last answer, for `kms status`.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub server: String,
    pub operation: &'static str,
    pub millis: f64,
}

/// One server's line in `kms status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub address: String,
    pub priority: u32,
    pub ok: bool,
    pub millis: Option<f64>,
    pub error: Option<String>,
}

/// A key as `kms listkeys` shows it for a KMIP store.
#[derive(Debug, Clone, Serialize)]
pub struct KmipKeyInfo {
    pub group: String,
    pub name: String,
    pub tag: String,
    pub state: KeyState,
    pub uid: String,
    pub since: i64,
}

/// The KMIP backend.
pub struct KmipKms {
    servers: Vec<Server>,
    key_ttl: Duration,
    budget: Duration,
    tags: RwLock<HashMap<String, String>>,
    keys: Mutex<HashMap<String, Cached>>,
    active: Mutex<HashMap<String, (String, Instant)>>,
    /// Wrap MAC keys by root key tag, kept like fetched keys.
    mac_keys: Mutex<HashMap<String, Cached>>,
    last: Mutex<Option<Answer>>,
}

/// A kmsfs key tag for a KMIP unique identifier: 128 bits of SHA-256, so it
/// fits where tags are written on media, and is the same on every host.
pub fn tag_of(uid: &str) -> String {
    hex::encode(&crypto::name_digest(crypto::labels::KMIP_TAG, uid.as_bytes())[..16])
}

fn state_of(s: Option<KmipState>) -> KeyState {
    match s {
        Some(KmipState::PreActive) => KeyState::Prelive,
        Some(KmipState::Active) => KeyState::Active,
        Some(KmipState::Deactivated) => KeyState::Inactive,
        Some(KmipState::Compromised) => KeyState::Deprecated,
        Some(KmipState::Destroyed | KmipState::DestroyedCompromised) | None => KeyState::Terminated,
    }
}

/// Orders UIDs numerically when they are numbers (PyKMIP), else as text.
fn uid_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

impl KmipKms {
    /// A client for `cfg`; `budget` bounds every call (the store's KMS timeout).
    pub fn new(cfg: &KmipConfig, budget: Duration) -> Self {
        let mut list = cfg.servers.clone();
        list.sort_by_key(|s| s.priority);
        let servers = list
            .into_iter()
            .map(|s| Server {
                conn: Conn::new(
                    s,
                    Duration::from_millis(cfg.connect_timeout_ms),
                    Duration::from_millis(cfg.io_timeout_ms),
                ),
                health: Mutex::new(Health::default()),
            })
            .collect();
        Self {
            servers,
            key_ttl: Duration::from_secs(cfg.key_cache_secs),
            budget,
            tags: RwLock::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            mac_keys: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
        }
    }

    /// The configured servers' addresses, by priority.
    pub fn addresses(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| s.conn.server.address.clone())
            .collect()
    }

    /// The last successful answer: which server, which operation, how long.
    pub fn last_answer(&self) -> Option<Answer> {
        self.last.lock().clone()
    }

    /// Asks every server directly (a Locate), ignoring hold-offs: for `kms status`.
    pub fn probe(&self) -> Vec<ServerStatus> {
        self.servers
            .iter()
            .map(|s| {
                let start = Instant::now();
                let r = s.conn.exchange(&msg::locate(Some("kmsfs-status-probe")));
                let millis = start.elapsed().as_secs_f64() * 1000.0;
                let (ok, error) = match r.as_ref().map(msg::payload) {
                    Ok(Ok(_)) => (true, None),
                    Ok(Err(Some(r))) => (true, Some(r.message)),
                    Ok(Err(None)) => (false, Some("answer is not a KMIP response".into())),
                    Err(e) => {
                        s.conn.reset();
                        (false, Some(e.to_string()))
                    }
                };
                if ok {
                    *s.health.lock() = Health::default();
                }
                ServerStatus {
                    address: s.conn.server.address.clone(),
                    priority: s.conn.server.priority,
                    ok,
                    millis: ok.then_some(millis),
                    error,
                }
            })
            .collect()
    }

    /// The keys of a group, or of every group: what the server holds.
    pub fn list(&self, group: Option<&str>) -> Result<Vec<KmipKeyInfo>, KmsError> {
        let subject = group.unwrap_or("all keys");
        let uids = msg::uids(&self.run(Op::Locate, &msg::locate(group), subject)?);
        let mut out = Vec::new();
        for uid in uids {
            let a = self.attrs(&uid)?;
            let tag = tag_of(&uid);
            self.tags.write().insert(tag.clone(), uid.clone());
            out.push(KmipKeyInfo {
                group: a.groups.first().cloned().unwrap_or_default(),
                name: a.name.unwrap_or_default(),
                tag,
                state: state_of(a.state),
                uid,
                since: a.since,
            });
        }
        out.sort_by(|a, b| (&a.group, a.since).cmp(&(&b.group, b.since)));
        Ok(out)
    }

    /// Drops cached keys older than the key cache time (zeroized on drop).
    pub fn sweep(&self) {
        let ttl = self.key_ttl;
        self.keys.lock().retain(|_, c| c.fetched.elapsed() < ttl);
        self.mac_keys
            .lock()
            .retain(|_, c| c.fetched.elapsed() < ttl);
    }

    /// Sweeps the key cache every second while the backend lives, so an
    /// expired key is wiped even if nothing asks for it again.
    pub fn start_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("kmip-key-sweeper".into())
            .spawn(move || {
                while let Some(k) = weak.upgrade() {
                    k.sweep();
                    drop(k);
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no key cache sweeper: expired keys are wiped on next use");
        }
    }

    /// Runs one operation against the servers: by priority, skipping servers
    /// held off after a failure, a few rounds with backoff, never longer than
    /// the budget. `Ok(Err(refusal))` is the server's answer "no".
    fn call(&self, op: Op, request: &[u8]) -> Result<Result<Item, Refusal>, KmsError> {
        let mut backoff = crate::kms::backoff::Backoff::new(self.budget);
        let start = Instant::now();
        let mut errors: Vec<String> = Vec::new();
        let candidates: Vec<&Server> = self.servers.iter().filter(|s| !s.held_off()).collect();
        if candidates.is_empty() {
            return Err(self.unreachable(op, start, self.held_errors()));
        }
        for round in 0..ROUNDS {
            for s in &candidates {
                if backoff.spent() {
                    break;
                }
                let t = Instant::now();
                match s.conn.exchange(request).map(|item| msg::payload(&item)) {
                    Ok(Ok(payload)) => {
                        self.answered(s, op, t);
                        return Ok(Ok(payload));
                    }
                    Ok(Err(Some(r))) if r.reason == GENERAL_FAILURE => {
                        s.conn.reset();
                        errors.push(s.error(format!("General Failure: {}", r.message)));
                    }
                    Ok(Err(Some(refusal))) => {
                        self.answered(s, op, t);
                        return Ok(Err(refusal));
                    }
                    Ok(Err(None)) => errors.push(s.error("answer is not a KMIP response".into())),
                    Err(e) => {
                        s.conn.reset();
                        errors.push(s.error(e.to_string()));
                    }
                }
            }
            if round + 1 < ROUNDS {
                tracing::warn!(
                    operation = op.name(),
                    "KMIP servers not answering, retrying in {:?}",
                    backoff.next_delay()
                );
                if !backoff.wait() {
                    break;
                }
            }
        }
        for s in candidates {
            s.failed();
        }
        Err(self.unreachable(op, start, errors))
    }

    /// The server answered (yes or no): it is healthy, and `kms status` says so.
    fn answered(&self, s: &Server, op: Op, t: Instant) {
        *s.health.lock() = Health::default();
        *self.last.lock() = Some(Answer {
            server: s.conn.server.address.clone(),
            operation: op.name(),
            millis: t.elapsed().as_secs_f64() * 1000.0,
        });
    }

    fn held_errors(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| {
                let h = s.health.lock();
                format!(
                    "{}: {} (held off after {} failures)",
                    s.conn.server.address,
                    h.last_error.as_deref().unwrap_or("not answering"),
                    h.failures
                )
            })
            .collect()
    }

    fn unreachable(&self, op: Op, start: Instant, mut errors: Vec<String>) -> KmsError {
        errors.dedup();
        let why = format!(
            "KMIP {} failed on every server: {}",
            op.name(),
            errors.join("; ")
        );
        tracing::error!(operation = op.name(), elapsed = ?start.elapsed(), "{why}");
        KmsError::Unreachable {
            secs: start.elapsed().as_secs(),
            why,
        }
    }

    /// Runs `op` and turns a refusal into the matching error.
    fn run(&self, op: Op, request: &[u8], subject: &str) -> Result<Item, KmsError> {
        self.call(op, request)?.map_err(|r| refused(op, subject, r))
    }

    /// The unique identifier behind a tag (refreshing the map on a miss).
    fn uid_of(&self, tag: &str) -> Result<String, KmsError> {
        if let Some(uid) = self.tags.read().get(tag) {
            return Ok(uid.clone());
        }
        let all = msg::uids(&self.run(Op::Locate, &msg::locate(None), "all keys")?);
        let mut map = self.tags.write();
        for uid in all {
            map.insert(tag_of(&uid), uid);
        }
        map.get(tag)
            .cloned()
            .ok_or_else(|| KmsError::NoSuchTag(tag.to_string()))
    }

    fn attrs(&self, uid: &str) -> Result<KeyAttrs, KmsError> {
        let p = self.run(Op::GetAttributes, &msg::get_attributes(uid), uid)?;
        Ok(msg::key_attrs(&p))
    }

    /// The newest active key of a group (several may be active) with its
    /// attributes. The server filters by state, so the cost does not grow
    /// with the retired keys a group gathers over the years.
    fn newest_active(&self, group: &str) -> Result<(String, String, KeyAttrs), KmsError> {
        let active = msg::locate_active(group);
        let uids = msg::uids(&self.run(Op::Locate, &active, group)?);
        if uids.is_empty() {
            let any = msg::uids(&self.run(Op::Locate, &msg::locate(Some(group)), group)?);
            return Err(if any.is_empty() {
                KmsError::NoSuchGroup(group.to_string())
            } else {
                KmsError::NoActiveKey(group.to_string())
            });
        }
        let mut best: Option<(KeyAttrs, String)> = None;
        for uid in uids {
            self.tags.write().insert(tag_of(&uid), uid.clone());
            let a = self.attrs(&uid)?;
            if a.state != Some(KmipState::Active) {
                continue;
            }
            let newer = match &best {
                None => true,
                Some((b, buid)) => a
                    .since
                    .cmp(&b.since)
                    .then_with(|| uid_order(&uid, buid))
                    .is_gt(),
            };
            if newer {
                best = Some((a, uid));
            }
        }
        let (a, uid) = best.ok_or_else(|| KmsError::NoActiveKey(group.to_string()))?;
        Ok((tag_of(&uid), uid, a))
    }

    /// The MAC key of wrapped keys under root key `uid`: HKDF of 32 bytes
    /// of the root key's AES-CTR keystream at a nonce bound to its tag,
    /// got with a Decrypt (not an Encrypt: a root key no longer active for
    /// new wraps may still be allowed to unwrap).
    fn mac_key(&self, root_tag: &str, uid: &str) -> Result<SecretKey, KmsError> {
        if let Some(c) = self.mac_keys.lock().get(root_tag)
            && c.fetched.elapsed() < self.key_ttl
        {
            return Ok(c.key.duplicate());
        }
        let label = crypto::name_digest(crypto::labels::KMIP_WRAP_MAC_LABEL, root_tag.as_bytes());
        let nonce: [u8; 16] = label[..16].try_into().expect("16 bytes");
        let p = self.run(Op::Decrypt, &msg::keystream(uid, &nonce, 32), root_tag)?;
        let out = Zeroizing::new(msg::data(&p).unwrap_or_default().to_vec());
        if out.len() != 32 {
            return Err(KmsError::UnfitKey {
                key: root_tag.to_string(),
                why: format!(
                    "KMIP key {uid}: an AES-CTR Decrypt of 32 bytes gave {} bytes",
                    out.len()
                ),
            });
        }
        let ikm = SecretKey::from_slice(&out).expect("32 bytes");
        let key = crypto::derive_subkey(&ikm, b"", crypto::labels::KMIP_WRAP_MAC_KEY);
        self.mac_keys.lock().insert(
            root_tag.to_string(),
            Cached {
                key: key.duplicate(),
                state: KeyState::Active,
                fetched: Instant::now(),
            },
        );
        Ok(key)
    }

    /// A key from the cache if fresh; expired entries are dropped (zeroized).
    fn cached(&self, tag: &str) -> Option<(SecretKey, KeyState)> {
        let mut keys = self.keys.lock();
        let fresh = keys
            .get(tag)
            .is_some_and(|c| c.fetched.elapsed() < self.key_ttl);
        if !fresh {
            keys.remove(tag);
            return None;
        }
        keys.get(tag).map(|c| (c.key.duplicate(), c.state))
    }

    /// Fetches a key with Get (after checking its state) and caches it.
    fn fetch(&self, tag: &str, purpose: &'static str) -> Result<SecretKey, KmsError> {
        if let Some((key, _)) = self.cached(tag) {
            return Ok(key);
        }
        let uid = self.uid_of(tag)?;
        let a = self.attrs(&uid)?;
        check_fit(&uid, tag, &a, false)?;
        let state = state_of(a.state);
        if !matches!(state, KeyState::Active | KeyState::Inactive) {
            return Err(KmsError::KeyUnusable {
                tag: tag.to_string(),
                state,
                purpose,
            });
        }
        let p = self.run(Op::Get, &msg::get(&uid), tag)?;
        let key = msg::key_material(&p)
            .and_then(SecretKey::from_slice)
            .ok_or_else(|| {
                KmsError::Container(format!("KMIP key {tag} is not a 256-bit symmetric key"))
            })?;
        self.keys.lock().insert(
            tag.to_string(),
            Cached {
                key: key.duplicate(),
                state,
                fetched: Instant::now(),
            },
        );
        Ok(key)
    }
}

impl Server {
    fn held_off(&self) -> bool {
        self.health
            .lock()
            .hold_until
            .is_some_and(|t| Instant::now() < t)
    }

    /// Records what went wrong; returns it with the server's address.
    fn error(&self, what: String) -> String {
        let line = format!("{}: {what}", self.conn.server.address);
        self.health.lock().last_error = Some(what);
        line
    }

    /// Holds the server off for a while that grows with its failures.
    fn failed(&self) {
        let mut h = self.health.lock();
        h.failures += 1;
        let hold = Duration::from_millis(500 << h.failures.min(4)).min(MAX_HOLD);
        h.hold_until = Some(Instant::now() + hold);
    }
}

fn refused(op: Op, subject: &str, r: Refusal) -> KmsError {
    if r.reason == msg::REASON_ITEM_NOT_FOUND {
        return KmsError::NoSuchTag(subject.to_string());
    }
    KmsError::Refused {
        operation: op.name(),
        subject: subject.to_string(),
        reason: r.reason,
        message: r.message,
        missing_key: MISSING_KEY_REASONS.contains(&r.reason),
    }
}

/// Whether a key is one kmsfs uses: AES-256, and for a root key with a
/// usage mask that allows Encrypt and Decrypt.
fn check_fit(uid: &str, tag: &str, a: &KeyAttrs, root: bool) -> Result<(), KmsError> {
    let unfit = |why: String| {
        Err(KmsError::UnfitKey {
            key: tag.to_string(),
            why: format!("KMIP key {uid}: {why}"),
        })
    };
    if a.algorithm != Some(msg::AES) || a.length != Some(256) {
        return unfit(format!(
            "it is not an AES-256 key (algorithm {:?}, length {:?}); kmsfs uses only AES-256 keys",
            a.algorithm, a.length
        ));
    }
    let both = msg::USAGE_ENCRYPT | msg::USAGE_DECRYPT;
    if root && a.usage.is_none_or(|u| u & both != both) {
        return unfit(
            "its Cryptographic Usage Mask does not allow both Encrypt and Decrypt, which a root key needs".into(),
        );
    }
    Ok(())
}

impl KmsClient for KmipKms {
    fn describe(&self) -> String {
        let list: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{} (priority {})",
                    s.conn.server.address, s.conn.server.priority
                )
            })
            .collect();
        format!("KMIP {}", list.join(", "))
    }

    fn active_key(&self, group: &str) -> Result<TaggedKey, KmsError> {
        let fresh = self.newest_active(group).and_then(|(tag, uid, a)| {
            check_fit(&uid, &tag, &a, false)?;
            let key = self.fetch(&tag, "encrypt")?;
            Ok(TaggedKey { tag, key })
        });
        match fresh {
            Ok(k) => {
                self.active
                    .lock()
                    .insert(group.to_string(), (k.tag.clone(), Instant::now()));
                Ok(k)
            }
            Err(e) if e.is_temporary() => self.active_from_cache(group).ok_or(e),
            Err(e) => Err(e),
        }
    }

    fn key_by_tag(&self, tag: &str) -> Result<SecretKey, KmsError> {
        self.fetch(tag, "decrypt")
    }

    fn key_state(&self, tag: &str) -> Result<Option<KeyState>, KmsError> {
        let uid = match self.uid_of(tag) {
            Ok(uid) => uid,
            Err(KmsError::NoSuchTag(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match self.attrs(&uid) {
            Ok(a) => Ok(Some(state_of(a.state))),
            Err(KmsError::NoSuchTag(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn wrap(&self, group: &str, key: &SecretKey) -> Result<WrappedKey, KmsError> {
        let (root_tag, uid, a) = self.newest_active(group)?;
        check_fit(&uid, &root_tag, &a, true)?;
        let iv = crypto::random_array::<{ crypto::KMIP_IV_LEN }>()?;
        let p = self.run(
            Op::Encrypt,
            &msg::encrypt(&uid, &iv, key.expose_secret()),
            &root_tag,
        )?;
        let c = msg::data(&p)
            .filter(|c| c.len() == crypto::KMIP_CBC_LEN)
            .ok_or_else(|| {
                KmsError::Container(format!(
                    "KMIP Encrypt under {root_tag} did not return {} bytes",
                    crypto::KMIP_CBC_LEN
                ))
            })?;
        let mac_key = self.mac_key(&root_tag, &uid)?;
        let w = WrappedKey {
            sealed: crypto::kmip_wrap_v2(&mac_key, &root_tag, &iv, c),
            root_tag,
        };
        // Nothing is sealed under a wrap the server would not give back.
        if !self.unwrap(&w)?.ct_eq(key) {
            return Err(KmsError::Container(format!(
                "the KMIP server unwrapped a key it wrapped under {} to another key",
                w.root_tag
            )));
        }
        Ok(w)
    }

    fn unwrap(&self, w: &WrappedKey) -> Result<SecretKey, KmsError> {
        let uid = self.uid_of(&w.root_tag)?;
        check_fit(&uid, &w.root_tag, &self.attrs(&uid)?, true)?;
        let parts =
            crypto::kmip_unframe(&w.sealed, &w.root_tag, || self.mac_key(&w.root_tag, &uid))?;
        match parts {
            Some(crypto::KmipWrapped::V2 { iv, cbc }) => self.unwrap_v2(w, &uid, iv, cbc),
            Some(crypto::KmipWrapped::V1 { iv, data }) => self.unwrap_v1(w, &uid, iv, data),
            None => Err(does_not_unwrap(&w.root_tag)),
        }
    }
}

/// The one error of every wrapped key that does not unwrap, whatever the
/// reason: an attacker who alters wrapped keys learns nothing from it.
fn does_not_unwrap(root_tag: &str) -> KmsError {
    KmsError::Container(format!(
        "a key wrapped under {root_tag} does not unwrap (altered or damaged, or wrapped under another root key)"
    ))
}

impl KmipKms {
    /// Format 2, its MAC already checked (`crypto::kmip_unframe`): now the
    /// server decrypts.
    fn unwrap_v2(
        &self,
        w: &WrappedKey,
        uid: &str,
        iv: &[u8],
        c: &[u8],
    ) -> Result<SecretKey, KmsError> {
        // Authentic bytes: a refusal now is about the key's state, not them.
        let p = self.run(Op::Decrypt, &msg::decrypt(uid, iv, c), &w.root_tag)?;
        let plain = Zeroizing::new(msg::data(&p).unwrap_or_default().to_vec());
        SecretKey::from_slice(&plain).ok_or_else(|| does_not_unwrap(&w.root_tag))
    }

    /// Format 1 (MAC-then-encrypt, read for keys wrapped before format 2):
    /// every failure of the server's Decrypt or of the check value that is
    /// not about the key's state gives the same error.
    fn unwrap_v1(
        &self,
        w: &WrappedKey,
        uid: &str,
        iv: &[u8],
        data: &[u8],
    ) -> Result<SecretKey, KmsError> {
        let p = match self.run(Op::Decrypt, &msg::decrypt(uid, iv, data), &w.root_tag) {
            Ok(p) => p,
            Err(e) if e.is_temporary() || e.is_missing_key() => return Err(e),
            Err(_) => return Err(does_not_unwrap(&w.root_tag)),
        };
        let plain = Zeroizing::new(msg::data(&p).unwrap_or_default().to_vec());
        crypto::kmip_v1_key(&plain, &w.root_tag).ok_or_else(|| does_not_unwrap(&w.root_tag))
    }
}

impl KmipKms {
    /// The group's last active key while no server answers, if it is still
    /// within the key cache time (NetBackup's drives keep writing too).
    fn active_from_cache(&self, group: &str) -> Option<TaggedKey> {
        let (tag, _) = self.active.lock().get(group).cloned()?;
        let (key, state) = self.cached(&tag)?;
        (state == KeyState::Active).then(|| {
            tracing::warn!(group, tag = %tag, "KMIP unreachable: using the cached active key");
            TaggedKey { tag, key }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_fit_on_media() {
        assert_eq!(tag_of("1"), tag_of("1"));
        assert_ne!(tag_of("1"), tag_of("2"));
        assert_eq!(tag_of("1").len(), 32);
        // Pinned (cross-checked with Python hashlib): a tag written on a
        // tape must find its key forever.
        assert_eq!(tag_of("1"), "2939bbb63bb53012cf1f37ec110e4e93");
    }

    #[test]
    fn wrap_check_value_golden_vector() {
        // Python: hmac.new(bytes(range(32)), b"kmsfs bound check value v1"
        //   + b"kmsfs kmip wrap v1" + tag, "sha256").hexdigest()[:32]
        let key = SecretKey::from_slice(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let kcv = crypto::bound_check_value(
            &key,
            &[
                crypto::labels::KMIP_WRAP,
                b"2939bbb63bb53012cf1f37ec110e4e93",
            ]
            .concat(),
        );
        assert_eq!(hex::encode(kcv), "68a0ed386401562ad6d5cdb2f5afa25b");
    }

    #[test]
    fn states_map_to_kmsfs_states() {
        assert_eq!(state_of(Some(KmipState::PreActive)), KeyState::Prelive);
        assert_eq!(state_of(Some(KmipState::Active)), KeyState::Active);
        assert_eq!(state_of(Some(KmipState::Deactivated)), KeyState::Inactive);
        assert_eq!(state_of(Some(KmipState::Compromised)), KeyState::Deprecated);
        assert_eq!(state_of(Some(KmipState::Destroyed)), KeyState::Terminated);
    }

    #[test]
    fn expired_keys_are_swept() {
        let mut cfg = KmipConfig::new(vec![]);
        cfg.key_cache_secs = 0;
        let k = KmipKms::new(&cfg, Duration::from_secs(1));
        k.keys.lock().insert(
            "t".into(),
            Cached {
                key: SecretKey::random().unwrap(),
                state: KeyState::Active,
                fetched: Instant::now(),
            },
        );
        k.sweep();
        assert!(k.keys.lock().is_empty());
    }

    #[test]
    fn numeric_uids_order_as_numbers() {
        assert!(uid_order("10", "9").is_gt());
        assert!(uid_order("b", "a").is_gt());
    }

    #[test]
    fn an_unreachable_server_fails_fast_and_is_named() {
        let cfg = KmipConfig::new(vec![super::super::KmipServer {
            address: "127.0.0.1:1".into(),
            priority: 1,
            ca: "/nonexistent".into(),
            cert: "/nonexistent".into(),
            key: "/nonexistent".into(),
            server_name: None,
        }]);
        let k = KmipKms::new(&cfg, Duration::from_secs(2));
        let t = Instant::now();
        let e = k.key_by_tag(&tag_of("1")).err().unwrap().to_string();
        assert!(e.contains("127.0.0.1:1") && e.contains("Locate"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        let t = Instant::now();
        let e = k.key_state(&tag_of("1")).err().unwrap().to_string();
        assert!(e.contains("held off"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "held off: fails fast"
        );
    }
}
