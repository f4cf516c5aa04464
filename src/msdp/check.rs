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
            r.images += 1;
            let subject = format!("image {}/{}", img.pool, img.path);
            let size = img.size;
            let reader = match LsuReader::open(self, img) {
                Ok(rd) => rd,
                Err(e) => {
                    let missing =
                        matches!(&e, MsdpError::Kms { source, .. } if source.is_missing_key());
                    r.not_opened(subject, missing, e.to_string());
                    continue;
                }
            };
            let mut pos = 0;
            while pos < size {
                match reader.read_at(pos, PIECE) {
                    Ok(d) => {
                        r.bytes += d.len() as u64;
                        pos += d.len() as u64;
                    }
                    Err(e) => {
                        r.damaged.push(Problem {
                            subject: subject.clone(),
                            what: e.to_string(),
                        });
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
