//! Serving a store on a mount point: the multi-threaded fuser session and
//! a clean unmount on SIGTERM, SIGINT, SIGHUP or an external `umount`.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use super::KmsFs;
use crate::store::Store;

/// Mount options that reach the session.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            allow_other: false,
            default_permissions: true,
            threads: 8,
        }
    }
}

fn session_config(store: &Store, opts: &MountOptions) -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName(store.dir.display().to_string()),
        MountOption::Subtype("kmsfs".into()),
    ];
    if opts.default_permissions {
        c.mount_options.push(MountOption::DefaultPermissions);
    }
    c.mount_options.push(if opts.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    if opts.allow_other {
        c.acl = SessionACL::All;
    }
    c.n_threads = Some(opts.threads.max(1));
    c.clone_fd = std::env::var_os("KMSFS_NO_CLONE_FD").is_none();
    c
}

/// Mounts and serves until unmounted or signalled. `on_ready` runs once the
/// filesystem answers requests.
pub fn mount_foreground(
    store: Arc<Store>,
    mountpoint: &Path,
    opts: &MountOptions,
    on_ready: impl FnOnce(),
) -> std::io::Result<()> {
    let signals = signals::block_and_watch();
    let pid_file = store.dir.join("kmsfs.pid");
    crate::util::atomic::write_atomic(
        &pid_file,
        format!("{}\n", std::process::id()).as_bytes(),
        0o600,
    )?;
    let cfg = session_config(&store, opts);
    let fs = KmsFs::new(store.clone(), opts.read_only);
    // As root we mount ourselves (type fuse.kmsfs, source the store);
    // otherwise fusermount3 (setuid) mounts and hands us /dev/fuse. Either
    // way the session is ours and so is the unmount.
    let root = match kernel::mount(&store.dir, mountpoint, opts) {
        Ok(fd) => Some(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => None,
        Err(e) => return Err(e),
    };
    let own_mount = root.is_some();
    let fd = match root {
        Some(fd) => fd,
        None => fusermount::mount(&store.dir, mountpoint, opts)?,
    };
    let session =
        match fuser::Session::from_fd(fs, fd, cfg.acl, cfg).and_then(fuser::Session::spawn) {
            Ok(s) => s,
            Err(e) => {
                unmount(mountpoint, own_mount);
                return Err(e);
            }
        };
    std::fs::metadata(mountpoint)?;
    raise_readahead(mountpoint);
    tracing::info!(store = %store.dir.display(), mountpoint = %mountpoint.display(), "mounted");
    on_ready();
    loop {
        match signals.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => {
                tracing::info!(
                    signal = sig,
                    "unmounting on signal; open images are committed as they close"
                );
                unmount(mountpoint, own_mount);
                session.join()?;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !session.guard.is_finished() => continue,
            _ => {
                // Unmounted by someone else (umount, fusermount3 -u, autofs).
                tracing::info!("unmounted");
                session.join()?;
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and the threads
/// it starts, so that only the mount's signal watcher takes them (and
/// unmounts cleanly). The daemon calls it first, before opening the store
/// starts threads of its own (key cache sweepers).
pub fn block_stop_signals() {
    signals::block();
}

/// Unmounts the way it was mounted.
fn unmount(mountpoint: &Path, own_mount: bool) {
    if own_mount {
        kernel::unmount(mountpoint);
    } else {
        fusermount::unmount(mountpoint);
    }
}

mod fusermount {
    //! Mounting as a user: fusermount3 (setuid root) opens /dev/fuse,
    //! mounts, and passes the descriptor back over a socket named by
    //! `_FUSE_COMMFD` (the libfuse protocol).
    #![allow(unsafe_code)]

    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use super::MountOptions;

    pub fn mount(store: &Path, mountpoint: &Path, o: &MountOptions) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut opts = format!(
            "fsname={},subtype=kmsfs",
            store.display().to_string().replace(',', "_")
        );
        for (on, name) in [
            (o.default_permissions, "default_permissions"),
            (o.allow_other, "allow_other"),
            (o.read_only, "ro"),
        ] {
            if on {
                opts.push(',');
                opts.push_str(name);
            }
        }
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-o")
            .arg(opts)
            .arg("--")
            .arg(mountpoint)
            .env("_FUSE_COMMFD", fd.to_string());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only fcntl on an inherited descriptor between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| std::io::Error::other(format!("fusermount3: {e} (install fuse3)")))?;
        drop(theirs);
        let got = receive_fd(&ours);
        let out = child.wait_with_output()?;
        got.map_err(|_| {
            std::io::Error::other(format!(
                "fusermount3: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }

    fn receive_fd(s: &UnixStream) -> std::io::Result<OwnedFd> {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
        let mut cbuf = vec![0u8; space];
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg points at live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
        if n <= 0 {
            return Err(std::io::Error::other("no descriptor from fusermount3"));
        }
        // SAFETY: recvmsg filled msg; CMSG_FIRSTHDR/CMSG_DATA walk its control buffer.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null()
                || (*c).cmsg_level != libc::SOL_SOCKET
                || (*c).cmsg_type != libc::SCM_RIGHTS
            {
                return Err(std::io::Error::other("fusermount3 sent no SCM_RIGHTS"));
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
            Ok(OwnedFd::from_raw_fd(fd))
        }
    }

    /// `fusermount3 -u -z`: unmount, lazily if busy.
    pub fn unmount(mountpoint: &Path) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg("--")
            .arg(mountpoint)
            .status();
    }
}

mod kernel {
    //! mount(2) and umount2(2) of a FUSE filesystem, for a root daemon.
    #![allow(unsafe_code)]

    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use super::MountOptions;

    fn cstr(p: &Path) -> std::io::Result<CString> {
        CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
    }

    /// Opens /dev/fuse and mounts it on `mountpoint` as `fuse.kmsfs` with
    /// the store as source. EPERM or EACCES when not root.
    pub fn mount(store: &Path, mountpoint: &Path, o: &MountOptions) -> std::io::Result<OwnedFd> {
        let dev: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?
            .into();
        let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut data = format!(
            "fd={},rootmode={rootmode:o},user_id={uid},group_id={gid}",
            dev.as_raw_fd()
        );
        if o.default_permissions {
            data.push_str(",default_permissions");
        }
        if o.allow_other {
            data.push_str(",allow_other");
        }
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if o.read_only {
            flags |= libc::MS_RDONLY;
        }
        let (src, dst) = (cstr(store)?, cstr(mountpoint)?);
        let (fstype, data) = (
            CString::new("fuse.kmsfs").expect("no NUL"),
            CString::new(data).expect("no NUL"),
        );
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(dev)
    }

    /// Unmounts; if files are still open, detaches lazily (their writers
    /// finish and commit, then the session ends).
    pub fn unmount(mountpoint: &Path) {
        let Ok(p) = cstr(mountpoint) else { return };
        // SAFETY: p is a valid NUL-terminated path.
        if unsafe { libc::umount2(p.as_ptr(), 0) } != 0 {
            tracing::info!("mount busy: detaching lazily; open images commit as they close");
            // SAFETY: as above.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The kernel caps a FUSE mount's readahead at 128 KiB whatever
/// `max_readahead` says. A 4 MiB window keeps four 1 MiB requests in
/// flight, so the daemon decrypts one while the kernel copies another:
/// cold reads measured 10-19% faster than with 1 MiB (median of six
/// alternating pairs, docs/benchmark.md). Best effort: needs root and sysfs.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&knob, "4096") {
        Ok(()) => tracing::debug!(%knob, "readahead set to 4 MiB"),
        Err(e) => tracing::debug!(%knob, "readahead left at the kernel default: {e}"),
    }
}

mod signals {
    //! SIGTERM, SIGINT and SIGHUP, delivered to one thread and sent on a channel.
    #![allow(unsafe_code)]

    use std::sync::mpsc;

    fn set() -> libc::sigset_t {
        // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
        unsafe {
            let mut s: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut s);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut s, sig);
            }
            s
        }
    }

    /// Blocks the signals in this thread and in every thread it spawns
    /// from now on. Call it before any other thread starts.
    pub fn block() {
        let s = set();
        // SAFETY: s is a valid signal set; a null old-set pointer is allowed.
        unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut());
        }
    }

    /// Blocks the signals (see [`block`]) and starts the one thread that
    /// waits for them.
    pub fn block_and_watch() -> mpsc::Receiver<i32> {
        block();
        let s = set();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: s is valid; sig is a writable int.
                if unsafe { libc::sigwait(&s, &mut sig) } == 0 && tx.send(sig).is_err() {
                    break;
                }
            }
        });
        rx
    }
}
