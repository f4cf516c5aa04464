//! Namespace operations: look up, list, make and remove folders and pools,
//! rename, change attributes. Each is one redb transaction.

use redb::{ReadableDatabase, ReadableTable};

use super::links::{remove_name, rename_link, touch_dir};
use super::tables::{DIRENTS, INODES, Inodes, dec, enc, named};
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
        let node: Option<Inode> = t.get(ino)?.map(|v| dec(v.value())).transpose()?;
        // A hard-linked inode is seen under the name it was looked up by.
        Ok(node.map(|n| Inode {
            parent,
            name: name.into(),
            ..n
        }))
    }

    /// The children of `parent`, in name order, each under the name it has
    /// there (a hard-linked inode has several).
    pub fn children(&self, parent: u64) -> Result<Vec<Inode>, CatalogError> {
        let rx = self.db.begin_read()?;
        let d = rx.open_table(DIRENTS)?;
        let t = rx.open_table(INODES)?;
        let mut out = Vec::new();
        for entry in d.range((parent, "")..(parent + 1, ""))? {
            let (k, ino) = entry?;
            if let Some(v) = t.get(ino.value())? {
                out.push(Inode {
                    parent,
                    name: k.value().1.to_string(),
                    ..dec(v.value())?
                });
            }
        }
        Ok(out)
    }

    /// Makes an entry that holds no data: a pool (under `pools/`), a
    /// folder inside a pool, a symbolic link or a special file.
    pub fn make_entry(
        &self,
        parent: u64,
        name: &str,
        pool: &str,
        kind: InodeKind,
        attrs: FileAttrs,
    ) -> Result<Inode, CatalogError> {
        let tx = self.begin()?;
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
            let mut t = tx.open_table(INODES)?;
            t.insert(node.ino, enc(&node).as_slice())?;
            touch_dir(&mut t, parent, attrs.ctime_ns)?;
            node
        };
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// Removes an empty folder or pool.
    pub fn remove_dir(&self, parent: u64, name: &str) -> Result<Inode, CatalogError> {
        let tx = self.begin()?;
        let node = {
            let mut d = tx.open_table(DIRENTS)?;
            let mut t = tx.open_table(INODES)?;
            let node =
                named(&d, &t, parent, name)?.ok_or_else(|| CatalogError::NotFound(name.into()))?;
            let ino = node.ino;
            if !node.kind.is_dir() {
                return Err(CatalogError::NotDir(name.into()));
            }
            if d.range((ino, "")..(ino + 1, ""))?.next().is_some() {
                return Err(CatalogError::NotEmpty(name.into()));
            }
            remove_name(&tx, &mut d, &mut t, parent, name, node.clone())?;
            touch_dir(&mut t, parent, crate::util::clock::now_ns())?;
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
        let tx = self.begin()?;
        let replaced = {
            let mut d = tx.open_table(DIRENTS)?;
            let mut t = tx.open_table(INODES)?;
            let mut node =
                named(&d, &t, parent, name)?.ok_or_else(|| CatalogError::NotFound(name.into()))?;
            let ino = node.ino;
            if node.kind.is_dir() {
                check_not_into_itself(&t, ino, new_parent, new_name)?;
            }
            let mut replaced = None;
            if let Some(target) = named(&d, &t, new_parent, new_name)? {
                if target.ino == ino {
                    // Two names of one inode: POSIX says do nothing.
                    return Ok(None);
                }
                let old = target.ino;
                match (target.kind.is_dir(), node.kind.is_dir()) {
                    (false, false) => {}
                    (false, true) => return Err(CatalogError::NotDir(new_name.into())),
                    (true, false) => return Err(CatalogError::IsDir(new_name.into())),
                    _ if d.range((old, "")..(old + 1, ""))?.next().is_some() => {
                        return Err(CatalogError::NotEmpty(new_name.into()));
                    }
                    _ => {}
                }
                replaced = remove_name(&tx, &mut d, &mut t, new_parent, new_name, target)?;
            }
            d.remove((parent, name))?;
            d.insert((new_parent, new_name), ino)?;
            rename_link(&tx, ino, (parent, name), (new_parent, new_name))?;
            if node.parent == parent && node.name == name {
                node.parent = new_parent;
                node.name = new_name.into();
            }
            let now = crate::util::clock::now_ns();
            node.attrs.ctime_ns = now;
            t.insert(ino, enc(&node).as_slice())?;
            touch_dir(&mut t, parent, now)?;
            touch_dir(&mut t, new_parent, now)?;
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
        let tx = self.begin()?;
        let node = put_attrs(&tx, ino, attrs)?;
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// Replaces the attributes of an inode and sets (or, with `None`,
    /// removes) one of its extended attributes, in one transaction: a
    /// mode and the ACL that shares its bits never disagree.
    pub fn set_attrs_and_xattr(
        &self,
        ino: u64,
        attrs: FileAttrs,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<Inode, CatalogError> {
        let tx = self.begin()?;
        let node = put_attrs(&tx, ino, attrs)?;
        {
            let mut x = tx.open_table(super::tables::XATTRS)?;
            match value {
                Some(v) => x.insert((ino, name), v).map(|_| ())?,
                None => x.remove((ino, name)).map(|_| ())?,
            }
        }
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

/// A folder may not move into itself or below itself (EINVAL).
fn check_not_into_itself(
    t: &Inodes<'_>,
    ino: u64,
    new_parent: u64,
    new_name: &str,
) -> Result<(), CatalogError> {
    let mut cur = new_parent;
    while cur >= super::FIRST_DYNAMIC_INO {
        if cur == ino {
            return Err(CatalogError::Invalid(format!(
                "cannot move a folder into itself ({new_name})"
            )));
        }
        let Some(v) = t.get(cur)? else { break };
        cur = dec::<Inode>(v.value())?.parent;
    }
    Ok(())
}

/// Sets the attributes of inode `ino` inside `tx`.
fn put_attrs(
    tx: &redb::WriteTransaction,
    ino: u64,
    attrs: FileAttrs,
) -> Result<Inode, CatalogError> {
    let mut t = tx.open_table(INODES)?;
    let mut node: Inode = dec(t
        .get(ino)?
        .ok_or_else(|| CatalogError::NotFound(format!("inode {ino}")))?
        .value())?;
    node.attrs = attrs;
    t.insert(ino, enc(&node).as_slice())?;
    Ok(node)
}
