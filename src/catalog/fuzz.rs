//! The catalog's record decoders, as the fuzz targets in `fuzz/` call
//! them: the first byte picks a record type, the rest is its bincode. A
//! record that decodes must encode and decode to itself; a version-2 record
//! must upgrade.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::records_v2::{ImageRecV2, LsuRecV2};
use super::tables::{dec, enc};
use super::{
    CatalogError, ContainerRec, FileEntry, ImageRec, Inode, KekRec, LsuRec, SegRec, SegRef,
    VolumeRec,
};

/// How many record types [`record`] picks from.
pub(crate) const RECORD_TYPES: u8 = 11;

fn round<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    b: &[u8],
) -> Result<(), CatalogError> {
    let v: T = dec(b)?;
    assert_eq!(dec::<T>(&enc(&v))?, v, "a decoded record encodes to itself");
    Ok(())
}

/// Decodes `bytes[1..]` as the record type `bytes[0]` picks.
pub(crate) fn record(bytes: &[u8]) -> Result<(), CatalogError> {
    let Some((&kind, b)) = bytes.split_first() else {
        return Ok(());
    };
    match kind % RECORD_TYPES {
        0 => round::<ImageRec>(b),
        1 => round::<ImageRec>(&enc(&dec::<ImageRecV2>(b)?.upgrade())),
        2 => round::<VolumeRec>(b),
        3 => round::<Inode>(b),
        4 => round::<Vec<FileEntry>>(b),
        5 => round::<LsuRec>(b),
        6 => round::<LsuRec>(&enc(&dec::<LsuRecV2>(b)?.upgrade())),
        7 => round::<KekRec>(b),
        8 => round::<Vec<SegRef>>(b),
        9 => round::<SegRec>(b),
        _ => round::<ContainerRec>(b),
    }
}

/// Every record of the catalog file at `path`, each prefixed with the
/// byte(s) that pick its type (an image or LSU record as both the current
/// and the version-2 type): the fuzz targets' seeds. Read from a copy:
/// redb opens a database for writing, and `path` is a golden file.
pub(crate) fn raw_records(path: &std::path::Path) -> Result<Vec<Vec<u8>>, CatalogError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let copy = std::env::temp_dir().join(format!(
        "kmsfs-fuzz-catalog-{}-{nanos}.redb",
        std::process::id()
    ));
    std::fs::copy(path, &copy).map_err(|e| CatalogError::Db(format!("{}: {e}", path.display())))?;
    let records = records_of(&copy);
    let _ = std::fs::remove_file(&copy);
    records
}

fn records_of(path: &std::path::Path) -> Result<Vec<Vec<u8>>, CatalogError> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(path)?;
    let tx = db.begin_read()?;
    let mut out = Vec::new();
    let mut push = |kinds: &[u8], v: &[u8]| {
        for k in kinds {
            out.push([&[*k][..], v].concat());
        }
    };
    for e in tx.open_table(super::tables::IMAGES)?.iter()? {
        push(&[0, 1], e?.1.value());
    }
    for e in tx.open_table(super::tables::VOLUMES)?.iter()? {
        push(&[2], e?.1.value());
    }
    for e in tx.open_table(super::tables::INODES)?.iter()? {
        push(&[3], e?.1.value());
    }
    for e in tx.open_table(super::tables::FILES)?.iter()? {
        push(&[4], e?.1.value());
    }
    if let Ok(t) = tx.open_table(super::tables::LSUS) {
        for e in t.iter()? {
            push(&[5, 6], e?.1.value());
        }
    }
    if let Ok(t) = tx.open_table(super::tables::RECIPES) {
        for e in t.iter()? {
            push(&[8], e?.1.value());
        }
    }
    Ok(out)
}
