//! Whole trees through a real mount: `rsync -aHAX` and `tar --xattrs
//! --acls` of a tree that holds everything a file system tree can hold
//! (symlinks, hard links, fifos, devices, xattrs, ACLs, odd modes, owners
//! and names), into an encrypted pool and into an LSU and back, identical;
//! and the errno of each POSIX operation, as root and as another user.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;

/// A tree with every kind of entry, made under `dir`.
fn make_tree(dir: &Path) {
    sh_ok(&format!(
        r#"set -e
        mkdir -p '{d}' && cd '{d}'
        mkdir -p sub/deeper 'odd name' 'ünï çødé'
        head -c 300000 /dev/urandom > sub/data.bin
        : > empty
        truncate -s 5M sparse && printf 'end' >> sparse
        echo 'hello' > 'odd name/with space.txt'
        echo 'accent' > 'ünï çødé/fïle'
        ln -s sub/data.bin rel-link
        ln -s /no/such/target dangling
        ln -s sub dir-link
        ln sub/data.bin hard1 && ln sub/data.bin sub/deeper/hard2
        mkfifo fifo
        mknod chardev c 1 3
        mknod blockdev b 7 42
        echo x > setuid && chmod 4755 setuid
        mkdir sticky && chmod 1777 sticky
        echo y > owned && chown 1234:5678 owned
        ln -s owned owned-link && chown -h 4321:8765 owned-link
        setfattr -n user.colour -v blue sub/data.bin
        setfattr -n user.empty owned
        setfattr -n trusted.secret -v 0x00ff00 empty
        setfacl -m u:1234:rw,g:5678:r 'odd name/with space.txt'
        setfacl -d -m u:1234:rwx sub
        touch -h -d '2001-02-03 04:05:06' dangling
        touch -d '2010-01-01 00:00:00' sub/deeper
        "#,
        d = dir.display()
    ));
}

/// What `rsync -aHAX --dry-run --itemize-changes` finds to change from
/// `src` to `dst` (empty: the trees are the same).
fn rsync_differences(src: &Path, dst: &Path) -> String {
    sh_ok(&format!(
        "rsync -aHAX --numeric-ids --dry-run --itemize-changes '{}/' '{}/'",
        src.display(),
        dst.display()
    ))
}

fn tree_round_trip(pool_dir: &str, setup: impl Fn(&TestStore)) {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    setup(&s);
    let src = s.path("tree");
    make_tree(&src);
    let m = s.mount("");
    if pool_dir.starts_with("pools/") {
        std::fs::create_dir(m.p(pool_dir)).unwrap();
    }
    let dst = m.p(&format!("{pool_dir}/tree"));
    sh_ok(&format!(
        "rsync -aHAX --numeric-ids '{}/' '{}/'",
        src.display(),
        dst.display()
    ));
    let diff = rsync_differences(&src, &dst);
    assert!(diff.trim().is_empty(), "after rsync, differences:\n{diff}");
    // The hard links are one inode, counted.
    let links = sh_ok(&format!(
        "stat -c '%h %i' '{0}/hard1' '{0}/sub/data.bin' '{0}/sub/deeper/hard2'",
        dst.display()
    ));
    let lines: Vec<&str> = links.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().all(|l| *l == lines[0] && l.starts_with("3 ")),
        "{links}"
    );
    m.unmount();
    let m = s.mount("");
    let dst = m.p(&format!("{pool_dir}/tree"));
    let diff = rsync_differences(&src, &dst);
    assert!(
        diff.trim().is_empty(),
        "after a remount, differences:\n{diff}"
    );
    // And back out with rsync: the copy of the copy is the tree.
    let back = s.path("back");
    sh_ok(&format!(
        "rsync -aHAX --numeric-ids '{}/' '{}/'",
        dst.display(),
        back.display()
    ));
    let diff = rsync_differences(&src, &back);
    assert!(diff.trim().is_empty(), "restored tree differs:\n{diff}");
}

#[test]
fn rsync_ahax_of_a_whole_tree_into_an_encrypted_pool_comes_back_identical() {
    tree_round_trip("pools/ENCR_Tree", |s| {
        s.group_with_key("ENCR_Tree");
    });
}

#[test]
fn rsync_ahax_of_a_whole_tree_into_an_lsu_comes_back_identical() {
    tree_round_trip("msdp/L", |s| {
        s.group_with_key("lsukg");
        s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsukg"]);
    });
}

