//! Persistence of the LSUs: their records, key dictionaries, segment
//! indexes (fingerprint -> location and reference count), containers and
//! image recipes. All of it lives in the catalog database so that an
//! image's namespace entry, its recipe and the reference counts of its
//! segments change in one durable transaction: a crash leaves either the
//! image with every segment it needs counted, or neither.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use super::images::{Commit, put_image};
use super::lsu_records::{ContainerRec, KekRec, LsuRec, SegRec, SegRef, StoredKey};
use super::segrefs::{Fp, KekTable, SegTable, U64Table, lsu_pool, names, release_recipe};
use super::tables::{DIRENTS, INODES, LSUS, RECIPES, dec, enc};
use super::{Catalog, CatalogError, FileAttrs, ImageRec, Inode, InodeKind, MSDP_INO};
use crate::kms::WrappedKey;

/// What an LSU writer commits besides the image.
pub struct LsuCommit<'a> {
    pub lsu: &'a str,
    pub recipe: &'a [SegRef],
    /// Segments this writer stored, not yet in the index.
    pub new_segments: &'a HashMap<Fp, SegRec>,
    /// Containers this writer appended to, with their durable size.
    pub containers: &'a [(u64, ContainerRec)],
    /// (KEK id, DEKs wrapped, bytes) since the last commit.
    pub kek_usage: Option<(u32, u64, u64)>,
    /// Tag of the KMS key this writer sealed legacy segments under: the
    /// commit records it in the LSU (so the key stays pinned), even if a
    /// conversion to KMS mode finished while the image was written.
    pub legacy_tag: Option<&'a str>,
}

/// How a reclaim moves a segment: its new place (refs are kept).
pub struct Move {
    pub fp: Fp,
    pub to: SegRec,
}

impl Catalog {
    /// Creates an LSU and its directory `msdp/NAME`.
    pub fn create_lsu(&self, rec: &LsuRec, attrs: FileAttrs) -> Result<Inode, CatalogError> {
        self.restore_lsu(rec, &[], &[], attrs)
    }

    /// Makes an LSU with its key dictionary and containers (rebuilt from
    /// its files by `kmsfs lsu recover`; none for a new LSU) and its
    /// directory `msdp/NAME`, in one transaction.
    pub fn restore_lsu(
        &self,
        rec: &LsuRec,
        keks: &[KekRec],
        containers: &[(u64, ContainerRec)],
        attrs: FileAttrs,
    ) -> Result<Inode, CatalogError> {
        let tx = self.begin()?;
        let node = {
            let mut lsus = tx.open_table(LSUS)?;
            let mut d = tx.open_table(DIRENTS)?;
            if lsus.get(rec.name.as_str())?.is_some()
                || d.get((MSDP_INO, rec.name.as_str()))?.is_some()
            {
                return Err(CatalogError::Exists(format!("LSU {}", rec.name)));
            }
            let node = Inode {
                ino: self.alloc_ino(),
                parent: MSDP_INO,
                name: rec.name.clone(),
                pool: lsu_pool(&rec.name),
                kind: InodeKind::Pool,
                attrs,
            };
            d.insert((MSDP_INO, rec.name.as_str()), node.ino)?;
            tx.open_table(INODES)?
                .insert(node.ino, enc(&node).as_slice())?;
            lsus.insert(rec.name.as_str(), enc(rec).as_slice())?;
            let n = names(&rec.name);
            tx.open_table(SegTable::new(&n.segments))?;
            let mut ct = tx.open_table(U64Table::new(&n.containers))?;
            for (id, c) in containers {
                ct.insert(*id, enc(c).as_slice())?;
            }
            let mut kt = tx.open_table(KekTable::new(&n.keks))?;
            for k in keks {
                kt.insert(k.id, enc(k).as_slice())?;
            }
            node
        };
        super::tables::commit(tx)?;
        Ok(node)
    }

