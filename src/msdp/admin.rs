//! What an operator does to an LSU: create it, ask its mode and key
//! dictionary (`crcontrol --getmode`, `keydictutil --list`), make a new
//! KEK, rewrap KEKs under a new root key, change its mode (within the
//! rules: KMS mode cannot be disabled once enabled).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::keys::wrap_under_root;
use super::{DEFAULT_CHUNKING, Msdp, MsdpError};
use crate::catalog::{FileAttrs, KekPolicy, KekRec, LsuMode, LsuRec, SegKind, StoredKey};
use crate::crypto::{self, SecretKey};

/// `kmsfs lsu create`.
pub struct CreateLsu {
    pub name: String,
    pub mode: LsuMode,
    pub key_group: Option<String>,
    pub policy: KekPolicy,
    /// Containers in an S3-compatible bucket (`None`: the store's disk).
    pub cloud: Option<super::backend::CloudConfig>,
}

/// The answer of `lsu getmode`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LsuModeReport {
    pub lsu: String,
    pub mode: String,
    pub key_group: Option<String>,
    /// Legacy segments are still being converted to KEK mode.
    pub converting: bool,
    pub active_kek: Option<u32>,
    /// Root keys wrapping this LSU's KEKs, and legacy keys its segments use.
    pub root_keys: Vec<String>,
    pub legacy_keys: Vec<String>,
}

/// One line of `lsu keydict`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyDictEntry {
    pub kek_id: u32,
    pub state: String,
    pub root_key_tag: String,
    pub created_ns: i64,
    /// Segments in the index sealed with a DEK under this KEK.
    pub segments: u64,
    /// DEKs this KEK has wrapped since it was made (rotation counter).
    pub sealed_segments: u64,
    pub sealed_bytes: u64,
}

/// What `lsu rewrap` changed: KEKs and the fingerprint key now wrapped by
/// `root` (the group's active root key) that were wrapped by another.
#[derive(Debug, Default, Serialize)]
pub struct Rewrapped {
    pub keks: usize,
    pub fingerprint_keys: usize,
    pub root: String,
}

impl Msdp {
    /// Creates an LSU (and `msdp/NAME/`).
    pub fn create(&self, c: CreateLsu, attrs: FileAttrs) -> Result<LsuRec, MsdpError> {
        crate::kms::model_check_name(&c.name).map_err(|e| MsdpError::Refused(e.to_string()))?;
        if c.mode != LsuMode::None {
            self.check_key_group(&c.name, c.key_group.as_deref())?;
        }
        let group = c.key_group.clone().filter(|_| c.mode != LsuMode::None);
        if self.catalog.lsu(&c.name)?.is_some() {
            return Err(MsdpError::Refused(format!("LSU {} exists", c.name)));
        }
        let cloud = match &c.cloud {
            Some(cloud) => Some(self.place_in_cloud(&c.name, cloud)?),
            None => {
                let p = super::backend::cloud_config_path(&self.dir.join(&c.name));
                super::recover::remove_stale(&p)?;
                None
            }
        };
        let made = self.create_in_catalog(&c, group, attrs);
        let cloud_file = cloud;
        // Only while no LSU was recorded: one that was is a cloud LSU.
        if made.is_err()
            && let Some(f) = cloud_file
            && matches!(self.catalog.lsu(&c.name), Ok(None))
        {
            let _ = std::fs::remove_file(f);
        }
        made
    }

    /// Checks the bucket is reachable with the credentials and holds no
    /// LSU at the prefix, claims the prefix, and writes
    /// `lsu/NAME/cloud.json` (its path).
    fn place_in_cloud(
        &self,
        name: &str,
        cloud: &super::backend::CloudConfig,
    ) -> Result<std::path::PathBuf, MsdpError> {
        use super::backend::Backend;
        let cloud = &cloud.claimed()?;
        let s3 = super::backend::S3::open(cloud)?;
        if s3.holds_lsu()? {
            return Err(MsdpError::Refused(format!(
                "{} holds an LSU already: use another prefix, or copy the prefix to a directory and bring it back with `kmsfs lsu recover {name} --from DIR`",
                s3.describe()
            )));
        }
        // A prefix without a key dictionary holds no LSU: this store
        // claims it before it writes there (a create that failed after
        // this leaves a claim the next create of any store replaces).
        s3.claim()?;
        // The credentials may write and delete, not only read.
        s3.publish_file(".kmsfs-probe", b"kmsfs write probe")?;
        s3.remove_file(".kmsfs-probe")?;
        super::backend::write_config(&self.dir.join(name), cloud)
    }

