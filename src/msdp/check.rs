//! Checking the LSUs for `kmsfs fsck`: every LSU image is read through its
//! recipe, so every segment it uses is found in the index, read, checked
//! against its fingerprint and authenticated. Damage is reported, never
//! repaired.

use std::sync::Arc;

use super::{LsuReader, Msdp, MsdpError};
use crate::catalog::lsu_of_pool;
use crate::util::report::{CheckReport, Problem};

const PIECE: usize = 4 << 20;

impl Msdp {
    /// Adds what the LSU images hold to `r`.
    pub fn check_into(self: &Arc<Self>, r: &mut CheckReport) -> Result<(), MsdpError> {
        for img in self.catalog.images()? {
            if lsu_of_pool(&img.pool).is_none() {
                continue;
            }
            let (id, subject) = (img.id, format!("image {}/{}", img.pool, img.path));
            let size = img.size;
            let reader = match LsuReader::open(self, img) {
                Ok(rd) => rd,
                Err(_) if self.gone(id)? => continue,
                Err(e) => {
                    r.images += 1;
                    let missing =
                        matches!(&e, MsdpError::Kms { source, .. } if source.is_missing_key());
                    r.not_opened(id, subject, missing, e.to_string());
                    continue;
                }
            };
            let mut pos = 0;
            let mut damage = None;
            while pos < size {
                match reader.read_at(pos, PIECE) {
                    Ok(d) => pos += d.len() as u64,
                    Err(e) => {
                        damage = Some(e.to_string());
                        break;
                    }
                }
            }
            // An image deleted (and its segments reclaimed) while it was
            // checked is not damage: a mounted store changes under fsck.
            if damage.is_some() && self.gone(id)? {
                continue;
            }
            r.images += 1;
            r.bytes += pos;
            if let Some(what) = damage {
                r.damaged.push(Problem::of_image(id, subject, what));
            }
        }
        Ok(())
    }

    /// Whether image `id` has left the catalog.
    fn gone(&self, id: u128) -> Result<bool, MsdpError> {
        Ok(self.catalog.image(id)?.is_none())
    }
}
