//! Who uses a KMS key, as the KMS asks before it deletes or retires one:
//! what the catalog records (images, key dictionaries, legacy tags), and
//! what writers and key operations of the running store are sealing or
//! wrapping under right now, which the catalog learns only at their commit.

use std::sync::{Arc, Weak};

use super::Msdp;
use crate::catalog::{Catalog, CatalogUsers};
use crate::kms::KeyUsers;

/// The [`KeyUsers`] of an open store.
pub struct StoreKeyUsers {
    catalog: CatalogUsers,
    msdp: Weak<Msdp>,
}

impl StoreKeyUsers {
    pub fn new(catalog: Arc<Catalog>, msdp: &Arc<Msdp>) -> Self {
        Self {
            catalog: CatalogUsers(catalog),
            msdp: Arc::downgrade(msdp),
        }
    }
}

impl KeyUsers for StoreKeyUsers {
    fn using(&self, tag: &str) -> Vec<String> {
        self.catalog.using(tag)
    }

    fn pinning(&self, tag: &str) -> Vec<String> {
        let mut users = self.catalog.pinning(tag);
        if let Some(m) = self.msdp.upgrade() {
            users.extend(m.in_flight_users(tag));
        }
        users
    }

    fn compliance_locked(&self, tag: &str) -> Vec<String> {
        self.catalog.compliance_locked(tag)
    }
}

impl Msdp {
    /// LSUs with a writer or key operation in flight under key `tag`.
    pub(crate) fn in_flight_users(&self, tag: &str) -> Vec<String> {
        self.states
            .lock()
            .values()
            .filter(|s| s.inflight.lock().tags.contains_key(tag))
            .map(|s| format!("LSU {} (a writer or key change in flight)", s.name))
            .collect()
    }
}
