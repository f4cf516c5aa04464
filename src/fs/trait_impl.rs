//! `fuser::Filesystem` for [`KmsFs`]: unpack the request, call the
//! operation, reply with data or the errno of the error.

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::{PENDING_TTL, TTL, ns};
use super::dir_ops::AttrChange;
use super::node_ops::XattrReply;
use super::{FsError, KmsFs};
use crate::catalog::FileAttrs;

std::thread_local! {
    /// Each FUSE thread's read reply buffer: filled in place, reused.
    static REPLY_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn name_of(name: &OsStr) -> Result<&str, FsError> {
    name.to_str()
        .ok_or_else(|| FsError::new(libc::EINVAL, "names must be UTF-8"))
}

fn new_attrs(req: &Request, mode: u32, umask: u32, kind: u32) -> FileAttrs {
    let now = ns(SystemTime::now());
    FileAttrs {
        mode: kind | (mode & !umask & 0o7777),
        uid: req.uid(),
        gid: req.gid(),
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
    }
}

fn time_of(t: Option<TimeOrNow>) -> Option<i64> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(s) => ns(s),
        TimeOrNow::Now => ns(SystemTime::now()),
    })
}

macro_rules! reply_err {
    ($reply:expr, $e:expr) => {{
        let e: FsError = $e;
        tracing::debug!(errno = ?e.errno, "{}", e.why);
        $reply.error(e.errno)
    }};
}

impl Filesystem for KmsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name_of(name).and_then(|n| self.do_lookup(parent.0, n)) {
            Ok(a) => reply.entry(&self.entry_ttl(a.ino.0), &a, Generation(0)),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ch = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime: time_of(atime),
            mtime: time_of(mtime),
        };
        match self.do_setattr(ino.0, &ch) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let attrs = new_attrs(req, mode, umask, libc::S_IFDIR);
        match name_of(name).and_then(|n| self.do_mkdir(parent.0, n, attrs)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_of(name).and_then(|n| self.do_unlink(parent.0, n)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_of(name).and_then(|n| self.do_rmdir(parent.0, n)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.bits() != 0 {
            return reply.error(fuser::Errno::EINVAL);
        }
        let r = name_of(name)
            .and_then(|n| Ok((n, name_of(newname)?)))
            .and_then(|(n, nn)| self.do_rename(parent.0, n, newparent.0, nn));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags.0, req.uid()) {
            Ok((fh, f)) => reply.opened(FileHandle(fh), f),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        REPLY_BUF.with_borrow_mut(|buf| match self.do_read(fh.0, offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply_err!(reply, e),
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.do_flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.do_readdir(ino.0) {
            Ok(entries) => {
                for (i, (child, kind, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply_err!(reply, e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs() {
            Ok((blocks, free)) => {
                reply.statfs(blocks, free, free, 1 << 32, 1 << 32, 1 << 20, 255, 1 << 20)
            }
            Err(e) => reply_err!(reply, e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let attrs = new_attrs(req, mode, umask, libc::S_IFREG);
        match name_of(name).and_then(|n| self.do_create(parent.0, n, attrs)) {
            // Not cached: if this write fails, the name must be free at once.
            Ok((a, fh)) => reply.created(
                &PENDING_TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let attrs = new_attrs(req, 0o777, 0, libc::S_IFLNK);
        let r = name_of(link_name)
            .and_then(|n| Ok((n, name_of(target.as_os_str())?)))
            .and_then(|(n, t)| self.do_symlink(parent.0, n, t, attrs));
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.do_readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let attrs = new_attrs(req, mode, umask, mode & libc::S_IFMT);
        match name_of(name).and_then(|n| self.do_mknod(parent.0, n, attrs, rdev)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match name_of(newname).and_then(|n| self.do_link(ino.0, newparent.0, n)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match name_of(name).and_then(|n| self.do_setxattr(ino.0, n, value, flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match name_of(name).and_then(|n| self.do_getxattr(ino.0, n, size)) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(v)) => reply.data(&v),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.do_listxattr(ino.0, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(v)) => reply.data(&v),
            Err(e) => reply_err!(reply, e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_of(name).and_then(|n| self.do_removexattr(ino.0, n)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, e),
        }
    }
}