/// `tar --xattrs --acls` in and out: the archive of the extracted tree
/// lists the same members, with the same types, modes, owners, sizes,
/// times, link targets, attributes and ACLs.
#[test]
fn tar_with_xattrs_and_acls_in_and_out_keeps_every_member() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    s.group_with_key("ENCR_Tar");
    let src = s.path("tree");
    make_tree(&src);
    let a = s.path("a.tar");
    let b = s.path("b.tar");
    let tar_opts = "--xattrs --xattrs-include='*' --acls --numeric-owner --sort=name";
    sh_ok(&format!(
        "tar {tar_opts} -C '{}' -cf '{}' .",
        src.display(),
        a.display()
    ));
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Tar")).unwrap();
    let into = m.p("pools/ENCR_Tar/x");
    std::fs::create_dir(&into).unwrap();
    sh_ok(&format!(
        "tar {tar_opts} -xpf '{}' -C '{}' && tar {tar_opts} -C '{}' -cf '{}' .",
        a.display(),
        into.display(),
        into.display(),
        b.display()
    ));
    let listing = |t: &Path| {
        sh_ok(&format!(
            "tar {tar_opts} --full-time -tvvf '{}' | sed 's/  */ /g'",
            t.display()
        ))
    };
    let (la, lb) = (listing(&a), listing(&b));
    assert!(la.contains("chardev") && la.contains("user.colour"), "{la}");
    assert_eq!(la, lb, "the archive of the extracted tree differs");
    // Member contents, byte for byte.
    let xa = s.path("xa");
    let xb = s.path("xb");
    sh_ok(&format!(
        "mkdir '{xa}' '{xb}' && tar -xpf '{a}' -C '{xa}' && tar -xpf '{b}' -C '{xb}' && \
         sums() {{ (cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }} && \
         test \"$(sums '{xa}')\" = \"$(sums '{xb}')\" && test -n \"$(sums '{xa}')\"",
        xa = xa.display(),
        xb = xb.display(),
        a = a.display(),
        b = b.display()
    ));
}

/// The errno of a libc call (0 on success).
fn errno_of(rc: i32) -> i32 {
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[allow(unsafe_code)]
mod sys {
    use std::ffi::CString;

    pub fn mkdir(p: &CString) -> i32 {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::mkdir(p.as_ptr(), 0o755) }
    }
    pub fn rmdir(p: &CString) -> i32 {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::rmdir(p.as_ptr()) }
    }
    pub fn unlink(p: &CString) -> i32 {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr()) }
    }
    pub fn rename(a: &CString, b: &CString) -> i32 {
        // SAFETY: valid NUL-terminated paths.
        unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }
    }
    pub fn link(a: &CString, b: &CString) -> i32 {
        // SAFETY: valid NUL-terminated paths.
        unsafe { libc::link(a.as_ptr(), b.as_ptr()) }
    }
    pub fn symlink(a: &CString, b: &CString) -> i32 {
        // SAFETY: valid NUL-terminated paths.
        unsafe { libc::symlink(a.as_ptr(), b.as_ptr()) }
    }
    pub fn open(p: &CString, flags: i32) -> i32 {
        // SAFETY: a valid NUL-terminated path; the descriptor is closed.
        let fd = unsafe { libc::open(p.as_ptr(), flags, 0o644) };
        if fd >= 0 {
            // SAFETY: fd was just opened by us.
            unsafe { libc::close(fd) };
            0
        } else {
            -1
        }
    }
    pub fn truncate(p: &CString, len: i64) -> i32 {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::truncate(p.as_ptr(), len) }
    }
    pub fn readlink(p: &CString) -> i32 {
        let mut buf = [0u8; 64];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::readlink(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 { -1 } else { 0 }
    }
    pub fn setxattr(p: &CString, name: &str, value: &[u8], flags: i32) -> i32 {
        let n = CString::new(name).unwrap();
        // SAFETY: valid path and name, value readable for its length.
        unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    }
    pub fn getxattr(p: &CString, name: &str, size: usize) -> i32 {
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; size];
        // SAFETY: buf writable for `size` bytes.
        let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
        if r < 0 { -1 } else { 0 }
    }
    pub fn utimens_omit_now(p: &CString) -> i32 {
        let t = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
        ];
        // SAFETY: valid path and two timespecs.
        unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t.as_ptr(), 0) }
    }
}

/// A file held open for writing (some bytes written, not closed) until
/// the returned guard drops.
fn held_open(path: &Path) -> std::fs::File {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(b"in progress").unwrap();
    f
}

