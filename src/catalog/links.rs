//! Names of an inode: hard links (`link(2)`), and taking a name away,
//! which frees the inode (its image, its extended attributes) only with
//! its last name. One place for this, so unlink, rename over an entry and
//! a new version at a name all count links the same way.

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{DIRENTS, Dirents, INODES, Inodes, LINKS, XATTRS, dec, enc};
use super::{Catalog, CatalogError, Inode, InodeKind};

/// The names of `ino` recorded in the links table (empty: one name, the
/// inode's own).
fn names_of(
    links: &impl ReadableTable<(u64, u64, &'static str), ()>,
    ino: u64,
) -> Result<Vec<(u64, String)>, CatalogError> {
    let mut out = Vec::new();
    for e in links.range((ino, 0, "")..(ino + 1, 0, ""))? {
        let (k, _) = e?;
        let (_, parent, name) = k.value();
        out.push((parent, name.to_string()));
    }
    Ok(out)
}

/// Sets the parent's modification and change times to `now` (an entry was
/// made or removed in it). Synthetic parents (`pools/`, `msdp/`) have none.
pub(super) fn touch_dir(t: &mut Inodes<'_>, parent: u64, now: i64) -> Result<(), CatalogError> {
    let Some(v) = t.get(parent)? else {
        return Ok(());
    };
    let mut node: Inode = dec(v.value())?;
    drop(v);
    node.attrs.mtime_ns = now;
    node.attrs.ctime_ns = now;
    t.insert(parent, enc(&node).as_slice())?;
    Ok(())
}

/// Sets the change time of `ino` to now (an attribute of it changed).
pub(super) fn touch_ctime(t: &mut Inodes<'_>, ino: u64) -> Result<(), CatalogError> {
    let Some(v) = t.get(ino)? else {
        return Ok(());
    };
    let mut node: Inode = dec(v.value())?;
    drop(v);
    node.attrs.ctime_ns = crate::util::clock::now_ns();
    t.insert(ino, enc(&node).as_slice())?;
    Ok(())
}

/// Takes the name `(parent, name)` of `node` away. When it was the inode's
/// last name the inode and its extended attributes go too, and an image
/// it held is returned for the caller to drop; otherwise the inode stays
/// under its other names.
pub(super) fn remove_name(
    tx: &redb::WriteTransaction,
    d: &mut Dirents<'_>,
    t: &mut Inodes<'_>,
    parent: u64,
    name: &str,
    mut node: Inode,
) -> Result<Option<u128>, CatalogError> {
    d.remove((parent, name))?;
    let mut links = tx.open_table(LINKS)?;
    let names = names_of(&links, node.ino)?;
    if names.len() >= 2 {
        links.remove((node.ino, parent, name))?;
        let rest: Vec<_> = names
            .into_iter()
            .filter(|(p, n)| !(*p == parent && n == name))
            .collect();
        if rest.len() == 1 {
            links.remove((node.ino, rest[0].0, rest[0].1.as_str()))?;
        }
        if node.parent == parent && node.name == name {
            node.parent = rest[0].0;
            node.name = rest[0].1.clone();
        }
        node.attrs.ctime_ns = crate::util::clock::now_ns();
        t.insert(node.ino, enc(&node).as_slice())?;
        return Ok(None);
    }
    t.remove(node.ino)?;
    drop_xattrs(tx, node.ino)?;
    Ok(match node.kind {
        InodeKind::Image(id) => Some(id),
        _ => None,
    })
}

/// Renames one name of a hard-linked inode in the links table (the
/// inode's own parent and name are the caller's).
pub(super) fn rename_link(
    tx: &redb::WriteTransaction,
    ino: u64,
    from: (u64, &str),
    to: (u64, &str),
) -> Result<(), CatalogError> {
    let mut links = tx.open_table(LINKS)?;
    if links.remove((ino, from.0, from.1))?.is_some() {
        links.insert((ino, to.0, to.1), ())?;
    }
    Ok(())
}

fn drop_xattrs(tx: &redb::WriteTransaction, ino: u64) -> Result<(), CatalogError> {
    let mut x = tx.open_table(XATTRS)?;
    let names: Vec<String> = x
        .range((ino, "")..(ino + 1, ""))?
        .map(|e| e.map(|(k, _)| k.value().1.to_string()))
        .collect::<Result<_, _>>()?;
    for n in names {
        x.remove((ino, n.as_str()))?;
    }
    Ok(())
}

impl Catalog {
    /// Another name `(parent, name)` for the inode `ino` (not a directory).
    pub fn link(&self, ino: u64, parent: u64, name: &str) -> Result<Inode, CatalogError> {
        let tx = self.begin()?;
        let node = {
            let mut d = tx.open_table(DIRENTS)?;
            let mut t = tx.open_table(INODES)?;
            let mut node: Inode = dec(t
                .get(ino)?
                .ok_or_else(|| CatalogError::NotFound(format!("inode {ino}")))?
                .value())?;
            if node.kind.is_dir() {
                return Err(CatalogError::IsDir(node.name));
            }
            if d.get((parent, name))?.is_some() {
                return Err(CatalogError::Exists(name.into()));
            }
            let mut links = tx.open_table(LINKS)?;
            if names_of(&links, ino)?.is_empty() {
                links.insert((ino, node.parent, node.name.as_str()), ())?;
            }
            links.insert((ino, parent, name), ())?;
            d.insert((parent, name), ino)?;
            let now = crate::util::clock::now_ns();
            node.attrs.ctime_ns = now;
            t.insert(ino, enc(&node).as_slice())?;
            touch_dir(&mut t, parent, now)?;
            node
        };
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// How many names the inode has.
    pub fn nlink(&self, ino: u64) -> Result<u32, CatalogError> {
        let rx = self.db.begin_read()?;
        let links = rx.open_table(LINKS)?;
        Ok(names_of(&links, ino)?.len().max(1) as u32)
    }
}
