//! The catalog's answer to the KMS question "who uses this key?".

use std::sync::Arc;

use super::{Catalog, StoredKey};
use crate::kms::KeyUsers;

/// Tells the KMS which images use a key tag.
pub struct CatalogUsers(pub Arc<Catalog>);

impl KeyUsers for CatalogUsers {
    fn using(&self, tag: &str) -> Vec<String> {
        let Ok(images) = self.0.images() else {
            return vec!["the catalog (unreadable: refusing to be safe)".into()];
        };
        let users: Vec<String> = images
            .iter()
            .filter(|i| i.key_tag.as_deref() == Some(tag))
            .map(|i| format!("image {}/{}", i.pool, i.path))
            .collect();
        match users.len() {
            0..=5 => users,
            n => {
                let mut u = users[..5].to_vec();
                u.push(format!("and {} more images", n - 5));
                u
            }
        }
    }

    /// LSUs whose KEKs or fingerprint key are wrapped under `tag`, or
    /// whose legacy segments are sealed under it (NetBackup's MSDP rule: the keys of
    /// an LSU's key dictionary stay active or inactive), and images under a
    /// retention lock encrypted under it.
    fn pinning(&self, tag: &str) -> Vec<String> {
        let mut users = self.lsus_pinning(tag);
        users.extend(self.locked_needing(tag, false));
        users
    }

    fn compliance_locked(&self, tag: &str) -> Vec<String> {
        self.locked_needing(tag, true)
    }
}

impl CatalogUsers {
    /// Locked images whose data needs `tag` (a tape image encrypted under
    /// it, an image of an LSU whose keys it wraps), with their unlock time;
    /// only those under compliance retention when `compliance`.
    fn locked_needing(&self, tag: &str, compliance: bool) -> Vec<String> {
        let Ok(locks) = self.0.locks() else {
            return vec!["the catalog (unreadable: refusing to be safe)".into()];
        };
        let lsus = self.lsus_pinning(tag);
        let policies: std::collections::HashMap<_, _> =
            self.0.worms().unwrap_or_default().into_iter().collect();
        let now = self.0.clock().now_ns();
        let mut out = Vec::new();
        for (id, lock) in locks.iter().filter(|(_, l)| l.active(now)) {
            let Ok(Some(img)) = self.0.image(*id) else {
                continue;
            };
            let needs = img.key_tag.as_deref() == Some(tag)
                || lsus.contains(&format!("LSU {}", img.pool.trim_start_matches("msdp/")));
            let strict = policies
                .get(&img.pool)
                .is_some_and(|p| p.mode == super::WormMode::Compliance);
            if needs && (!compliance || strict || lock.hold.is_some()) {
                out.push(super::retention::describe(&img, lock));
            }
        }
        out
    }

    fn lsus_pinning(&self, tag: &str) -> Vec<String> {
        let Ok(lsus) = self.0.lsus() else {
            return vec!["the catalog (unreadable: refusing to be safe)".into()];
        };
        lsus.into_iter()
            .filter(|l| {
                let fp = matches!(&l.fp_key, StoredKey::Wrapped(w) if w.root_tag == tag);
                let kek = self
                    .0
                    .keks(&l.name)
                    .map(|ks| ks.iter().any(|k| k.wrapped.root_tag == tag))
                    .unwrap_or(true);
                fp || kek || l.legacy_tags.iter().any(|t| t == tag)
            })
            .map(|l| format!("LSU {}", l.name))
            .collect()
    }
}
