//! redb table definitions, the catalog format version, and (de)serialisation
//! of records (bincode, legacy config: fixed-width little-endian integers).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::util::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CatalogError, FIRST_DYNAMIC_INO};

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub const DIRENTS: TableDefinition<(u64, &str), u64> = TableDefinition::new("dirents");
pub const IMAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("images");
pub const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
/// The file list of an image (NetBackup's `.f` file).
pub const FILES: TableDefinition<u128, &[u8]> = TableDefinition::new("files");

/// LSU records by name.
pub const LSUS: TableDefinition<&str, &[u8]> = TableDefinition::new("lsus");
/// The recipe (segment list) of each LSU image.
pub const RECIPES: TableDefinition<u128, &[u8]> = TableDefinition::new("recipes");

/// Extended attributes of an inode, by name.
pub const XATTRS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("xattrs");
/// Every name of an inode that has more than one (hard links): `(inode,
/// parent, name)`. An inode with one name has no entry here.
pub const LINKS: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("links");

/// Retention policy by pool (`NAME`, or `msdp/NAME` for an LSU).
pub const WORM: TableDefinition<&str, &[u8]> = TableDefinition::new("worm");
/// Lock of each image under retention, by image id.
pub const LOCKS: TableDefinition<u128, &[u8]> = TableDefinition::new("locks");

/// Catalog format version (bump with a reader for the old one). Version 2
/// added the LSU tables; version 3 keyed the image digest, recorded each
/// fragment's volume format and each LSU's chunker; version 4 added
/// symlinks, special files, hard links and extended attributes (no record
/// of version 3 changes). Older catalogs are upgraded in place, in one
/// transaction, when opened.
pub const CATALOG_VERSION: u64 = 4;

pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v).expect("catalog records serialize")
}

pub fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, CatalogError> {
    codec::decode(b).map_err(|e| CatalogError::Decode(e.to_string()))
}

/// Creates tables on first use, checks the version, returns the next free inode.
pub fn init(db: &redb::Database) -> Result<u64, CatalogError> {
    let tx = db.begin_write()?;
    {
        let mut meta = tx.open_table(META)?;
        let version = meta.get("version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("version", CATALOG_VERSION)?;
            }
            Some(1 | 2) => {
                upgrade_to_3(&tx)?;
                meta.insert("version", CATALOG_VERSION)?;
            }
            // Version 4 only added tables and inode kinds.
            Some(3) => {
                meta.insert("version", CATALOG_VERSION)?;
            }
            Some(v) if v != CATALOG_VERSION => {
                return Err(CatalogError::UnknownVersion {
                    found: v,
                    supported: CATALOG_VERSION,
                });
            }
            Some(_) => {}
        }
        tx.open_table(INODES)?;
        tx.open_table(DIRENTS)?;
        tx.open_table(IMAGES)?;
        tx.open_table(VOLUMES)?;
        tx.open_table(FILES)?;
        tx.open_table(LSUS)?;
        tx.open_table(RECIPES)?;
        tx.open_table(XATTRS)?;
        tx.open_table(LINKS)?;
        tx.open_table(WORM)?;
        tx.open_table(LOCKS)?;
        sweep_orphans(&tx)?;
    }
    tx.commit()?;
    let rx = db.begin_read()?;
    let inodes = rx.open_table(INODES)?;
    let last = inodes.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    Ok(last.max(FIRST_DYNAMIC_INO - 1) + 1)
}

/// Commits `tx`, durable on return: where every catalog change after open
/// ends (a failpoint stands before it; an error drops the transaction).
pub(super) fn commit(tx: redb::WriteTransaction) -> Result<(), CatalogError> {
    crate::util::failpoint::hit(crate::util::failpoint::CATALOG_COMMIT)
        .map_err(redb::StorageError::Io)?;
    tx.commit()?;
    Ok(())
}

/// Extended attributes and link rows of inodes that are not in the
/// catalog: set on a file being written that never committed (inode
/// numbers are handed out again after a restart, and a new file must not
/// inherit them).
fn sweep_orphans(tx: &redb::WriteTransaction) -> Result<(), CatalogError> {
    let inodes = tx.open_table(INODES)?;
    let mut xattrs = tx.open_table(XATTRS)?;
    let mut dead = Vec::new();
    for e in xattrs.iter()? {
        let (k, _) = e?;
        let (ino, name) = k.value();
        if inodes.get(ino)?.is_none() {
            dead.push((ino, name.to_string()));
        }
    }
    for (ino, name) in &dead {
        xattrs.remove((*ino, name.as_str()))?;
    }
    let mut links = tx.open_table(LINKS)?;
    let mut dead = Vec::new();
    for e in links.iter()? {
        let (k, _) = e?;
        let (ino, parent, name) = k.value();
        if inodes.get(ino)?.is_none() {
            dead.push((ino, parent, name.to_string()));
        }
    }
    for (ino, parent, name) in &dead {
        links.remove((*ino, *parent, name.as_str()))?;
    }
    Ok(())
}

