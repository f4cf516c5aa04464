//! Keeps an LSU's key dictionary file and one recipe file per image beside
//! its containers (`STORE/lsu/NAME/keydict.kkd`, `recipes/ID.krc`; the
//! layouts are in [`super::manifest`]), so that the LSU's directory alone,
//! with the KMS, is enough to rebuild it (`kmsfs lsu recover`).
//!
//! An image's recipe file is durable before the catalog transaction that
//! commits the image, and the key dictionary file names every KEK the
//! image's segments are sealed under before that commit too. Files of
//! images that left the catalog are removed when they leave (best effort)
//! and by `lsu gc` (which also writes the files of images committed before
//! kmsfs kept them).

use std::collections::HashSet;
use std::path::Path;

use super::manifest::{self, KEYDICT_FILE, KeyDict, RecipeFile};
use super::state::{LsuState, keydict_path, recipes_dir};
use super::{Msdp, MsdpError};
use crate::catalog::{FileAttrs, ImageRec, SegRef, lsu_of_pool};
use crate::crypto::SecretKey;
use crate::util::atomic::write_atomic;

/// Ids of the recipe files in `dir` (none if it does not exist).
pub fn recipe_files(dir: &Path) -> Result<Vec<u128>, MsdpError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MsdpError::io(dir.display().to_string(), e)),
    };
    Ok(rd
        .flatten()
        .filter_map(|e| manifest::recipe_id_of(&e.file_name().to_string_lossy()))
        .collect())
}

impl Msdp {
    /// Writes the LSU's key dictionary file if it differs from what the
    /// catalog holds now. Serialized per LSU, and the catalog is read
    /// under the lock, so the file never goes back to an older dictionary.
    /// `fp_key`: the LSU's fingerprint key if the caller holds it (else
    /// it is fetched).
    pub(crate) fn save_keydict(
        &self,
        name: &str,
        fp_key: Option<&SecretKey>,
    ) -> Result<(), MsdpError> {
        let state = self.state(name)?;
        let mut last = state.keydict.lock();
        let rec = self.lsu_rec(name)?;
        let keks = self.catalog.keks(name)?;
        let fetched;
        let fp_key = match fp_key {
            Some(k) => k,
            None => {
                fetched = self.fp_key(&rec)?;
                &*fetched
            }
        };
        let bytes = KeyDict { lsu: rec, keks }.encode(&manifest::keydict_mac_key(fp_key));
        if last.as_deref() == Some(&bytes[..]) {
            return Ok(());
        }
        let path = keydict_path(&state.lsu_dir);
        write_atomic(&path, &bytes, 0o600)
            .map_err(|e| MsdpError::io(format!("writing {}", path.display()), e))?;
        state.backend.publish_file(KEYDICT_FILE, &bytes)?;
        *last = Some(bytes);
        Ok(())
    }

