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

    /// Writes a volume record (new volume, state change, recycling).
    pub fn put_volume(&self, v: &VolumeRec) -> Result<(), CatalogError> {
        let tx = self.db.begin_write()?;
        tx.open_table(VOLUMES)?
            .insert(v.barcode.as_str(), enc(v).as_slice())?;
        tx.commit()?;
        Ok(())
    }
}
