//! Volume records of the library.

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{VOLUMES, dec, enc};
use super::{Catalog, CatalogError, VolumeRec};

impl Catalog {
    /// Every volume, in barcode order.
    pub fn volumes(&self) -> Result<Vec<VolumeRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(VOLUMES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(dec(e?.1.value())?);
        }
        Ok(out)
    }

    /// One volume.
    pub fn volume(&self, barcode: &str) -> Result<Option<VolumeRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(VOLUMES)?;
        t.get(barcode)?.map(|v| dec(v.value())).transpose()
    }

    /// Reserves `v.barcode` for an import: writes `v` (state Importing)
    /// unless a volume with that barcode exists and is not scratch, which
    /// is returned instead (a scratch volume's barcode is taken over).
    pub fn reserve_volume(&self, v: &VolumeRec) -> Result<Option<VolumeRec>, CatalogError> {
        let tx = self.begin()?;
        let existing = {
            let mut t = tx.open_table(VOLUMES)?;
            let cur = t
                .get(v.barcode.as_str())?
                .map(|x| dec::<VolumeRec>(x.value()))
                .transpose()?;
            let free = cur
                .as_ref()
                .is_none_or(|c| c.state == super::VolumeState::Scratch);
            if free {
                t.insert(v.barcode.as_str(), enc(v).as_slice())?;
            }
            cur.filter(|_| !free)
        };
        super::tables::commit(tx)?;
        Ok(existing)
    }

    /// Removes the record of a volume still being imported (an import
    /// that failed, or died: its record is swept at the next open).
    pub fn unreserve_volume(&self, barcode: &str) -> Result<bool, CatalogError> {
        let tx = self.begin()?;
        let removed = {
            let mut t = tx.open_table(VOLUMES)?;
            let importing = t
                .get(barcode)?
                .map(|x| dec::<VolumeRec>(x.value()))
                .transpose()?
                .is_some_and(|v| v.state == super::VolumeState::Importing);
            if importing {
                t.remove(barcode)?;
            }
            importing
        };
        super::tables::commit(tx)?;
        Ok(removed)
    }

    /// Writes a volume record (new volume, state change, recycling).
    pub fn put_volume(&self, v: &VolumeRec) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.open_table(VOLUMES)?
            .insert(v.barcode.as_str(), enc(v).as_slice())?;
        super::tables::commit(tx)?;
        Ok(())
    }
}