/// The errno each operation gives, from POSIX and the Linux man pages.
/// Where the write-once model answers differently it is said.
#[test]
fn each_posix_operation_gives_the_errno_the_standard_names() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    s.group_with_key("ENCR_P");
    let m = s.mount("");
    let p = |r: &str| c(&m.p(&format!("pools/{r}")));
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P"))), 0);
    assert_eq!(errno_of(sys::mkdir(&p("Other"))), 0);
    assert_eq!(
        errno_of(sys::mkdir(&p("ENCR_P"))),
        libc::EEXIST,
        "mkdir over a pool"
    );
    std::fs::write(m.p("pools/ENCR_P/f"), b"data").unwrap();
    assert_eq!(
        errno_of(sys::mkdir(&p("ENCR_P/f"))),
        libc::EEXIST,
        "mkdir over a file"
    );
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P/d"))), 0);
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P/d/e"))), 0);
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P/none/e"))), libc::ENOENT);
    // rmdir
    assert_eq!(errno_of(sys::rmdir(&p("ENCR_P/d"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(sys::rmdir(&p("ENCR_P/f"))), libc::ENOTDIR);
    assert_eq!(errno_of(sys::rmdir(&p("ENCR_P/none"))), libc::ENOENT);
    // rename
    assert_eq!(
        errno_of(sys::rename(&p("ENCR_P/d"), &p("ENCR_P/d/e/into"))),
        libc::EINVAL,
        "a folder into its own descendant"
    );
    assert_eq!(
        errno_of(sys::rename(&p("ENCR_P/f"), &p("ENCR_P/d"))),
        libc::EISDIR
    );
    assert_eq!(
        errno_of(sys::rename(&p("ENCR_P/d"), &p("ENCR_P/f"))),
        libc::ENOTDIR
    );
    std::fs::write(m.p("pools/ENCR_P/g"), b"other").unwrap();
    assert_eq!(
        errno_of(sys::rename(&p("ENCR_P/g"), &p("ENCR_P/f"))),
        0,
        "over a file"
    );
    assert_eq!(std::fs::read(m.p("pools/ENCR_P/f")).unwrap(), b"other");
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P/empty"))), 0);
    assert_eq!(
        errno_of(sys::rename(&p("ENCR_P/d/e"), &p("ENCR_P/empty"))),
        0,
        "a folder over an empty folder"
    );
    // unlink
    assert_eq!(errno_of(sys::unlink(&p("ENCR_P/d"))), libc::EISDIR);
    assert_eq!(errno_of(sys::unlink(&p("ENCR_P/none"))), libc::ENOENT);
    // link
    assert_eq!(
        errno_of(sys::link(&p("ENCR_P/d"), &p("ENCR_P/d2"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(sys::link(&p("ENCR_P/f"), &p("Other/f"))),
        libc::EXDEV
    );
    assert_eq!(errno_of(sys::link(&p("ENCR_P/f"), &p("ENCR_P/f2"))), 0);
    assert_eq!(
        errno_of(sys::link(&p("ENCR_P/f"), &p("ENCR_P/f2"))),
        libc::EEXIST
    );
    assert_eq!(errno_of(sys::unlink(&p("ENCR_P/f"))), 0);
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_P/f2")).unwrap(),
        b"other",
        "the other name keeps the data"
    );
    // symlink
    let target = CString::new("f2").unwrap();
    assert_eq!(errno_of(sys::symlink(&target, &p("ENCR_P/s"))), 0);
    assert_eq!(
        errno_of(sys::symlink(&target, &p("ENCR_P/s"))),
        libc::EEXIST
    );
    assert_eq!(errno_of(sys::readlink(&p("ENCR_P/s"))), 0);
    assert_eq!(errno_of(sys::readlink(&p("ENCR_P/f2"))), libc::EINVAL);
    let long = CString::new("x".repeat(5000)).unwrap();
    assert_eq!(
        errno_of(sys::symlink(&long, &p("ENCR_P/long"))),
        libc::ENAMETOOLONG
    );
    // open
    assert_eq!(
        errno_of(sys::open(
            &p("ENCR_P/f2"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY
        )),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(sys::open(&p("ENCR_P/s"), libc::O_RDONLY | libc::O_NOFOLLOW)),
        libc::ELOOP
    );
    assert_eq!(
        errno_of(sys::open(
            &p("ENCR_P/f2"),
            libc::O_RDONLY | libc::O_DIRECTORY
        )),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(sys::open(&p("ENCR_P/s"), libc::O_RDONLY)),
        0,
        "through the link"
    );
    // Write-once: an image is not changed in place. A write without
    // O_TRUNC and truncate to another length are EPERM; O_TRUNC writes a
    // new version.
    assert_eq!(
        errno_of(sys::open(&p("ENCR_P/f2"), libc::O_WRONLY)),
        libc::EPERM
    );
    assert_eq!(errno_of(sys::truncate(&p("ENCR_P/f2"), 2)), libc::EPERM);
    assert_eq!(
        errno_of(sys::open(&p("ENCR_P/f2"), libc::O_WRONLY | libc::O_TRUNC)),
        0
    );
    // Only the namespaces Linux file systems keep: user, trusted,
    // security, and the two POSIX ACLs.
    assert_eq!(
        errno_of(sys::setxattr(&p("ENCR_P/f2"), "system.foo", b"1", 0)),
        libc::EOPNOTSUPP
    );
    // A folder whose only child is still being written is not empty.
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P/busy"))), 0);
    let held = held_open(&m.p("pools/ENCR_P/busy/f"));
    assert_eq!(errno_of(sys::rmdir(&p("ENCR_P/busy"))), libc::ENOTEMPTY);
    // Nor is it replaced by a rename (its file would be committed into a
    // folder that is gone).
    assert_eq!(errno_of(sys::mkdir(&p("ENCR_P/other"))), 0);
    assert_eq!(
        errno_of(sys::rename(&p("ENCR_P/other"), &p("ENCR_P/busy"))),
        libc::ENOTEMPTY
    );
    drop(held);
    assert!(
        m.p("pools/ENCR_P/busy/f").exists(),
        "the file was committed in place"
    );
    // A device node is kept, never opened as a device: the mount is nodev.
    sh_ok(&format!(
        "mknod '{}' c 1 3",
        m.p("pools/ENCR_P/null").display()
    ));
    assert_eq!(
        errno_of(sys::open(&p("ENCR_P/null"), libc::O_WRONLY)),
        libc::EACCES
    );
    // xattrs
    assert_eq!(
        errno_of(sys::getxattr(&p("ENCR_P/f2"), "user.none", 64)),
        libc::ENODATA
    );
    assert_eq!(
        errno_of(sys::setxattr(&p("ENCR_P/f2"), "user.a", b"1", 0)),
        0
    );
    assert_eq!(
        errno_of(sys::setxattr(
            &p("ENCR_P/f2"),
            "user.a",
            b"2",
            libc::XATTR_CREATE
        )),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(sys::setxattr(
            &p("ENCR_P/f2"),
            "user.b",
            b"2",
            libc::XATTR_REPLACE
        )),
        libc::ENODATA
    );
    assert_eq!(
        errno_of(sys::getxattr(&p("ENCR_P/f2"), "user.a", 0)),
        0,
        "size query"
    );
    let big = vec![7u8; 65537];
    assert_eq!(
        errno_of(sys::setxattr(&p("ENCR_P/f2"), "user.big", &big, 0)),
        libc::E2BIG
    );
    assert_eq!(
        errno_of(sys::setxattr(&p("ENCR_P/f2"), "user.c", &big[..40000], 0)),
        0
    );
    assert_eq!(
        errno_of(sys::setxattr(&p("ENCR_P/f2"), "user.d", &big[..40000], 0)),
        libc::ENOSPC,
        "past the room of one inode"
    );
    assert_eq!(
        errno_of(sys::setxattr(&p("ENCR_P/s"), "user.a", b"1", 0)),
        libc::EPERM,
        "user.* on a symlink (Linux)"
    );
    // utimensat: UTIME_OMIT keeps atime, UTIME_NOW sets mtime, ctime moves.
    let before = std::fs::metadata(m.p("pools/ENCR_P/f2")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(errno_of(sys::utimens_omit_now(&p("ENCR_P/f2"))), 0);
    let after = std::fs::metadata(m.p("pools/ENCR_P/f2")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(after.atime(), before.atime());
    assert!(after.mtime_nsec() != before.mtime_nsec() || after.mtime() > before.mtime());
    assert!(
        after.ctime() * 1_000_000_000 + after.ctime_nsec()
            > before.ctime() * 1_000_000_000 + before.ctime_nsec()
    );
    m.unmount();
}

/// With `allow_other`, another user works where the modes let them and
/// nowhere else (the kernel checks the modes: default_permissions).
#[test]
fn another_user_reads_and_writes_where_the_modes_allow_and_nowhere_else() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("allow_other");
    std::fs::create_dir(m.p("pools/Shared")).unwrap();
    std::fs::create_dir(m.p("pools/Private")).unwrap();
    sh_ok(&format!(
        "chmod 1777 '{0}/Shared' && chmod 700 '{0}/Private' && echo secret > '{0}/Private/s' && echo open > '{0}/Shared/o' && chmod 644 '{0}/Shared/o' && echo mine > '{0}/Shared/root600' && chmod 600 '{0}/Shared/root600'",
        m.p("pools").display()
    ));
    let as_nobody = |cmd: &str| {
        sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"{cmd}\""
        ))
    };
    let pools = m.p("pools").display().to_string();
    let (ok, out, err) = as_nobody(&format!(
        "echo hi > {pools}/Shared/n && cat {pools}/Shared/n {pools}/Shared/o"
    ));
    assert!(ok, "{out}{err}");
    assert_eq!(out, "hi\nopen\n");
    let owner = sh_ok(&format!("stat -c %u:%g '{pools}/Shared/n'"));
    assert_eq!(
        owner.trim(),
        "65534:65534",
        "a new file belongs to its maker"
    );
    for cmd in [
        format!("cat {pools}/Private/s"),
        format!("ls {pools}/Private"),
        format!("echo x > {pools}/Private/new"),
        format!("cat {pools}/Shared/root600"),
        format!("rm -f {pools}/Shared/o"),
        format!("mkdir {pools}/Theirs"),
        format!("chown 65534 {pools}/Shared/o"),
    ] {
        let (ok, _, err) = as_nobody(&cmd);
        assert!(!ok, "{cmd} succeeded as another user");
        assert!(
            err.contains("Permission denied") || err.contains("Operation not permitted"),
            "{cmd}: {err}"
        );
    }
    // A rewrite by a user other than root clears setuid and setgid, as a
    // write on ext4 does.
    sh_ok(&format!(
        "echo x > '{pools}/Shared/suid' && chmod 6777 '{pools}/Shared/suid'"
    ));
    let (ok, _, err) = as_nobody(&format!("echo evil > {pools}/Shared/suid"));
    assert!(ok, "{err}");
    let mode = sh_ok(&format!("stat -c %a '{pools}/Shared/suid'"));
    assert_eq!(
        mode.trim(),
        "777",
        "setuid/setgid survived another user's rewrite"
    );
    // Their own file in the sticky folder is theirs to remove.
    let (ok, _, err) = as_nobody(&format!("rm {pools}/Shared/n"));
    assert!(ok, "{err}");
    m.unmount();
}

/// `df` on the mount shows the store's capacity and what it uses.
#[test]
fn df_shows_the_stores_capacity_and_use() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    s.group_with_key("lsukg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsukg"]);
    let m = s.mount("");
    let before = sh_ok(&format!(
        "df -B1 --output=size,used '{}' | tail -1",
        m.mp.display()
    ));
    std::fs::create_dir(m.p("pools/Clear")).unwrap();
    let src = s.path("f");
    random_file(&src, 8);
    cp(&src, &m.p("pools/Clear/f"));
    let after = sh_ok(&format!(
        "df -B1 --output=size,used '{}' | tail -1",
        m.mp.display()
    ));
    let nums = |l: &str| -> Vec<u64> { l.split_whitespace().map(|n| n.parse().unwrap()).collect() };
    let (b, a) = (nums(&before), nums(&after));
    assert!(b[0] > 0, "{before}");
    assert!(
        a[1] >= b[1] + (8 << 20),
        "used grew by the image: {before} -> {after}"
    );
    cp(&src, &m.p("msdp/L/f"));
    let lsu = sh_ok(&format!(
        "df -B1 --output=size,used '{}' | tail -1",
        m.mp.display()
    ));
    let l = nums(&lsu);
    assert!(
        l[1] >= a[1] + (8 << 20),
        "used grew by the LSU image: {after} -> {lsu}"
    );
    m.unmount();
}

/// A reader of a file being written sees the version last committed (and
/// nothing for a new file), not EBUSY; after close, the new version.
#[test]
fn a_file_being_written_reads_as_its_last_committed_version() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/Clear")).unwrap();
    let f = m.p("pools/Clear/f").display().to_string();
    std::fs::write(&f, b"old version").unwrap();
    let out = sh_ok(&format!(
        r#"python3 -c '
import os
w = os.open("{f}", os.O_WRONLY | os.O_TRUNC)
os.write(w, b"new bytes being written")
print(open("{f}", "rb").read().decode())
n = os.open("{f}.new", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(n, b"first")
print(repr(open("{f}.new", "rb").read()))
os.close(w); os.close(n)
print(open("{f}", "rb").read().decode())
'"#
    ));
    assert_eq!(out, "old version\nb''\nnew bytes being written\n");
    m.unmount();
}
