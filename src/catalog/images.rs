//! Committing, reading and deleting images: the one transaction in which an
//! image and its volumes' append points become durable together.

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{DIRENTS, IMAGES, INODES, VOLUMES, dec, enc, named};
use super::{Catalog, CatalogError, FileAttrs, ImageRec, Inode, InodeKind, VolumeRec};

/// What a writer commits.
pub struct Commit<'a> {
    pub ino: u64,
    pub parent: u64,
    pub name: &'a str,
    pub attrs: FileAttrs,
    pub image: &'a ImageRec,
    /// New append point and state of each volume written.
    pub volumes: &'a [VolumeUpdate],
    /// Whether an image already at the name is replaced (a new version
    /// written through the mount) or the commit refused (import).
    pub replace: bool,
    /// The image's file list, stored in the same transaction (import).
    pub files: Option<&'a [super::FileEntry]>,
}

/// How a writer leaves a volume: its new append point and state. The
/// image count is incremented inside the commit transaction.
#[derive(Debug, Clone)]
pub struct VolumeUpdate {
    pub barcode: String,
    pub used: u64,
    pub state: super::VolumeState,
    /// Only count the image on the volume (an import onto a volume this
    /// store already holds): its state and length are its writer's.
    pub count_only: bool,
}

impl Catalog {
    /// Commits an image: record, namespace entry (replacing an older image
    /// at the same name, which leaves the catalog in the same transaction
    /// and is returned), volumes. Durable on return.
    pub fn commit_image(&self, c: Commit<'_>) -> Result<Option<ImageRec>, CatalogError> {
        let tx = self.begin()?;
        let replaced = self.commit_in(&tx, &c)?;
        super::tables::commit(tx)?;
        Ok(replaced)
    }

    /// [`Catalog::commit_image`] under `pools/POOL/DIRS…`, the folders made
    /// in the same transaction (import: a failed commit leaves no new
    /// pool or folder behind). `c.parent` is set to the innermost folder.
    pub fn commit_image_under(
        &self,
        pool: &str,
        dirs: &[&str],
        dir_attrs: FileAttrs,
        mut c: Commit<'_>,
    ) -> Result<Option<ImageRec>, CatalogError> {
        let tx = self.begin()?;
        c.parent = self.ensure_dirs_in(&tx, pool, dirs, dir_attrs)?;
        let replaced = self.commit_in(&tx, &c)?;
        super::tables::commit(tx)?;
        Ok(replaced)
    }

    fn commit_in(
        &self,
        tx: &redb::WriteTransaction,
        c: &Commit<'_>,
    ) -> Result<Option<ImageRec>, CatalogError> {
        let replaced = {
            let images = tx.open_table(IMAGES)?;
            // A re-commit of the same image (checkpoint at close, then more
            // writes) counts only volumes it did not hold before.
            let counted: std::collections::BTreeSet<String> = match images.get(c.image.id)? {
                Some(v) => dec::<ImageRec>(v.value())?
                    .fragments
                    .into_iter()
                    .map(|f| f.volume)
                    .collect(),
                None => Default::default(),
            };
            drop(images);
            let replaced = put_image(tx, c)?;
            super::retention::lock_new(tx, c.image, c.ino)?;
            let mut vols = tx.open_table(VOLUMES)?;
            for u in c.volumes {
                let cur = vols
                    .get(u.barcode.as_str())?
                    .map(|v| dec::<VolumeRec>(v.value()))
                    .transpose()?;
                let mut v =
                    cur.ok_or_else(|| CatalogError::NotFound(format!("volume {}", u.barcode)))?;
                if v.state == super::VolumeState::Scratch {
                    // Recycled since the image was written or read: the
                    // image would point at a volume that is gone.
                    return Err(CatalogError::NotFound(format!(
                        "volume {} (recycled to scratch meanwhile)",
                        u.barcode
                    )));
                }
                if !u.count_only {
                    v.used = u.used;
                    v.state = u.state;
                }
                if !counted.contains(&u.barcode) {
                    v.images += 1;
                }
                vols.insert(u.barcode.as_str(), enc(&v).as_slice())?;
            }
            replaced
        };
        Ok(replaced)
    }

    /// The image with this id.
    pub fn image(&self, id: u128) -> Result<Option<ImageRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(IMAGES)?;
        t.get(id)?.map(|v| dec(v.value())).transpose()
    }

    /// Every committed image.
    pub fn images(&self) -> Result<Vec<ImageRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(dec(e?.1.value())?);
        }
        Ok(out)
    }

    /// Removes the name of a file, symbolic link or special file. With the
    /// last name of an image goes the image: its volumes' image counts are
    /// decremented and it is returned, so the caller can recycle volumes
    /// that no longer hold anything.
    pub fn unlink(&self, parent: u64, name: &str) -> Result<Option<ImageRec>, CatalogError> {
        let tx = self.begin()?;
        let img = {
            let mut d = tx.open_table(DIRENTS)?;
            let mut t = tx.open_table(INODES)?;
            let node =
                named(&d, &t, parent, name)?.ok_or_else(|| CatalogError::NotFound(name.into()))?;
            if node.kind.is_dir() {
                return Err(CatalogError::IsDir(name.into()));
            }
            let id = super::links::remove_name(&tx, &mut d, &mut t, parent, name, node)?;
            super::links::touch_dir(&mut t, parent, crate::util::clock::now_ns())?;
            drop((d, t));
            id.map(|id| drop_image(&tx, id)).transpose()?
        };
        super::tables::commit(tx)?;
        Ok(img)
    }
}

