//! Namespace operations: look up, list, make and remove folders and pools,
//! rename, change attributes. Each is one redb transaction.

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{DIRENTS, INODES, dec, enc, named};
use super::{Catalog, CatalogError, FileAttrs, Inode, InodeKind};

impl Catalog {
    /// The inode with this number.
    pub fn inode(&self, ino: u64) -> Result<Option<Inode>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(INODES)?;
        t.get(ino)?.map(|v| dec(v.value())).transpose()
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Option<Inode>, CatalogError> {
        let rx = self.db.begin_read()?;
        let d = rx.open_table(DIRENTS)?;
        let Some(ino) = d.get((parent, name))?.map(|v| v.value()) else {
            return Ok(None);
        };
        let t = rx.open_table(INODES)?;
        t.get(ino)?.map(|v| dec(v.value())).transpose()
    }

    /// The children of `parent`, in name order.
    pub fn children(&self, parent: u64) -> Result<Vec<Inode>, CatalogError> {
        let rx = self.db.begin_read()?;
        let d = rx.open_table(DIRENTS)?;
        let t = rx.open_table(INODES)?;
        let mut out = Vec::new();
        for entry in d.range((parent, "")..(parent + 1, ""))? {
            let (_, ino) = entry?;
            if let Some(v) = t.get(ino.value())? {
                out.push(dec(v.value())?);
            }
        }
        Ok(out)
    }

    /// Makes a pool (under `pools/`) or a folder inside a pool.
    pub fn make_dir(
        &self,
        parent: u64,
        name: &str,
        pool: &str,
        kind: InodeKind,
        attrs: FileAttrs,
    ) -> Result<Inode, CatalogError> {
        let tx = self.db.begin_write()?;
        let node = {
            let mut d = tx.open_table(DIRENTS)?;
            if d.get((parent, name))?.is_some() {
                return Err(CatalogError::Exists(name.into()));
            }
            let node = Inode {
                ino: self.alloc_ino(),
                parent,
                name: name.into(),
                pool: pool.into(),
                kind,
                attrs,
            };
            d.insert((parent, name), node.ino)?;
            tx.open_table(INODES)?
                .insert(node.ino, enc(&node).as_slice())?;
            node
        };
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// Removes an empty folder or pool.
    pub fn remove_dir(&self, parent: u64, name: &str) -> Result<Inode, CatalogError> {
        let tx = self.db.begin_write()?;
        let node = {
            let mut d = tx.open_table(DIRENTS)?;
            let mut t = tx.open_table(INODES)?;
            let node =
                named(&d, &t, parent, name)?.ok_or_else(|| CatalogError::NotFound(name.into()))?;
            let ino = node.ino;
            if matches!(node.kind, InodeKind::Image(_)) {
                return Err(CatalogError::NotDir(name.into()));
            }
            if d.range((ino, "")..(ino + 1, ""))?.next().is_some() {
                return Err(CatalogError::NotEmpty(name.into()));
            }
            d.remove((parent, name))?;
            t.remove(ino)?;
            node
        };
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// Renames within the namespace; an existing image at the target is
    /// replaced: dropped in the same transaction and returned, so the
    /// caller can recycle its volumes.
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
    ) -> Result<Option<super::ImageRec>, CatalogError> {
        let tx = self.db.begin_write()?;
        let replaced = {
            let mut d = tx.open_table(DIRENTS)?;
            let mut t = tx.open_table(INODES)?;
            let mut node =
                named(&d, &t, parent, name)?.ok_or_else(|| CatalogError::NotFound(name.into()))?;
            let ino = node.ino;
            let mut replaced = None;
            if let Some(target) = named(&d, &t, new_parent, new_name)? {
                let old = target.ino;
                match (&target.kind, &node.kind) {
                    (InodeKind::Image(id), InodeKind::Image(_)) => replaced = Some(*id),
                    (InodeKind::Image(_), _) => return Err(CatalogError::NotDir(new_name.into())),
                    (_, InodeKind::Image(_)) => return Err(CatalogError::IsDir(new_name.into())),
                    _ if d.range((old, "")..(old + 1, ""))?.next().is_some() => {
                        return Err(CatalogError::NotEmpty(new_name.into()));
                    }
                    _ => {}
                }
                t.remove(old)?;
            }
            d.remove((parent, name))?;
            d.insert((new_parent, new_name), ino)?;
            node.parent = new_parent;
            node.name = new_name.into();
            t.insert(ino, enc(&node).as_slice())?;
            drop((d, t));
            replaced
                .map(|id| super::images::drop_image(&tx, id))
                .transpose()?
        };
        super::tables::commit(tx)?;
        Ok(replaced)
    }

    /// Replaces the attributes of an inode.
    pub fn set_attrs(&self, ino: u64, attrs: FileAttrs) -> Result<Inode, CatalogError> {
        let tx = self.db.begin_write()?;
        let node = {
            let mut t = tx.open_table(INODES)?;
            let mut node: Inode = dec(t
                .get(ino)?
                .ok_or_else(|| CatalogError::NotFound(format!("inode {ino}")))?
                .value())?;
            node.attrs = attrs;
            t.insert(ino, enc(&node).as_slice())?;
            node
        };
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// The path of an inode below `pools/` (for log lines and listings).
    pub fn path_of(&self, ino: u64) -> Result<String, CatalogError> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur >= super::FIRST_DYNAMIC_INO {
            let Some(n) = self.inode(cur)? else { break };
            parts.push(n.name);
            cur = n.parent;
        }
        parts.reverse();
        Ok(parts.join("/"))
    }
}