    /// Adds the KEKs and containers an LSU lacks (a recovery resumed with
    /// more of its files); entries it has are left as they are.
    pub fn add_lsu_parts(
        &self,
        lsu: &str,
        keks: &[KekRec],
        containers: &[(u64, ContainerRec)],
    ) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        {
            let n = names(lsu);
            let mut ct = tx.open_table(U64Table::new(&n.containers))?;
            for (id, c) in containers {
                if ct.get(*id)?.is_none() {
                    ct.insert(*id, enc(c).as_slice())?;
                }
            }
            let mut kt = tx.open_table(KekTable::new(&n.keks))?;
            for k in keks {
                if kt.get(k.id)?.is_none() {
                    kt.insert(k.id, enc(k).as_slice())?;
                }
            }
        }
        super::tables::commit(tx)?;
        Ok(())
    }

    /// [`Catalog::commit_lsu_image`] under `msdp/LSU/DIRS…`, the folders
    /// made in the same transaction; `c.parent` is set to the innermost.
    pub fn commit_lsu_image_under(
        &self,
        dirs: &[&str],
        dir_attrs: FileAttrs,
        mut c: Commit<'_>,
        l: LsuCommit<'_>,
    ) -> Result<Option<ImageRec>, CatalogError> {
        let tx = self.begin()?;
        let replaced = {
            let root = {
                let d = tx.open_table(DIRENTS)?;
                d.get((MSDP_INO, l.lsu))?
                    .map(|v| v.value())
                    .ok_or_else(|| CatalogError::NotFound(format!("LSU {}", l.lsu)))?
            };
            c.parent = self.ensure_path_in(&tx, root, &lsu_pool(l.lsu), dirs, dir_attrs)?;
            release_recipe(&tx, l.lsu, c.image.id)?;
            let replaced = put_image(&tx, &c)?;
            super::retention::lock_new(&tx, c.image, c.ino)?;
            add_recipe(&tx, &l, c.image.id)?;
            replaced
        };
        super::tables::commit(tx)?;
        Ok(replaced)
    }

    /// The LSU named `name`.
    pub fn lsu(&self, name: &str) -> Result<Option<LsuRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(LSUS)?;
        t.get(name)?.map(|v| dec(v.value())).transpose()
    }

    /// Every LSU.
    pub fn lsus(&self) -> Result<Vec<LsuRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(LSUS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(dec(e?.1.value())?);
        }
        Ok(out)
    }

    /// Changes an LSU record in one transaction (read, change, write), so
    /// two changes made at the same time never undo one another. Returns
    /// the record as written.
    pub fn update_lsu(
        &self,
        name: &str,
        change: impl FnOnce(&mut LsuRec),
    ) -> Result<LsuRec, CatalogError> {
        let tx = self.begin()?;
        let rec = {
            let mut lsus = tx.open_table(LSUS)?;
            let mut rec = read_lsu(&lsus, name)?;
            change(&mut rec);
            lsus.insert(name, enc(&rec).as_slice())?;
            rec
        };
        super::tables::commit(tx)?;
        Ok(rec)
    }

    /// The key dictionary of an LSU, by KEK id.
    pub fn keks(&self, lsu: &str) -> Result<Vec<KekRec>, CatalogError> {
        let rx = self.db.begin_read()?;
        let n = names(lsu);
        let t = rx.open_table(KekTable::new(&n.keks))?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(dec(e?.1.value())?);
        }
        Ok(out)
    }

    /// Adds a new KEK as the LSU's active one, in one transaction: its id
    /// is the next free one (never an existing id: a KEK record is never
    /// overwritten by another key), the others become inactive.
    pub fn insert_active_kek(
        &self,
        lsu: &str,
        make: impl FnOnce(u32) -> KekRec,
    ) -> Result<KekRec, CatalogError> {
        let tx = self.begin()?;
        let kek = {
            let n = names(lsu);
            let mut t = tx.open_table(KekTable::new(&n.keks))?;
            let mut all: Vec<KekRec> = Vec::new();
            for e in t.iter()? {
                all.push(dec(e?.1.value())?);
            }
            let id = all.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            let kek = make(id);
            if kek.id != id || t.get(id)?.is_some() {
                return Err(CatalogError::Exists(format!("KEK {} of LSU {lsu}", kek.id)));
            }
            for mut k in all.into_iter().filter(|k| k.active) {
                k.active = false;
                t.insert(k.id, enc(&k).as_slice())?;
            }
            t.insert(id, enc(&kek).as_slice())?;
            let mut lsus = tx.open_table(LSUS)?;
            let mut rec = read_lsu(&lsus, lsu)?;
            rec.active_kek = Some(id);
            lsus.insert(lsu, enc(&rec).as_slice())?;
            kek
        };
        super::tables::commit(tx)?;
        Ok(kek)
    }

    /// Replaces the wrapped form of KEKs and of the fingerprint key (a
    /// rewrap) in one transaction; every other field stays as it is now.
    pub fn rewrap_keys(
        &self,
        lsu: &str,
        fp_key: Option<StoredKey>,
        keks: &[(u32, WrappedKey)],
    ) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        {
            let n = names(lsu);
            let mut t = tx.open_table(KekTable::new(&n.keks))?;
            for (id, w) in keks {
                let mut k: KekRec = dec(t
                    .get(*id)?
                    .ok_or_else(|| CatalogError::NotFound(format!("KEK {id} of LSU {lsu}")))?
                    .value())?;
                k.wrapped = w.clone();
                t.insert(*id, enc(&k).as_slice())?;
            }
            if let Some(fp) = fp_key {
                let mut lsus = tx.open_table(LSUS)?;
                let mut rec = read_lsu(&lsus, lsu)?;
                rec.fp_key = fp;
                lsus.insert(lsu, enc(&rec).as_slice())?;
            }
        }
        super::tables::commit(tx)?;
        Ok(())
    }

    /// Index entries of `fps` (one read transaction).
    pub fn segments(&self, lsu: &str, fps: &[Fp]) -> Result<Vec<Option<SegRec>>, CatalogError> {
        let rx = self.db.begin_read()?;
        let n = names(lsu);
        let t = rx.open_table(SegTable::new(&n.segments))?;
        fps.iter()
            .map(|fp| t.get(fp)?.map(|v| dec(v.value())).transpose())
            .collect()
    }

    /// Calls `f` for every index entry of an LSU; returns the containers
    /// as of the same snapshot.
    pub fn for_each_segment(
        &self,
        lsu: &str,
        mut f: impl FnMut(&Fp, &SegRec),
    ) -> Result<Vec<(u64, ContainerRec)>, CatalogError> {
        let rx = self.db.begin_read()?;
        let n = names(lsu);
        let t = rx.open_table(SegTable::new(&n.segments))?;
        for e in t.iter()? {
            let (k, v) = e?;
            f(k.value(), &dec(v.value())?);
        }
        let ct = rx.open_table(U64Table::new(&n.containers))?;
        let mut out = Vec::new();
        for e in ct.iter()? {
            let (k, v) = e?;
            out.push((k.value(), dec(v.value())?));
        }
        Ok(out)
    }

    /// The containers of an LSU, by id.
    pub fn containers(&self, lsu: &str) -> Result<Vec<(u64, ContainerRec)>, CatalogError> {
        let rx = self.db.begin_read()?;
        let n = names(lsu);
        let t = rx.open_table(U64Table::new(&n.containers))?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            out.push((k.value(), dec(v.value())?));
        }
        Ok(out)
    }

    /// The recipe of an LSU image.
    pub fn recipe(&self, id: u128) -> Result<Option<Vec<SegRef>>, CatalogError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(RECIPES)?;
        t.get(id)?.map(|v| dec(v.value())).transpose()
    }

    /// Commits an LSU image: namespace entry, image record, recipe, the
    /// reference counts of every segment it uses, the index entries of its
    /// new segments, its containers' sizes and its KEK's counters, in one
    /// transaction. Durable on return.
    pub fn commit_lsu_image(
        &self,
        c: Commit<'_>,
        l: LsuCommit<'_>,
    ) -> Result<Option<ImageRec>, CatalogError> {
        let tx = self.begin()?;
        let replaced = {
            release_recipe(&tx, l.lsu, c.image.id)?;
            let replaced = put_image(&tx, &c)?;
            super::retention::lock_new(&tx, c.image, c.ino)?;
            add_recipe(&tx, &l, c.image.id)?;
            let n = names(l.lsu);
            let mut ct = tx.open_table(U64Table::new(&n.containers))?;
            for (id, rec) in l.containers {
                ct.insert(*id, enc(rec).as_slice())?;
            }
            if let Some((id, segs, bytes)) = l.kek_usage {
                let mut kt = tx.open_table(KekTable::new(&n.keks))?;
                let cur = kt.get(id)?.map(|v| dec::<KekRec>(v.value())).transpose()?;
                if let Some(mut k) = cur {
                    k.sealed_segments += segs;
                    k.sealed_bytes += bytes;
                    kt.insert(id, enc(&k).as_slice())?;
                }
            }
            if let Some(tag) = l.legacy_tag {
                note_legacy_tag(&tx, l.lsu, tag)?;
            }
            replaced
        };
        super::tables::commit(tx)?;
        Ok(replaced)
    }

    /// Removes index entries nobody references (refs 0) unless `keep`
    /// says a writer is about to use them. Returns what was removed.
    pub fn drop_dead_segments(
        &self,
        lsu: &str,
        keep: impl Fn(&Fp) -> bool,
    ) -> Result<Vec<(Fp, SegRec)>, CatalogError> {
        let tx = self.begin()?;
        let dead = {
            let n = names(lsu);
            let mut t = tx.open_table(SegTable::new(&n.segments))?;
            let mut dead = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                let rec: SegRec = dec(v.value())?;
                if rec.refs == 0 && !keep(k.value()) {
                    dead.push((*k.value(), rec));
                }
            }
            for (fp, _) in &dead {
                t.remove(fp)?;
            }
            dead
        };
        super::tables::commit(tx)?;
        Ok(dead)
    }

    /// Points moved segments at their new place, records `new` containers
    /// and forgets `retired` ones, in one transaction. A segment removed
    /// meanwhile stays removed.
    pub fn relocate(
        &self,
        lsu: &str,
        moves: &[Move],
        new: &[(u64, ContainerRec)],
        retired: &[u64],
    ) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        {
            let n = names(lsu);
            let mut t = tx.open_table(SegTable::new(&n.segments))?;
            for m in moves {
                let cur = t
                    .get(&m.fp)?
                    .map(|v| dec::<SegRec>(v.value()))
                    .transpose()?;
                if let Some(cur) = cur {
                    let to = SegRec {
                        refs: cur.refs,
                        ..m.to.clone()
                    };
                    t.insert(&m.fp, enc(&to).as_slice())?;
                }
            }
            let mut ct = tx.open_table(U64Table::new(&n.containers))?;
            for (id, rec) in new {
                ct.insert(*id, enc(rec).as_slice())?;
            }
            for id in retired {
                ct.remove(*id)?;
            }
        }
        super::tables::commit(tx)?;
        Ok(())
    }
}