    /// Removes the recipe file of an image that left the catalog (deleted,
    /// or replaced by a new version). A failure is logged: `lsu gc` removes
    /// what is left.
    pub fn forget_recipe(&self, img: &ImageRec) {
        let Some(name) = lsu_of_pool(&img.pool) else {
            return;
        };
        let Ok(state) = self.state(name) else {
            return;
        };
        let p = recipes_dir(&state.lsu_dir).join(manifest::recipe_file_name(img.id));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %p.display(), "removing the recipe file of a removed image: {e}")
            }
        }
        if let Err(e) = state.backend.remove_file(&recipe_rel(img.id)) {
            tracing::warn!("removing the recipe of a removed image: {e} (lsu gc removes it)");
        }
    }

    /// Recipe files of images the catalog does not hold and no writer is
    /// writing are removed; images without one get one. Returns (removed,
    /// written).
    pub(super) fn tidy_recipes(&self, state: &LsuState) -> Result<(usize, usize), MsdpError> {
        let dir = recipes_dir(&state.lsu_dir);
        let pool = crate::catalog::lsu_pool(&state.name);
        // Writers in flight before the catalog is read: one that commits
        // and ends in between is in `images` or in `busy`, never neither.
        let busy = state.inflight.lock().images.clone();
        let images: Vec<ImageRec> = self
            .catalog
            .images()?
            .into_iter()
            .filter(|i| i.pool == pool)
            .collect();
        let known: HashSet<u128> = images.iter().map(|i| i.id).collect();
        let on_disk: HashSet<u128> = recipe_files(&dir)?.into_iter().collect();
        // A cloud LSU's bucket holds them too (a local copy may be gone).
        let in_bucket: HashSet<u128> = state
            .backend
            .list_files("recipes")?
            .iter()
            .filter_map(|n| manifest::recipe_id_of(n))
            .collect();
        let mut removed = 0;
        for id in on_disk.union(&in_bucket) {
            if known.contains(id) || busy.contains(id) || self.still_wanted(state, *id)? {
                continue;
            }
            let p = dir.join(manifest::recipe_file_name(*id));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MsdpError::io(format!("removing {}", p.display()), e)),
            }
            state.backend.remove_file(&recipe_rel(*id))?;
            removed += 1;
        }
        // Images without a file, and files whose name or attributes are
        // not the namespace's now (an image renamed with its folder). Best
        // effort: without the KMS this part waits for the next gc.
        let written = match self.rewrite_recipes(state, &images, &on_disk, &busy) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(lsu = %state.name, "recipe files not brought up to date: {e}");
                0
            }
        };
        crate::util::atomic::sync_dir(&dir)
            .map_err(|e| MsdpError::io(dir.display().to_string(), e))?;
        Ok((removed, written))
    }

    /// Whether image `id`'s recipe is needed after all: a writer that began
    /// after the snapshots pins it (its file may be on disk before its
    /// commit), or it committed since. In this order: pinned now, or
    /// committed before it let go.
    fn still_wanted(&self, state: &LsuState, id: u128) -> Result<bool, MsdpError> {
        if state.inflight.lock().images.contains(&id) {
            return Ok(true);
        }
        Ok(self.catalog.image(id)?.is_some())
    }

    /// Writes the recipe files that are missing or differ from the
    /// catalog (not those of images being written: their writer does).
    fn rewrite_recipes(
        &self,
        state: &LsuState,
        images: &[ImageRec],
        on_disk: &HashSet<u128>,
        busy: &HashSet<u128>,
    ) -> Result<usize, MsdpError> {
        let mut written = 0;
        let rec = self.lsu_rec(&state.name)?;
        let fk = self.fp_key(&rec)?;
        let key = manifest::recipe_key(&fk);
        let dir = recipes_dir(&state.lsu_dir);
        for img in images.iter().filter(|i| !busy.contains(&i.id)) {
            let Some(now) = self.recipe_now(img)? else {
                continue;
            };
            if on_disk.contains(&img.id) {
                let p = dir.join(manifest::recipe_file_name(img.id));
                let same = std::fs::read(&p)
                    .ok()
                    .and_then(|b| RecipeFile::decode(&b, &state.id, &key).ok())
                    .is_some_and(|f| f == now);
                if same {
                    continue;
                }
            }
            put_recipe(state, &key, &now)?;
            written += 1;
        }
        Ok(written)
    }

    /// Rewrites the recipe files of every LSU image below folder `ino`
    /// (after the folder was renamed). Best effort, like a file's.
    pub fn refresh_recipes_below(&self, ino: u64) {
        let mut todo = vec![ino];
        while let Some(dir) = todo.pop() {
            let Ok(children) = self.catalog.children(dir) else {
                return;
            };
            for c in children {
                match c.kind {
                    crate::catalog::InodeKind::Image(id) => self.refresh_recipe(id),
                    k if k.is_dir() => todo.push(c.ino),
                    _ => {}
                }
            }
        }
    }

    /// Rewrites the recipe file of image `id` from the catalog (after a
    /// rename: rsync writes a temporary name and renames it). A failure
    /// is logged: `lsu gc` writes it again.
    pub fn refresh_recipe(&self, id: u128) {
        let r = (|| {
            let Some(img) = self.catalog.image(id)? else {
                return Ok(());
            };
            let Some(name) = lsu_of_pool(&img.pool) else {
                return Ok(());
            };
            let state = self.state(name)?;
            let rec = self.lsu_rec(name)?;
            let fk = self.fp_key(&rec)?;
            let key = manifest::recipe_key(&fk);
            match self.recipe_now(&img)? {
                Some(now) => put_recipe(&state, &key, &now),
                None => Ok(()),
            }
        })();
        if let Err(e) = r {
            tracing::warn!(
                image = id,
                "rewriting a recipe file after a rename: {e} (lsu gc writes it again)"
            );
        }
    }

    /// The recipe file an image in the catalog should have now, if it is
    /// an LSU image with a name.
    fn recipe_now(&self, img: &ImageRec) -> Result<Option<RecipeFile>, MsdpError> {
        let Some(segments) = self.catalog.recipe(img.id)? else {
            return Ok(None);
        };
        let Some(ino) = self.catalog.ino_of_image(img.id)? else {
            return Ok(None);
        };
        let Some(node) = self.catalog.inode(ino)? else {
            return Ok(None);
        };
        Ok(Some(RecipeFile {
            image: img.id,
            path: self.catalog_path(img, ino)?,
            size: img.size,
            created_ns: img.created_ns,
            attrs: node.attrs,
            segments,
        }))
    }

    /// The image's path inside its LSU as the namespace has it now.
    fn catalog_path(&self, img: &ImageRec, ino: u64) -> Result<String, MsdpError> {
        // `NAME/a/b` (path_of starts below `msdp/`).
        let full = self.catalog.path_of(ino)?;
        let prefix = format!("{}/", lsu_of_pool(&img.pool).unwrap_or_default());
        Ok(full
            .strip_prefix(&prefix)
            .map(str::to_string)
            .unwrap_or_else(|| img.path.clone()))
    }
}

/// Writes (replaces) the recipe file of `img`, durably.
pub(super) fn write_recipe(
    state: &LsuState,
    key: &SecretKey,
    img: &ImageRec,
    path: &str,
    attrs: FileAttrs,
    segments: Vec<SegRef>,
) -> Result<(), MsdpError> {
    let r = RecipeFile {
        image: img.id,
        path: path.to_string(),
        size: img.size,
        created_ns: img.created_ns,
        attrs,
        segments,
    };
    put_recipe(state, key, &r)
}

fn put_recipe(state: &LsuState, key: &SecretKey, r: &RecipeFile) -> Result<(), MsdpError> {
    let bytes = r
        .encode(&state.id, key)
        .map_err(|e| MsdpError::Refused(format!("recipe of image {}: {e}", r.path)))?;
    let p = recipes_dir(&state.lsu_dir).join(manifest::recipe_file_name(r.image));
    crate::util::atomic::write_atomic_past(
        &p,
        &bytes,
        0o600,
        Some(crate::util::failpoint::RECIPE_WRITE),
    )
    .map_err(|e| MsdpError::io(format!("writing {}", p.display()), e))?;
    state.backend.publish_file(&recipe_rel(r.image), &bytes)
}

/// `recipes/ID.krc`: a recipe file's name in the LSU's directory or prefix.
pub fn recipe_rel(id: u128) -> String {
    format!("recipes/{}", manifest::recipe_file_name(id))
}
