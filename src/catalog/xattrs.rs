//! Extended attributes (`user.*`, `trusted.*`, `security.*`, POSIX ACLs
//! as `system.posix_acl_*`) of pools, folders and files, kept in the
//! catalog beside the entry, within the limits ext4 sets, so `rsync -X`
//! and `tar --xattrs --acls` trees come back whole.

use redb::{ReadableDatabase, ReadableTable};

use super::links::touch_ctime;
use super::tables::{INODES, XATTRS};
use super::{Catalog, CatalogError};

/// Longest attribute name (XATTR_NAME_MAX).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest value (XATTR_SIZE_MAX).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Names and values of one inode together (ext4 with large attributes).
pub const XATTR_TOTAL_MAX: usize = 65536;

/// How a set treats an attribute that exists (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrSet {
    /// Create or replace.
    Any,
    /// XATTR_CREATE: EEXIST when it exists.
    Create,
    /// XATTR_REPLACE: ENODATA when it does not.
    Replace,
}

impl Catalog {
    /// The value of attribute `name` of `ino`.
    pub fn xattr(&self, ino: u64, name: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        let rx = self.db.begin_read()?;
        let x = rx.open_table(XATTRS)?;
        Ok(x.get((ino, name))?.map(|v| v.value().to_vec()))
    }

    /// The attribute names of `ino`, in order.
    pub fn xattr_names(&self, ino: u64) -> Result<Vec<String>, CatalogError> {
        let rx = self.db.begin_read()?;
        let x = rx.open_table(XATTRS)?;
        x.range((ino, "")..(ino + 1, ""))?
            .map(|e| Ok(e?.0.value().1.to_string()))
            .collect()
    }

    /// Sets attribute `name` of `ino`.
    pub fn set_xattr(
        &self,
        ino: u64,
        name: &str,
        value: &[u8],
        how: XattrSet,
    ) -> Result<(), CatalogError> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(CatalogError::XattrName(format!(
                "attribute name of {} bytes, 1 to {XATTR_NAME_MAX}",
                name.len()
            )));
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(CatalogError::XattrTooBig(format!(
                "value of {name}: {} bytes, at most {XATTR_SIZE_MAX}",
                value.len()
            )));
        }
        let tx = self.begin()?;
        {
            let mut x = tx.open_table(XATTRS)?;
            let mut total = 0;
            let mut exists = false;
            for e in x.range((ino, "")..(ino + 1, ""))? {
                let (k, v) = e?;
                if k.value().1 == name {
                    exists = true;
                } else {
                    total += k.value().1.len() + v.value().len();
                }
            }
            match how {
                XattrSet::Create if exists => return Err(CatalogError::Exists(name.into())),
                XattrSet::Replace if !exists => return Err(CatalogError::NoXattr(name.into())),
                _ => {}
            }
            if total + name.len() + value.len() > XATTR_TOTAL_MAX {
                return Err(CatalogError::XattrFull(format!(
                    "inode {ino}: attributes would take {} bytes, at most {XATTR_TOTAL_MAX}",
                    total + name.len() + value.len()
                )));
            }
            x.insert((ino, name), value)?;
            touch_ctime(&mut tx.open_table(INODES)?, ino)?;
        }
        super::tables::commit(tx)
    }

    /// Removes attribute `name` of `ino`.
    pub fn remove_xattr(&self, ino: u64, name: &str) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        {
            let mut x = tx.open_table(XATTRS)?;
            if x.remove((ino, name))?.is_none() {
                return Err(CatalogError::NoXattr(name.into()));
            }
            touch_ctime(&mut tx.open_table(INODES)?, ino)?;
        }
        super::tables::commit(tx)
    }
}
