//! Durable file operations: atomic replacement of small files (write a
//! temporary file, fsync it, rename it over the target, fsync the
//! directory: a crash leaves either the old or the new file, never a mix),
//! and the directory fsync that makes a new or renamed file's name durable
//! before anything refers to it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Makes the entries of directory `dir` durable (a file created, renamed
/// or removed in it survives a crash).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
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
fn create_temp(path: &Path, mode: u32) -> std::io::Result<(std::path::PathBuf, File)> {
    let dir = parent_dir(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut last = None;
    for _ in 0..16 {
        let r: [u8; 8] = crate::crypto::random_array().map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(r)));
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

/// Replaces `path` with `bytes`, created with permission bits `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let (tmp, mut f) = create_temp(path, mode)?;
    let result = (|| {
        // Exactly `mode`, whatever the umask.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Someone who can write in the directory plants a symlink (or a file
    /// of their own) where the temporary file would go: the secret is
    /// neither written through it nor left readable, and the target stays
    /// a regular file of the mode asked for.
    #[test]
    fn a_planted_temp_file_or_symlink_is_never_used() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keystore.kks");
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let predictable = d
            .path()
            .join(format!(".keystore.kks.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &predictable).unwrap();
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            m.file_type().is_file(),
            "a regular file, not the planted link"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        // A planted world-readable file at the old name is not reused either.
        std::fs::remove_file(&predictable).unwrap();
        std::fs::write(&predictable, b"").unwrap();
        std::fs::set_permissions(&predictable, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"secret2", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
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
