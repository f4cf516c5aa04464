//! Restoring members of a tar image by its file list: each member's data
//! is read at the offset the list recorded, so a restore of one small file
//! from a large image reads only that file's blocks.
//!
//! The list describes an archive someone wrote, so nothing in it is
//! trusted on the way out either: a member path with `..` is refused, no
//! file is written through a symbolic link (a directory restored earlier
//! cannot redirect a later member), an existing file is never
//! overwritten, and set-id bits are not restored.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{EngineError, Reader};
use crate::catalog::{FileEntry, ImageRec};
use crate::store::Store;

/// Largest piece read from the image at once.
const CHUNK: u64 = 1 << 20;

/// What a restore did.
#[derive(Debug, Default, Serialize)]
pub struct Restored {
    /// Member paths restored, in archive order.
    pub restored: Vec<String>,
    /// Bytes of member data read from the image and written.
    pub bytes: u64,
    /// Members not restored, and why.
    pub skipped: Vec<(String, String)>,
}

/// A member path as tar lists it (`./a/b`, `a/b/`), compared and restored
/// as `a/b`.
fn normal(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The members `wanted` names: each one itself and, for a directory,
/// everything under it. Every name must match something.
fn select<'a>(
    image: &str,
    files: &'a [FileEntry],
    wanted: &[String],
) -> Result<Vec<&'a FileEntry>, EngineError> {
    let wanted: Vec<String> = wanted.iter().map(|w| normal(w)).collect();
    for w in &wanted {
        let found = files.iter().any(|f| {
            let p = normal(&f.path);
            w.is_empty() || p == *w || p.starts_with(&format!("{w}/"))
        });
        if !found {
            return Err(EngineError::NoMember {
                image: image.into(),
                member: w.clone(),
            });
        }
    }
    Ok(files
        .iter()
        .filter(|f| {
            let p = normal(&f.path);
            wanted
                .iter()
                .any(|w| w.is_empty() || p == *w || p.starts_with(&format!("{w}/")))
        })
        .collect())
}

/// Where member `path` goes under `to`, its parent directories made;
/// `Err(why)` if it would leave `to` or pass through a symbolic link.
fn destination(to: &Path, path: &str) -> Result<PathBuf, String> {
    let norm = normal(path);
    if norm.is_empty() {
        return Err("an empty member path".into());
    }
    let comps: Vec<&str> = norm.split('/').collect();
    if comps.contains(&"..") {
        return Err("its path climbs out of the restore directory (..)".into());
    }
    let mut dir = to.to_path_buf();
    for c in &comps[..comps.len() - 1] {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is a symbolic link", dir.display()));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Ok(dir.join(comps[comps.len() - 1]))
}

/// Restores `members` of image `img` (named `name` in messages) into the
/// directory `to`, by the image's file list `files`; `progress(done,
/// total)` counts bytes.
pub fn restore_members(
    store: &Store,
    name: &str,
    img: ImageRec,
    files: &[FileEntry],
    members: &[String],
    to: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Restored, EngineError> {
    let chosen = select(name, files, members)?;
    if !to.is_dir() {
        return Err(EngineError::io(
            to,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let total = chosen.iter().filter(|f| is_data(f)).map(|f| f.size).sum();
    let reader = Reader::open(store, img)?;
    let mut r = Restored::default();
    for f in chosen {
        let dest = match destination(to, &f.path) {
            Ok(d) => d,
            Err(why) => {
                r.skipped.push((f.path.clone(), why));
                continue;
            }
        };
        let outcome = match f.kind {
            _ if is_data(f) => copy_member(&reader, f, &dest, total, &mut r.bytes, &mut progress),
            b'5' => make_dir(&dest, f.mode),
            b'2' => symlink(f, &dest),
            b'1' => hard_link(to, f, &dest, &r.restored),
            k => Err(Skip(format!(
                "a special file (tar type '{}') is not restored",
                k as char
            ))),
        };
        match outcome {
            Ok(()) => r.restored.push(f.path.clone()),
            Err(Skip(why)) => r.skipped.push((f.path.clone(), why)),
        }
    }
    progress(total, total);
    tracing::info!(image = name, restored = r.restored.len(), bytes = r.bytes, skipped = r.skipped.len(), to = %to.display(), "members restored");
    Ok(r)
}

/// Why one member was not restored (the others go on).
struct Skip(String);

impl<E: std::fmt::Display> From<(&Path, E)> for Skip {
    fn from((p, e): (&Path, E)) -> Self {
        Skip(format!("{}: {e}", p.display()))
    }
}

/// A member whose data is in the archive (a regular file).
fn is_data(f: &FileEntry) -> bool {
    matches!(f.kind, b'0' | b'7')
}

/// Set-id and sticky bits from an archive are not restored.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o777
}

fn copy_member(
    reader: &Reader,
    f: &FileEntry,
    dest: &Path,
    total: u64,
    bytes: &mut u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), Skip> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|e| Skip::from((dest, e)))?;
    let mut done = 0;
    while done < f.size {
        let n = (f.size - done).min(CHUNK);
        let data = reader
            .read_at(f.offset + done, n as usize)
            .map_err(|e| Skip(format!("reading it from the image: {e}")))?;
        if data.len() as u64 != n {
            return Err(Skip(format!(
                "the image ends inside it ({} of {} bytes)",
                done + data.len() as u64,
                f.size
            )));
        }
        out.write_all(&data).map_err(|e| Skip::from((dest, e)))?;
        done += n;
        *bytes += n;
        progress(*bytes, total);
    }
    out.set_permissions(std::fs::Permissions::from_mode(safe_mode(f.mode)))
        .map_err(|e| Skip::from((dest, e)))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.mtime);
    out.set_modified(mtime).map_err(|e| Skip::from((dest, e)))?;
    out.sync_all().map_err(|e| Skip::from((dest, e)))
}

fn make_dir(dest: &Path, mode: u32) -> Result<(), Skip> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Skip(format!(
            "{} exists and is not a directory",
            dest.display()
        ))),
        Err(_) => {
            std::fs::create_dir(dest).map_err(|e| Skip::from((dest, e)))?;
            std::fs::set_permissions(
                dest,
                std::fs::Permissions::from_mode(safe_mode(mode) | 0o700),
            )
            .map_err(|e| Skip::from((dest, e)))
        }
    }
}