/// Rewrites the image and LSU records of a format 1 or 2 catalog in
/// format 3 (inside the transaction that sets the new version).
fn upgrade_to_3(tx: &redb::WriteTransaction) -> Result<(), CatalogError> {
    use super::records_v2::{ImageRecV2, LsuRecV2};
    let mut images = tx.open_table(IMAGES)?;
    let mut old = Vec::new();
    for e in images.iter()? {
        let (k, v) = e?;
        old.push((k.value(), dec::<ImageRecV2>(v.value())?.upgrade()));
    }
    for (id, rec) in &old {
        images.insert(*id, enc(rec).as_slice())?;
    }
    let mut lsus = tx.open_table(LSUS)?;
    let mut old = Vec::new();
    for e in lsus.iter()? {
        let (k, v) = e?;
        old.push((k.value().to_string(), dec::<LsuRecV2>(v.value())?.upgrade()));
    }
    for (name, rec) in &old {
        lsus.insert(name.as_str(), enc(rec).as_slice())?;
    }
    Ok(())
}

/// The directory-entry and inode tables, open in a write transaction.
pub type Dirents<'t> = redb::Table<'t, (u64, &'static str), u64>;
pub type Inodes<'t> = redb::Table<'t, u64, &'static [u8]>;

/// The inode named `name` in directory `parent`, inside a write transaction.
pub fn named(
    d: &Dirents<'_>,
    t: &Inodes<'_>,
    parent: u64,
    name: &str,
) -> Result<Option<super::Inode>, CatalogError> {
    let Some(ino) = d.get((parent, name))?.map(|v| v.value()) else {
        return Ok(None);
    };
    let v = t
        .get(ino)?
        .ok_or_else(|| CatalogError::NotFound(format!("inode {ino} of '{name}'")))?;
    Ok(Some(dec(v.value())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{FileEntry, ImageRec, VolumeRec};

    /// A damaged record whose length prefix claims far more than the
    /// record holds is refused with an error; it used to make bincode
    /// allocate the claim first (a capacity overflow panic, or an abort
    /// when the allocation failed), taking the daemon down.
    #[test]
    fn a_record_claiming_more_than_it_holds_is_refused() {
        for claim in [u64::MAX, 1 << 62, 1 << 40, 1 << 33] {
            let mut b = claim.to_le_bytes().to_vec();
            b.extend_from_slice(b"short");
            assert!(matches!(dec::<VolumeRec>(&b), Err(CatalogError::Decode(_))));
            assert!(matches!(
                dec::<Vec<FileEntry>>(&b),
                Err(CatalogError::Decode(_))
            ));
            let mut img = vec![0u8; 16];
            img.extend_from_slice(&b);
            assert!(dec::<ImageRec>(&img).is_err());
        }
    }
}

#[cfg(test)]
mod inode_layout {
    use super::{dec, enc};
    use crate::catalog::{FileAttrs, Inode, InodeKind};

    fn node(kind: InodeKind) -> Inode {
        Inode {
            ino: 17,
            parent: 16,
            name: "n".into(),
            pool: "P".into(),
            kind,
            attrs: FileAttrs {
                mode: 0o120777,
                uid: 1,
                gid: 2,
                atime_ns: 3,
                mtime_ns: 4,
                ctime_ns: 5,
            },
        }
    }

    /// Inode records are part of the catalog format: version 3 kinds keep
    /// their bytes, the version 4 kinds (symlink 3, special file 4) are
    /// pinned here (docs/format.md).
    #[test]
    fn golden_inode_encodings() {
        // ino 17, parent 16, name "n", pool "P" (u64 length, bytes).
        let head = "1100000000000000 1000000000000000 0100000000000000 6e 0100000000000000 50"
            .replace(' ', "");
        // mode, uid, gid (u32), atime, mtime, ctime (i64).
        let attrs = "ffa10000 01000000 02000000 0300000000000000 0400000000000000 0500000000000000"
            .replace(' ', "");
        let cases = [
            (InodeKind::Dir, "01000000".to_string()),
            (
                InodeKind::Image(9),
                format!("02000000{}", "09".to_string() + &"00".repeat(15)),
            ),
            (
                InodeKind::Symlink("ab".into()),
                "030000000200000000000000".to_string() + "6162",
            ),
            (
                InodeKind::Special { rdev: 0x0703 },
                "040000000307000000000000".to_string(),
            ),
        ];
        for (kind, bytes) in cases {
            let n = node(kind);
            let e = hex::encode(enc(&n));
            assert_eq!(e, format!("{head}{bytes}{attrs}"), "{:?}", n.kind);
            assert_eq!(dec::<Inode>(&enc(&n)).unwrap(), n);
        }
    }

    /// A version 3 catalog (no links or xattrs tables) opens as version 4
    /// and takes hard links and attributes at once.
    #[test]
    fn a_version_3_catalog_is_upgraded_to_4_in_place() {
        use redb::ReadableDatabase;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(super::META)
                .unwrap()
                .insert("version", 3)
                .unwrap();
            tx.open_table(super::INODES).unwrap();
            tx.open_table(super::DIRENTS).unwrap();
            tx.commit().unwrap();
        }
        let c = crate::catalog::Catalog::open(&path).unwrap();
        let v = c.db.begin_read().unwrap().open_table(super::META).unwrap();
        assert_eq!(v.get("version").unwrap().unwrap().value(), 4);
        assert_eq!(c.nlink(99).unwrap(), 1);
        assert!(c.xattr_names(99).unwrap().is_empty());
    }
}
