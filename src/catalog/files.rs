//! File lists of images (NetBackup's `.f` files), and the folders an
//! imported image needs in the namespace.

use redb::ReadableDatabase;

use super::tables::{DIRENTS, FILES, INODES, dec, enc, named};
use super::{Catalog, CatalogError, FileAttrs, FileEntry, Inode, InodeKind, POOLS_INO};

impl Catalog {
    /// Stores the file list of an image.
    pub fn put_files(&self, id: u128, files: &[FileEntry]) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.open_table(FILES)?.insert(id, enc(&files).as_slice())?;
        super::tables::commit(tx)?;
        Ok(())
    }

    /// The file list of an image, if one was built.
    pub fn files(&self, id: u128) -> Result<Option<Vec<FileEntry>>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(FILES)?;
        t.get(id)?.map(|v| dec(v.value())).transpose()
    }

    /// The directory `pools/POOL/a/b` for `dirs = [a, b]`, made as needed
    /// inside transaction `tx`; returns its inode.
    pub(super) fn ensure_dirs_in(
        &self,
        tx: &redb::WriteTransaction,
        pool: &str,
        dirs: &[&str],
        attrs: FileAttrs,
    ) -> Result<u64, CatalogError> {
        let names: Vec<&str> = std::iter::once(pool).chain(dirs.iter().copied()).collect();
        self.ensure_path_in(tx, POOLS_INO, pool, &names, attrs)
    }

    /// The folders `names` below `parent` (the first one a pool when
    /// `parent` is `pools/`), made as needed inside `tx`, entries of `pool`.
    pub(super) fn ensure_path_in(
        &self,
        tx: &redb::WriteTransaction,
        mut parent: u64,
        pool: &str,
        names: &[&str],
        attrs: FileAttrs,
    ) -> Result<u64, CatalogError> {
        let mut d = tx.open_table(DIRENTS)?;
        let mut t = tx.open_table(INODES)?;
        let mut kind = if parent == POOLS_INO {
            InodeKind::Pool
        } else {
            InodeKind::Dir
        };
        for &name in names {
            parent = match named(&d, &t, parent, name)? {
                Some(Inode {
                    ino,
                    kind: InodeKind::Pool | InodeKind::Dir,
                    ..
                }) => ino,
                Some(_) => return Err(CatalogError::NotDir(name.into())),
                None => {
                    let node = Inode {
                        ino: self.alloc_ino(),
                        parent,
                        name: name.into(),
                        pool: pool.into(),
                        kind: kind.clone(),
                        attrs,
                    };
                    d.insert((parent, name), node.ino)?;
                    t.insert(node.ino, enc(&node).as_slice())?;
                    node.ino
                }
            };
            kind = InodeKind::Dir;
        }
        Ok(parent)
    }

    /// The inode that names image `id`, if any.
    pub fn ino_of_image(&self, id: u128) -> Result<Option<u64>, CatalogError> {
        Ok(self
            .image_inodes()?
            .into_iter()
            .find(|(_, i)| *i == id)
            .map(|(ino, _)| ino))
    }

    /// Whether the namespace has anything at `(parent, name)`.
    pub fn name_taken(&self, parent: u64, name: &str) -> Result<bool, CatalogError> {
        let rx = self.db.begin_read()?;
        let d = rx.open_table(DIRENTS)?;
        Ok(d.get((parent, name))?.is_some())
    }
}