fn symlink(f: &FileEntry, dest: &Path) -> Result<(), Skip> {
    let target = f
        .link
        .as_deref()
        .ok_or_else(|| Skip("a symbolic link without a target".into()))?;
    std::os::unix::fs::symlink(target, dest).map_err(|e| Skip::from((dest, e)))
}

/// A hard link is made to its target if this restore wrote the target.
fn hard_link(to: &Path, f: &FileEntry, dest: &Path, restored: &[String]) -> Result<(), Skip> {
    let target = normal(f.link.as_deref().unwrap_or_default());
    if !restored.iter().any(|r| normal(r) == target) {
        return Err(Skip(format!(
            "a hard link to {target}, which this restore did not write: restore {target} too"
        )));
    }
    std::fs::hard_link(to.join(&target), dest).map_err(|e| Skip::from((dest, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 0,
            mode: 0o644,
            mtime: 0,
            kind: b'0',
            link: None,
            offset: 0,
        }
    }

    #[test]
    fn members_are_chosen_by_path_and_directory() {
        let files = [entry("./a/"), entry("./a/x"), entry("./ab"), entry("b")];
        let pick = |w: &[&str]| -> Vec<String> {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            select("img", &files, &w)
                .unwrap()
                .into_iter()
                .map(|f| f.path.clone())
                .collect()
        };
        assert_eq!(pick(&["a"]), ["./a/", "./a/x"]);
        assert_eq!(pick(&["./b"]), ["b"]);
        assert_eq!(pick(&["."]).len(), 4, "`.` is the whole archive");
        assert!(matches!(
            select("img", &files, &["c".to_string()]),
            Err(EngineError::NoMember { member, .. }) if member == "c"
        ));
    }

    #[test]
    fn a_member_never_lands_outside_the_directory_or_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let to = d.path().join("out");
        std::fs::create_dir(&to).unwrap();
        assert!(destination(&to, "../../etc/passwd").is_err());
        assert!(destination(&to, "a/../../x").is_err());
        assert_eq!(destination(&to, "/etc/x").unwrap(), to.join("etc/x"));
        std::os::unix::fs::symlink(d.path(), to.join("link")).unwrap();
        let e = destination(&to, "link/escape").unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!d.path().join("escape").exists());
    }
}
