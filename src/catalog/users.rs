//! The catalog's answer to the KMS question "who uses this key?".

use std::sync::Arc;

use super::Catalog;
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

    fn pinning(&self, _tag: &str) -> Vec<String> {
        Vec::new()
    }
}
