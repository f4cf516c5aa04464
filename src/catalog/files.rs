//! File lists of images (NetBackup's `.f` files), and the folders an
//! imported image needs in the namespace.

use redb::ReadableDatabase;

use super::tables::{DIRENTS, FILES, dec, enc};
use super::{Catalog, CatalogError, FileAttrs, FileEntry, Inode, InodeKind, POOLS_INO};

impl Catalog {
    /// Stores the file list of an image.
    pub fn put_files(&self, id: u128, files: &[FileEntry]) -> Result<(), CatalogError> {
        let tx = self.db.begin_write()?;
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

    /// The directory `pools/POOL/a/b` for `dirs = [a, b]`, made as needed;
    /// returns its inode.
    pub fn ensure_dirs(
        &self,
        pool: &str,
        dirs: &[&str],
        attrs: FileAttrs,
    ) -> Result<u64, CatalogError> {
        let mut parent = POOLS_INO;
        let mut kind = InodeKind::Pool;
        for name in std::iter::once(pool).chain(dirs.iter().copied()) {
            parent = match self.lookup(parent, name)? {
                Some(Inode {
                    ino,
                    kind: InodeKind::Pool | InodeKind::Dir,
                    ..
                }) => ino,
                Some(_) => return Err(CatalogError::NotDir(name.into())),
                None => self.make_dir(parent, name, pool, kind.clone(), attrs)?.ino,
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
