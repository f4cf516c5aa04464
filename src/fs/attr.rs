//! File attributes as the kernel sees them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::catalog::{FileAttrs, InodeKind};

/// How long the kernel may cache attributes and entries.
pub const TTL: Duration = Duration::from_secs(1);

/// How long the kernel may cache the name of an image still being
/// written: not at all, since a write that fails takes the name away and
/// a retry under the same name must not meet a stale entry (ENOENT).
pub const PENDING_TTL: Duration = Duration::ZERO;

pub fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

pub fn ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Attributes of a catalog entry.
pub fn from_attrs(ino: u64, a: &FileAttrs, size: u64, dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.ctime_ns),
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: (a.mode & 0o7777) as u16,
        nlink: if dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

/// The type of a catalog entry as the kernel sees it.
pub fn file_type(kind: &InodeKind, mode: u32) -> FileType {
    match kind {
        InodeKind::Pool | InodeKind::Dir => FileType::Directory,
        InodeKind::Image(_) => FileType::RegularFile,
        InodeKind::Symlink(_) => FileType::Symlink,
        InodeKind::Special { .. } => match mode & libc::S_IFMT {
            libc::S_IFIFO => FileType::NamedPipe,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            libc::S_IFSOCK => FileType::Socket,
            _ => FileType::RegularFile,
        },
    }
}

/// Attributes of a stored entry of type `kind`, with `nlink` names.
pub fn stored(ino: u64, a: &FileAttrs, kind: &InodeKind, size: u64, nlink: u32) -> FileAttr {
    let mut f = from_attrs(ino, a, size, kind.is_dir());
    f.kind = file_type(kind, a.mode);
    if !kind.is_dir() {
        f.nlink = nlink;
    }
    if let InodeKind::Special { rdev } = kind {
        f.rdev = *rdev as u32;
    }
    f
}

/// Attributes of a synthetic node (root, pools/, drives/, status files).
pub fn synthetic(ino: u64, dir: bool, size: u64, started: i64) -> FileAttr {
    let mode = if dir { 0o755 } else { 0o444 };
    let a = FileAttrs {
        mode,
        uid: 0,
        gid: 0,
        atime_ns: started,
        mtime_ns: started,
        ctime_ns: started,
    };
    from_attrs(ino, &a, size, dir)
}