    fn create_in_catalog(
        &self,
        c: &CreateLsu,
        group: Option<String>,
        attrs: FileAttrs,
    ) -> Result<LsuRec, MsdpError> {
        let fp = SecretKey::random()?;
        let fp_key = match &group {
            None => StoredKey::Clear(fp.expose_secret().to_vec()),
            Some(g) => StoredKey::Wrapped(wrap_under_root(self.kms.as_ref(), g, &fp, &c.name)?),
        };
        let mut rec = LsuRec {
            name: c.name.clone(),
            id: crypto::random_array()?,
            mode: c.mode,
            converting: false,
            key_group: group,
            fp_key,
            legacy_tags: Vec::new(),
            active_kek: None,
            policy: c.policy,
            chunking: DEFAULT_CHUNKING,
            chunker: 2,
            created_ns: crate::util::clock::now_ns(),
        };
        self.catalog.create_lsu(&rec, attrs)?;
        if rec.mode == LsuMode::Kms {
            let k = self.new_kek(&rec.name)?;
            rec.active_kek = Some(k.id);
        }
        self.save_keydict(&rec.name, Some(&fp))?;
        tracing::info!(lsu = %rec.name, mode = rec.mode.as_str(), key_group = rec.key_group.as_deref().unwrap_or("-"), "LSU created");
        Ok(rec)
    }

    /// A new encrypted LSU uses the key group of the encrypted
    /// LSUs already there.
    pub(super) fn check_key_group(&self, name: &str, group: Option<&str>) -> Result<(), MsdpError> {
        let group = group.ok_or_else(|| {
            MsdpError::Refused(format!("an encrypted LSU needs --key-group (LSU {name})"))
        })?;
        let other = self.catalog.lsus()?.into_iter().find(|l| {
            l.mode != LsuMode::None && l.key_group.as_deref() != Some(group) && l.name != name
        });
        if let Some(o) = other {
            let g = o.key_group.unwrap_or_default();
            return Err(MsdpError::Refused(format!(
                "encrypted LSU {} already uses key group {g}: every encrypted LSU of a store must use the same key group; use --key-group {g}",
                o.name
            )));
        }
        Ok(())
    }

    /// Where LSU `name` keeps its containers: the bucket URL and endpoint
    /// of a cloud LSU, none for a local one.
    pub fn location(&self, name: &str) -> Option<(String, String)> {
        super::backend::location(&self.dir.join(name))
    }

    /// `lsu getmode`.
    pub fn getmode(&self, name: &str) -> Result<LsuModeReport, MsdpError> {
        let rec = self.lsu_rec(name)?;
        let mut roots: Vec<String> = self
            .catalog
            .keks(name)?
            .into_iter()
            .map(|k| k.wrapped.root_tag)
            .collect();
        if let StoredKey::Wrapped(w) = &rec.fp_key {
            roots.push(w.root_tag.clone());
        }
        roots.sort();
        roots.dedup();
        Ok(LsuModeReport {
            lsu: rec.name,
            mode: rec.mode.as_str().into(),
            key_group: rec.key_group,
            converting: rec.converting,
            active_kek: rec.active_kek.filter(|_| rec.mode == LsuMode::Kms),
            root_keys: roots,
            legacy_keys: rec.legacy_tags,
        })
    }

    /// `lsu keydict`.
    pub fn keydict(&self, name: &str) -> Result<Vec<KeyDictEntry>, MsdpError> {
        self.lsu_rec(name)?;
        let mut used: HashMap<u32, u64> = HashMap::new();
        self.catalog.for_each_segment(name, |_, s| {
            if s.kind == SegKind::Kek {
                *used.entry(s.kek).or_default() += 1;
            }
        })?;
        Ok(self
            .catalog
            .keks(name)?
            .into_iter()
            .map(|k| KeyDictEntry {
                kek_id: k.id,
                state: if k.active { "active" } else { "inactive" }.into(),
                root_key_tag: k.wrapped.root_tag.clone(),
                created_ns: k.created_ns,
                segments: used.get(&k.id).copied().unwrap_or(0),
                sealed_segments: k.sealed_segments,
                sealed_bytes: k.sealed_bytes,
            })
            .collect())
    }

    /// `lsu rotate-kek`: a new active KEK; the old ones stay, inactive.
    pub fn rotate_kek(&self, name: &str) -> Result<KekRec, MsdpError> {
        let rec = self.lsu_rec(name)?;
        if rec.mode != LsuMode::Kms {
            return Err(MsdpError::Refused(format!(
                "LSU {name} is in {} mode: only a KMS-mode LSU has KEKs",
                rec.mode.as_str()
            )));
        }
        self.new_kek(name)
    }

