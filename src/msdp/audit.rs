//! For key audits (and the test that proves no key is on disk in clear):
//! every KEK, every DEK and the fingerprint key of an LSU, unwrapped.
//! The caller holds them in [`SecretKey`]s and must never print them.

use super::container::read_record;
use super::keys::unwrap_dek;
use super::{Msdp, MsdpError};
use crate::catalog::SegKind;
use crate::crypto::SecretKey;

impl Msdp {
    /// Every key of LSU `name`, unwrapped through the KMS.
    pub fn unwrapped_keys(&self, name: &str) -> Result<Vec<SecretKey>, MsdpError> {
        let rec = self
            .catalog
            .lsu(name)?
            .ok_or_else(|| MsdpError::NoLsu(name.into()))?;
        let state = self.state(name)?;
        let keks = self.catalog.keks(name)?;
        let mut out = vec![self.fp_key(&rec)?.duplicate()];
        for k in &keks {
            out.push(self.kek(name, k)?.duplicate());
        }
        let mut locs = Vec::new();
        self.catalog.for_each_segment(name, |fp, s| {
            if s.kind == SegKind::Kek {
                locs.push((*fp, s.clone()));
            }
        })?;
        for (fp, s) in locs {
            let Ok((h, _)) = read_record(&state, s.container, s.offset, s.len) else {
                continue;
            };
            let Some(k) = keks.iter().find(|k| k.id == h.kek) else {
                continue;
            };
            let kek = self.kek(name, k)?;
            out.push(unwrap_dek(&kek, &rec.id, h.kek, &fp, &h.wrapped_dek)?);
        }
        Ok(out)
    }
}
