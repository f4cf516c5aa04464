//! Restoring members of a tar image by its file list: each member's data
//! is read at the offset the list recorded, so a restore of one small file
//! from a large image reads only that file's blocks.
//!
//! The list describes an archive someone wrote, so nothing in it is
//! trusted on the way out either: a member path with `..` is refused, no
//! file is written through a symbolic link (a directory restored earlier
//! cannot redirect a later member), an existing file is never
//! overwritten, and set-id bits are not restored. Every step works on
//! directory descriptors opened once with `O_NOFOLLOW` (`openat`,
//! `mkdirat`, `symlinkat`, `linkat`, `fchmod`), so a directory swapped for
//! a symbolic link while the restore runs is refused, not followed.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
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

/// The components of member `path` under the restore directory, or why
/// it may not be restored there.
fn components(path: &str) -> Result<Vec<String>, String> {
    let norm = normal(path);
    if norm.is_empty() {
        return Err("an empty member path".into());
    }
    let comps: Vec<String> = norm.split('/').map(str::to_string).collect();
    if comps.iter().any(|c| c == "..") {
        return Err("its path climbs out of the restore directory (..)".into());
    }
    Ok(comps)
}

/// Opens directory `name` in `dir` without following a symbolic link.
fn open_dir(dir: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The directory that holds the last of `comps`, walked from `root` one
/// descriptor at a time (made where missing if `create`); never through a
/// symbolic link.
fn parent_of(root: &OwnedFd, comps: &[String], create: bool) -> Result<OwnedFd, String> {
    let mut dir = open_dir(root, ".").map_err(|e| format!("the restore directory: {e}"))?;
    for c in &comps[..comps.len() - 1] {
        let next = match open_dir(&dir, c) {
            Err(rustix::io::Errno::NOENT) if create => {
                rustix::fs::mkdirat(&dir, c.as_str(), Mode::from_raw_mode(0o700))
                    .or_else(|e| {
                        if e == rustix::io::Errno::EXIST {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .and_then(|()| open_dir(&dir, c))
            }
            other => other,
        };
        dir = next.map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                format!("{c} is a symbolic link or not a directory")
            }
            e => format!("{c}: {e}"),
        })?;
    }
    Ok(dir)
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
    let root: OwnedFd = rustix::fs::open(
        to,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| EngineError::io(to, e.into()))?;
    let total = chosen.iter().filter(|f| is_data(f)).map(|f| f.size).sum();
    let reader = Reader::open(store, img)?;
    let mut r = Restored::default();
    for f in chosen {
        let placed =
            components(&f.path).and_then(|c| parent_of(&root, &c, true).map(|dir| (dir, c)));
        let (dir, comps) = match placed {
            Ok(p) => p,
            Err(why) => {
                r.skipped.push((f.path.clone(), why));
                continue;
            }
        };
        let leaf = comps.last().expect("non-empty").as_str();
        let at = At {
            dir: &dir,
            name: leaf,
        };
        let outcome = match f.kind {
            _ if is_data(f) => copy_member(&reader, f, &at, total, &mut r.bytes, &mut progress),
            b'5' => make_dir(&at, f.mode),
            b'2' => symlink(f, &at),
            b'1' => hard_link(&root, f, &at, &r.restored),
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

impl From<rustix::io::Errno> for Skip {
    fn from(e: rustix::io::Errno) -> Self {
        Skip(e.to_string())
    }
}

impl From<std::io::Error> for Skip {
    fn from(e: std::io::Error) -> Self {
        Skip(e.to_string())
    }
}

/// Where a member goes: `name` in the open directory `dir`.
struct At<'a> {
    dir: &'a OwnedFd,
    name: &'a str,
}

/// A member whose data is in the archive (a regular file).
fn is_data(f: &FileEntry) -> bool {
    matches!(f.kind, b'0' | b'7')
}

/// Set-id and sticky bits from an archive are not restored.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o777
}

/// The archive's time for a member, if the system can hold it.
fn mtime_of(secs: u64) -> Option<std::time::SystemTime> {
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
}

fn copy_member(
    reader: &Reader,
    f: &FileEntry,
    at: &At,
    total: u64,
    bytes: &mut u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), Skip> {
    let fd = rustix::fs::openat(
        at.dir,
        at.name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| match e {
        rustix::io::Errno::EXIST => Skip(format!("{} exists: not overwritten", at.name)),
        e => Skip::from(e),
    })?;
    let mut out = std::fs::File::from(fd);
    let written = fill(reader, f, &mut out, total, bytes, progress);
    if written.is_err() {
        // No half file is left to block the next attempt.
        let _ = rustix::fs::unlinkat(at.dir, at.name, AtFlags::empty());
    }
    written
}

/// Writes member `f`'s data into `out`, then its mode and time.
fn fill(
    reader: &Reader,
    f: &FileEntry,
    out: &mut std::fs::File,
    total: u64,
    bytes: &mut u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), Skip> {
    let mut done = 0;
    while done < f.size {
        let n = (f.size - done).min(CHUNK);
        let data = reader
            .read_at(f.offset.saturating_add(done), n as usize)
            .map_err(|e| Skip(format!("reading it from the image: {e}")))?;
        if data.len() as u64 != n {
            return Err(Skip(format!(
                "the image ends inside it ({} of {} bytes)",
                done + data.len() as u64,
                f.size
            )));
        }
        out.write_all(&data)?;
        done += n;
        *bytes += n;
        progress(*bytes, total);
    }
    out.set_permissions(std::fs::Permissions::from_mode(safe_mode(f.mode)))?;
    if let Some(t) = mtime_of(f.mtime) {
        out.set_modified(t)?;
    }
    out.sync_all()?;
    Ok(())
}

fn make_dir(at: &At, mode: u32) -> Result<(), Skip> {
    match rustix::fs::mkdirat(at.dir, at.name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = open_dir(at.dir, at.name)
        .map_err(|e| Skip(format!("{} is not a directory: {e}", at.name)))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(safe_mode(mode) | 0o700))?;
    Ok(())
}

fn symlink(f: &FileEntry, at: &At) -> Result<(), Skip> {
    let target = f
        .link
        .as_deref()
        .ok_or_else(|| Skip("a symbolic link without a target".into()))?;
    rustix::fs::symlinkat(target, at.dir, at.name)?;
    Ok(())
}

/// A hard link is made to its target if this restore wrote the target.
fn hard_link(root: &OwnedFd, f: &FileEntry, at: &At, restored: &[String]) -> Result<(), Skip> {
    let target = normal(f.link.as_deref().unwrap_or_default());
    if !restored.iter().any(|r| normal(r) == target) {
        return Err(Skip(format!(
            "a hard link to {target}, which this restore did not write: restore {target} too"
        )));
    }
    let comps = components(&target).map_err(Skip)?;
    let dir = parent_of(root, &comps, false).map_err(Skip)?;
    let name = comps.last().expect("non-empty").as_str();
    rustix::fs::linkat(&dir, name, at.dir, at.name, AtFlags::empty())?;
    Ok(())
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
        let root =
            rustix::fs::open(&to, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        assert!(components("../../etc/passwd").is_err());
        assert!(components("a/../../x").is_err());
        assert_eq!(components("/etc/x").unwrap(), ["etc", "x"]);
        parent_of(&root, &components("/etc/x").unwrap(), true).unwrap();
        assert!(to.join("etc").is_dir(), "made under the restore directory");
        std::os::unix::fs::symlink(d.path(), to.join("link")).unwrap();
        let e = parent_of(&root, &components("link/escape/deeper").unwrap(), true).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!d.path().join("escape").exists());
    }

    #[test]
    fn a_time_past_what_the_system_holds_is_not_a_panic() {
        assert!(mtime_of(u64::MAX).is_none());
        assert!(mtime_of(1_700_000_000).is_some());
    }
}