    /// `lsu rewrap`: every KEK (and the fingerprint key) wrapped again
    /// under the group's active root key; segment data is not touched.
    /// Returns how many keys were rewrapped and the new root key tag.
    pub fn rewrap(&self, name: &str) -> Result<Rewrapped, MsdpError> {
        let state = self.state(name)?;
        // The key dictionary it rewrites could not be published there.
        state.backend.check_owner()?;
        let _keys = state.keys.lock();
        let rec = self.lsu_rec(name)?;
        let group = rec
            .key_group
            .clone()
            .filter(|_| rec.mode != LsuMode::None)
            .ok_or_else(|| {
                MsdpError::Refused(format!("LSU {name} is not encrypted: nothing to rewrap"))
            })?;
        let mut done = Rewrapped::default();
        let mut keks = Vec::new();
        let mut pins = Vec::new();
        for k in self.catalog.keks(name)? {
            crate::util::failpoint::hit(crate::util::failpoint::REWRAP)
                .map_err(|e| MsdpError::io(format!("rewrap of KEK {} of LSU {name}", k.id), e))?;
            let key = self.kek(name, &k)?;
            let (w, pin) = self.rewrapped(name, &group, &key)?;
            pins.push(pin);
            done.root = w.root_tag.clone();
            if w.root_tag != k.wrapped.root_tag {
                done.keks += 1;
            }
            keks.push((k.id, w));
        }
        let mut fp_key = None;
        if let StoredKey::Wrapped(old) = &rec.fp_key {
            let key = self.fp_key(&rec)?;
            let (w, pin) = self.rewrapped(name, &group, &key)?;
            pins.push(pin);
            if w.root_tag != old.root_tag {
                done.fingerprint_keys += 1;
            }
            done.root = w.root_tag.clone();
            fp_key = Some(StoredKey::Wrapped(w));
        }
        self.catalog.rewrap_keys(name, fp_key, &keks)?;
        drop(pins);
        self.save_keydict(name, None)?;
        tracing::info!(lsu = name, keks = done.keks, fingerprint_keys = done.fingerprint_keys, root_tag = %done.root, "keys rewrapped");
        Ok(done)
    }

    /// `key` wrapped under the group's active root key, checked to unwrap
    /// to the same key before the old wrapped form is replaced.
    fn rewrapped(
        &self,
        name: &str,
        group: &str,
        key: &SecretKey,
    ) -> Result<(crate::kms::WrappedKey, super::state::TagPin), MsdpError> {
        let w = wrap_under_root(self.kms.as_ref(), group, key, name)?;
        // Pinned until the rewrap is recorded (or fails): the unwrap below
        // checks the root key was not retired before the pin.
        let pin = super::state::TagPin::new(&self.state(name)?, &w.root_tag);
        let back = self
            .kms
            .unwrap(&w)
            .map_err(|e| MsdpError::kms(format!("rewrapped key of LSU {name}"), e))?;
        if !back.ct_eq(key) {
            return Err(MsdpError::Refused(format!(
                "the KMS unwrapped a rewrapped key of LSU {name} to another key (root key {}): nothing was changed",
                w.root_tag
            )));
        }
        Ok((w, pin))
    }

    /// `lsu setmode`: the mode is chosen at creation; this says why a
    /// change is refused (KMS mode cannot be disabled once
    /// enabled), and that a legacy LSU goes to KMS mode by `lsu convert`.
    pub fn set_mode(&self, name: &str, mode: LsuMode) -> Result<LsuRec, MsdpError> {
        let rec = self.lsu_rec(name)?;
        match (rec.mode, mode) {
            (LsuMode::None, LsuMode::None)
            | (LsuMode::Legacy, LsuMode::Legacy)
            | (LsuMode::Kms, LsuMode::Kms) => Ok(rec),
            (LsuMode::Kms | LsuMode::Legacy, LsuMode::None) => Err(MsdpError::Refused(format!(
                "LSU {name} is in {} mode: KMS encryption cannot be disabled once enabled",
                rec.mode.as_str()
            ))),
            (LsuMode::Legacy, LsuMode::Kms) => Err(MsdpError::Refused(format!(
                "LSU {name} is in legacy KMS mode: use `kmsfs lsu convert {name}` to move it and its data to KMS mode"
            ))),
            (LsuMode::Kms, LsuMode::Legacy) => Err(MsdpError::Refused(format!(
                "LSU {name} is in KMS mode: it cannot go back to legacy KMS mode"
            ))),
            (LsuMode::None, _) => Err(MsdpError::Refused(format!(
                "LSU {name} was created unencrypted and stays so (its fingerprint key was never wrapped): create an encrypted LSU with `kmsfs lsu create NAME --kms --key-group KG` and copy the images"
            ))),
        }
    }
}
