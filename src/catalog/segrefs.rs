//! Where an LSU's segment references are counted, and how an image gives
//! them back when it leaves the catalog. Both the image commit (an image
//! replaced or deleted) and the LSU persistence use it, so it sits below
//! both and neither reaches into the other for it.

use redb::{ReadableTable, TableDefinition};

use super::lsu_records::{SegRec, SegRef};
use super::tables::{RECIPES, dec, enc};
use super::{CatalogError, ImageRec};

/// Pool name of the images and folders of LSU `name`.
pub fn lsu_pool(name: &str) -> String {
    format!("msdp/{name}")
}

/// The LSU named by a pool string, if it is one.
pub fn lsu_of_pool(pool: &str) -> Option<&str> {
    pool.strip_prefix("msdp/")
}

/// A segment fingerprint.
pub type Fp = [u8; 32];

pub(super) type SegTable<'a> = TableDefinition<'a, &'static Fp, &'static [u8]>;
pub(super) type U64Table<'a> = TableDefinition<'a, u64, &'static [u8]>;
pub(super) type KekTable<'a> = TableDefinition<'a, u32, &'static [u8]>;

pub(super) struct Names {
    pub(super) segments: String,
    pub(super) containers: String,
    pub(super) keks: String,
}

pub(super) fn names(lsu: &str) -> Names {
    Names {
        segments: format!("lsu.{lsu}.segments"),
        containers: format!("lsu.{lsu}.containers"),
        keks: format!("lsu.{lsu}.keks"),
    }
}

/// Removes an image's recipe and the references it held, if it has one.
pub(super) fn release_recipe(
    tx: &redb::WriteTransaction,
    lsu: &str,
    id: u128,
) -> Result<(), CatalogError> {
    let Some(recipe) = tx
        .open_table(RECIPES)?
        .remove(id)?
        .map(|v| dec::<Vec<SegRef>>(v.value()))
        .transpose()?
    else {
        return Ok(());
    };
    let n = names(lsu);
    let mut t = tx.open_table(SegTable::new(&n.segments))?;
    for r in &recipe {
        let cur = t
            .get(&r.fp)?
            .map(|v| dec::<SegRec>(v.value()))
            .transpose()?;
        if let Some(mut s) = cur {
            s.refs = s.refs.saturating_sub(1);
            t.insert(&r.fp, enc(&s).as_slice())?;
        }
    }
    Ok(())
}

/// Called when an image leaves the catalog: an LSU image gives back its segments.
pub(super) fn release_image(
    tx: &redb::WriteTransaction,
    img: &ImageRec,
) -> Result<(), CatalogError> {
    match lsu_of_pool(&img.pool) {
        Some(lsu) => release_recipe(tx, lsu, img.id),
        None => Ok(()),
    }
}
