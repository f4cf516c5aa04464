//! The ceiling of a FUSE filesystem on this machine, for the paired
//! benchmark (`scripts/bench.sh`): a filesystem that discards every write
//! and reads zeros, with the session settings kmsfs uses (1 MiB max_write
//! and readahead, 8 threads with cloned fds, direct I/O for writes, the
//! page cache for reads, the mount's readahead raised to 4 MiB). Whatever
//! kmsfs does on top of FUSE, it cannot stream faster than this.
//!
//!     nullfs MOUNTPOINT SIZE_BYTES
//!
//! serves `MOUNTPOINT/zero`, SIZE_BYTES of zeros, and takes any new file
//! (its size grows with what is written; its bytes read back as zeros).
//! Runs in the foreground until unmounted.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

/// Files by name: inode and size.
struct NullFs {
    files: Mutex<HashMap<String, (u64, u64)>>,
    next_ino: AtomicU64,
}

impl NullFs {
    fn attr(ino: u64, size: u64) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: if ino == ROOT {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if ino == ROOT { 0o755 } else { 0o644 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn size_of(&self, ino: u64) -> Option<u64> {
        let files = self.files.lock().unwrap();
        files.values().find(|(i, _)| *i == ino).map(|(_, s)| *s)
    }

    fn grow(&self, ino: u64, to: u64) {
        let mut files = self.files.lock().unwrap();
        if let Some(f) = files.values_mut().find(|(i, _)| *i == ino) {
            f.1 = f.1.max(to);
        }
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let files = self.files.lock().unwrap();
        match files.get(&*name.to_string_lossy()) {
            Some(&(ino, size)) if parent.0 == ROOT => {
                reply.entry(&TTL, &Self::attr(ino, size), Generation(0))
            }
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match (ino.0, self.size_of(ino.0)) {
            (ROOT, _) => reply.attr(&TTL, &Self::attr(ROOT, 0)),
            (i, Some(size)) => reply.attr(&TTL, &Self::attr(i, size)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(s) = size {
            let mut files = self.files.lock().unwrap();
            if let Some(f) = files.values_mut().find(|(i, _)| *i == ino.0) {
                f.1 = s;
            }
        }
        let size = self.size_of(ino.0).unwrap_or(0);
        reply.attr(&TTL, &Self::attr(ino.0, size))
    }

    fn open(&self, _req: &Request, _ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let f = if write {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(0), f)
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut files = self.files.lock().unwrap();
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        files.insert(name.to_string_lossy().into_owned(), (ino, 0));
        reply.created(
            &TTL,
            &Self::attr(ino, 0),
            Generation(0),
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO,
        )
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
        let len = self.size_of(ino.0).unwrap_or(0);
        let n = len.saturating_sub(offset).min(u64::from(size)) as usize;
        reply.data(&ZEROS[..n.min(ZEROS.len())])
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.grow(ino.0, offset + data.len() as u64);
        reply.written(data.len() as u32)
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.files.lock().unwrap().remove(&*name.to_string_lossy());
        reply.ok()
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let files = self.files.lock().unwrap();
        for (i, (name, (ino, _))) in files.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, FileType::RegularFile, name) {
                break;
            }
        }
        reply.ok()
    }
}

/// As kmsfs does: the kernel caps a FUSE mount's readahead at 128 KiB
/// whatever `max_readahead` says.
fn raise_readahead(mountpoint: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let _ = std::fs::write(
        format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
        "4096",
    );
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mountpoint), Some(size)) = (args.get(1), args.get(2).and_then(|s| s.parse().ok()))
    else {
        eprintln!("usage: nullfs MOUNTPOINT SIZE_BYTES");
        std::process::exit(2);
    };
    let fs = NullFs {
        files: Mutex::new(HashMap::from([("zero".to_string(), (2, size))])),
        next_ino: AtomicU64::new(3),
    };
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("nullfs".into()),
        MountOption::DefaultPermissions,
    ];
    cfg.n_threads = Some(8);
    cfg.clone_fd = true;
    let session = fuser::spawn_mount(fs, mountpoint, &cfg)?;
    let _ = std::fs::metadata(mountpoint);
    raise_readahead(mountpoint);
    session.join()
}
