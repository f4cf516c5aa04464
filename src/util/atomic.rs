//! Durable file operations: atomic replacement of small files (write a
//! temporary file, fsync it, rename it over the target, fsync the
//! directory: a crash leaves either the old or the new file, never a mix),
//! and the directory fsync that makes a new or renamed file's name durable
//! before anything refers to it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Makes the entries of directory `dir` durable (a file created, renamed
/// or removed in it survives a crash).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    super::failpoint::hit(super::failpoint::DIR_FSYNC)?;
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new temporary file beside `path`: a random name, created exclusively
/// (O_EXCL: never a file or symlink someone planted) with mode `mode`.
pub fn create_temp(path: &Path, mode: u32) -> std::io::Result<(PathBuf, File)> {
    let dir = parent_dir(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    create_exclusive(mode, || {
        let r: [u8; 8] = crate::crypto::random_array().map_err(std::io::Error::other)?;
        Ok(dir.join(format!(".{name}.tmp-{}", hex::encode(r))))
    })
}

/// Creates the first of up to 16 names from `next` that does not exist
/// yet (O_EXCL | O_NOFOLLOW): a planted file or symlink is skipped, never
/// opened.
fn create_exclusive(
    mode: u32,
    mut next: impl FnMut() -> std::io::Result<PathBuf>,
) -> std::io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = next()?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("16 attempts"))
}

/// Writes `bytes` to `f`, with permission bits exactly `mode` (whatever
/// the umask), and makes them durable.
fn fill(f: &mut File, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` with `bytes`, created with permission bits `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_past(path, bytes, mode, None)
}

/// [`write_atomic`] with failpoint `point` between the durable temporary
/// file and the rename.
pub fn write_atomic_past(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    point: Option<&'static str>,
) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let (tmp, mut f) = create_temp(path, mode)?;
    let result = (|| {
        fill(&mut f, bytes, mode)?;
        point.map(super::failpoint::hit).transpose()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to a new file `path` (created with permission bits
/// `mode`), durably, failing with `AlreadyExists` if `path` exists: the
/// file is written under a temporary name and linked into place, which
/// never replaces anything.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_new_with(path, bytes, mode, |a, b| std::fs::hard_link(a, b))
}

/// [`write_new`] with the link step given: on a filesystem without hard
/// links (FAT, exFAT, some network shares: EPERM, EOPNOTSUPP) the file is
/// created in place exclusively instead (O_EXCL still never replaces; a
/// crash may then leave a short file under the final name).
fn write_new_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    link: impl Fn(&Path, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let (tmp, mut f) = create_temp(path, mode)?;
    let result = fill(&mut f, bytes, mode).and_then(|()| link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match result {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            let (_, mut f) = create_exclusive(mode, || Ok(path.to_path_buf()))?;
            fill(&mut f, bytes, mode)?;
        }
        other => other?,
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Someone who can write in the directory plants a symlink (or a file
    /// of their own) at exactly the name the temporary file would take:
    /// it is skipped, never opened or written through, and the file made
    /// is a new regular file of the mode asked for.
    #[test]
    fn a_planted_temp_file_or_symlink_is_never_used() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let link = d.path().join(".f.tmp-planted-link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let file = d.path().join(".f.tmp-planted-file");
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let fresh = d.path().join(".f.tmp-fresh");
        let mut names = vec![fresh.clone(), file.clone(), link.clone()];
        let (made, mut f) = create_exclusive(0o600, || Ok(names.pop().unwrap())).unwrap();
        assert_eq!(made, fresh, "both planted names were skipped");
        f.write_all(b"secret").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"",
            "the planted file is untouched"
        );
        let m = std::fs::symlink_metadata(&made).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o077, 0, "no access for others");
        // Only planted names: an error, and nothing written anywhere.
        let e = create_exclusive(0o600, || Ok(link.clone())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    }

    #[test]
    fn write_new_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_new(&p, b"one", 0o600).unwrap();
        let e = write_new(&p, b"two", 0o600).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn replaces_content_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