/// Writes an image's record and namespace entry, replacing an older image
/// at the same name, which is dropped (volume counts, LSU references) in
/// the same transaction and returned.
pub(super) fn put_image(
    tx: &redb::WriteTransaction,
    c: &Commit<'_>,
) -> Result<Option<ImageRec>, CatalogError> {
    let mut d = tx.open_table(DIRENTS)?;
    let mut t = tx.open_table(INODES)?;
    let living: Option<Inode> = t.get(c.ino)?.map(|v| dec(v.value())).transpose()?;
    let replaced = match living {
        // The inode lives (a new version opened with O_TRUNC, or a
        // checkpoint of this one): it takes the version under whatever
        // names it has now, which an unlink or rename may have changed
        // since the writer started; its links and extended attributes stay.
        Some(
            node @ Inode {
                kind: InodeKind::Image(old_id),
                ..
            },
        ) if c.replace || old_id == c.image.id => {
            let node = Inode {
                kind: InodeKind::Image(c.image.id),
                attrs: c.attrs,
                ..node
            };
            t.insert(c.ino, enc(&node).as_slice())?;
            (old_id != c.image.id).then_some(old_id)
        }
        Some(_) => return Err(CatalogError::Exists(c.name.into())),
        None => new_name(tx, &mut d, &mut t, c)?,
    };
    tx.open_table(IMAGES)?
        .insert(c.image.id, enc(c.image).as_slice())?;
    if let Some(files) = c.files {
        tx.open_table(super::tables::FILES)?
            .insert(c.image.id, enc(&files).as_slice())?;
    }
    drop((d, t));
    replaced.map(|id| drop_image(tx, id)).transpose()
}

/// An image under a new inode at `(c.parent, c.name)`; an entry already
/// there (not a folder) loses the name when `c.replace`. Returns the image
/// that entry held if it was its last name.
fn new_name(
    tx: &redb::WriteTransaction,
    d: &mut super::tables::Dirents<'_>,
    t: &mut super::tables::Inodes<'_>,
    c: &Commit<'_>,
) -> Result<Option<u128>, CatalogError> {
    let mut replaced = None;
    if let Some(old) = named(d, t, c.parent, c.name)? {
        if old.kind.is_dir() {
            return Err(CatalogError::IsDir(c.name.into()));
        }
        if !c.replace {
            return Err(CatalogError::Exists(c.name.into()));
        }
        replaced = super::links::remove_name(tx, d, t, c.parent, c.name, old)?;
    }
    let node = Inode {
        ino: c.ino,
        parent: c.parent,
        name: c.name.into(),
        pool: c.image.pool.clone(),
        kind: InodeKind::Image(c.image.id),
        attrs: c.attrs,
    };
    d.insert((c.parent, c.name), c.ino)?;
    t.insert(c.ino, enc(&node).as_slice())?;
    super::links::touch_dir(t, c.parent, crate::util::clock::now_ns())?;
    Ok(replaced)
}

pub(super) fn drop_image(tx: &redb::WriteTransaction, id: u128) -> Result<ImageRec, CatalogError> {
    let mut images = tx.open_table(IMAGES)?;
    let img: ImageRec = dec(images
        .remove(id)?
        .ok_or_else(|| CatalogError::NotFound(format!("image {id:032x}")))?
        .value())?;
    super::retention::check_droppable(tx, &img)?;
    let mut vols = tx.open_table(VOLUMES)?;
    let mut seen = std::collections::BTreeSet::new();
    for f in &img.fragments {
        if !seen.insert(f.volume.clone()) {
            continue;
        }
        let rec = vols
            .get(f.volume.as_str())?
            .map(|v| dec::<VolumeRec>(v.value()))
            .transpose()?;
        if let Some(mut v) = rec {
            v.images = v.images.saturating_sub(1);
            vols.insert(f.volume.as_str(), enc(&v).as_slice())?;
        }
    }
    super::segrefs::release_image(tx, &img)?;
    tx.open_table(super::tables::FILES)?.remove(id)?;
    Ok(img)
}

impl Catalog {
    /// `(inode, image id)` of every file in the namespace.
    pub fn image_inodes(&self) -> Result<Vec<(u64, u128)>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(INODES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            if let InodeKind::Image(id) = dec::<Inode>(v.value())?.kind {
                out.push((k.value(), id));
            }
        }
        Ok(out)
    }
}