/// Records that legacy segments of `lsu` are sealed under `tag`; an LSU
/// already converted to KMS mode goes back to converting.
fn note_legacy_tag(tx: &redb::WriteTransaction, lsu: &str, tag: &str) -> Result<(), CatalogError> {
    let mut lsus = tx.open_table(LSUS)?;
    let mut rec = read_lsu(&lsus, lsu)?;
    if rec.legacy_tags.iter().any(|t| t == tag)
        && (rec.converting || rec.mode != super::LsuMode::Kms)
    {
        return Ok(());
    }
    if !rec.legacy_tags.iter().any(|t| t == tag) {
        rec.legacy_tags.push(tag.to_string());
    }
    if rec.mode == super::LsuMode::Kms {
        rec.converting = true;
    }
    lsus.insert(lsu, enc(&rec).as_slice())?;
    Ok(())
}

/// The record of LSU `name` in a table open for writing.
fn read_lsu(
    t: &redb::Table<'_, &'static str, &'static [u8]>,
    name: &str,
) -> Result<LsuRec, CatalogError> {
    dec(t
        .get(name)?
        .ok_or_else(|| CatalogError::NotFound(format!("LSU {name}")))?
        .value())
}

/// Adds one reference per recipe entry; new segments enter the index.
fn add_recipe(
    tx: &redb::WriteTransaction,
    l: &LsuCommit<'_>,
    id: u128,
) -> Result<(), CatalogError> {
    let n = names(l.lsu);
    let mut t = tx.open_table(SegTable::new(&n.segments))?;
    for r in l.recipe {
        let cur = t
            .get(&r.fp)?
            .map(|v| dec::<SegRec>(v.value()))
            .transpose()?;
        let rec = match cur {
            Some(mut s) => {
                s.refs += 1;
                s
            }
            None => {
                let mut s = l.new_segments.get(&r.fp).cloned().ok_or_else(|| {
                    CatalogError::NotFound(format!(
                        "segment {} of LSU {}",
                        hex::encode(&r.fp[..8]),
                        l.lsu
                    ))
                })?;
                s.refs = 1;
                s
            }
        };
        t.insert(&r.fp, enc(&rec).as_slice())?;
    }
    tx.open_table(RECIPES)?
        .insert(id, enc(&l.recipe.to_vec()).as_slice())?;
    Ok(())
}
