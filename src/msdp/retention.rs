//! What a retention lock (WORM) means for a cloud LSU's objects: an
//! image's containers and recipe object are retained by the object store
//! (S3 Object Lock, the policy's mode) until at least the image unlocks,
//! set after its commit and again when the lock is extended; `lsu gc`
//! catches up what an outage left unset and never deletes or compacts a
//! container the store still retains.

use std::collections::BTreeSet;

use super::backend::container_rel;
use super::sidecar::recipe_rel;
use super::state::LsuState;
use super::{Msdp, MsdpError};
use crate::catalog::{Fp, ImageRec, WormMode, lsu_of_pool, lsu_pool};

impl Msdp {
    /// The mode of LSU `name`'s retention policy, if it has one.
    pub(super) fn worm_mode(&self, name: &str) -> Result<Option<WormMode>, MsdpError> {
        let pool = lsu_pool(name);
        Ok(self
            .catalog
            .worms()?
            .into_iter()
            .find(|(p, _)| *p == pool)
            .map(|(_, w)| w.mode))
    }

    /// Has the object store retain what image `img` needs (its containers
    /// and recipe object) as long as the image is locked. Nothing for an
    /// image of a local LSU or one without a lock.
    pub fn retain_image(&self, img: &ImageRec) -> Result<(), MsdpError> {
        let Some(lsu) = lsu_of_pool(&img.pool) else {
            return Ok(());
        };
        let state = self.state(lsu)?;
        if !state.backend.is_cloud() {
            return Ok(());
        }
        let (Some(mode), Some(lock)) = (self.worm_mode(lsu)?, self.catalog.lock_of(img.id)?) else {
            return Ok(());
        };
        let fps: Vec<Fp> = self
            .catalog
            .recipe(img.id)?
            .unwrap_or_default()
            .iter()
            .map(|r| r.fp)
            .collect();
        let containers: BTreeSet<u64> = self
            .catalog
            .segments(lsu, &fps)?
            .into_iter()
            .flatten()
            .map(|s| s.container)
            .collect();
        for id in &containers {
            state
                .backend
                .retain(&container_rel(*id), mode, lock.until_ns)?;
        }
        state
            .backend
            .retain(&recipe_rel(img.id), mode, lock.until_ns)?;
        tracing::info!(image = %format!("{}/{}", img.pool, img.path), containers = containers.len(),
            until_ns = lock.until_ns, "objects retained by the object store");
        Ok(())
    }

    /// Retains the objects of every locked image of cloud LSU `name`
    /// (those an outage left unset); how many images.
    pub(super) fn retain_locked(&self, name: &str) -> Result<usize, MsdpError> {
        let pool = lsu_pool(name);
        let now = self.catalog.clock().now_ns();
        let mut n = 0;
        for (id, lock) in self.catalog.locks()? {
            if !lock.active(now) {
                continue;
            }
            if let Some(img) = self.catalog.image(id)?
                && img.pool == pool
            {
                self.retain_image(&img)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Whether the object store retains container `id` past now (gc leaves it).
pub(super) fn retained(state: &LsuState, id: u64, now_ns: i64) -> Result<bool, MsdpError> {
    Ok(state
        .backend
        .retained_until(&container_rel(id))?
        .is_some_and(|u| u > now_ns))
}
