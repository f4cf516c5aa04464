//! kmsfs as an administrator installs it: the mount(8) helper, the forms
//! mount.fuse3 uses, fstab with `mount -T` and `mount -a`, the units
//! systemd-fstab-generator makes, a real autofs automount, options, and how
//! the daemon starts, fails and stops.

mod common;

use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// Tests that install the system-wide helper run one at a time.
static SYSTEM: Mutex<()> = Mutex::new(());

const HELPER: &str = "/usr/sbin/mount.kmsfs";

const BIN: &str = "/usr/local/bin/kmsfs";

/// Installs the binary under test as scripts/install.sh does by default
/// (/usr/local/bin, where mount(8) and mount.fuse3 look, and the helper in
/// /usr/sbin); on drop uninstalls, restoring what was there before.
struct Installed {
    saved: Vec<(&'static str, Option<Vec<u8>>)>,
}

impl Installed {
    fn new() -> Self {
        let saved = [HELPER, BIN]
            .into_iter()
            .map(|p| (p, std::fs::read(p).ok()))
            .collect();
        let root = env!("CARGO_MANIFEST_DIR");
        run_ok(Command::new(format!("{root}/scripts/install.sh")).env("KMSFS_SRC_BIN", bin()));
        Self { saved }
    }

    fn mount(&self, args: &[&str]) -> std::process::Output {
        Command::new("mount").args(args).output().unwrap()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/install.sh"))
            .arg("--uninstall")
            .output();
        for (path, bytes) in self.saved.drain(..) {
            if let Some(b) = bytes {
                let _ = std::fs::write(path, b);
                let _ = Command::new("chmod").args(["0755", path]).status();
            }
        }
    }
}

fn log_opt(s: &TestStore) -> String {
    format!("log_file={}", s.dir.join("kmsfs.log").display())
}

#[test]
fn mount_t_kmsfs_and_fuse_kmsfs_then_uninstall() {
    let _l = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestStore::new(&[]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let inst = Installed::new();
    let o = inst.mount(&[
        "-t",
        "kmsfs",
        "-o",
        &format!("drives=3,{}", log_opt(&s)),
        s.dir.to_str().unwrap(),
        mp.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "mount -t kmsfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = adopt(&s.dir, &mp);
    assert_eq!(
        std::fs::read_dir(mp.join("drives")).unwrap().count(),
        3,
        "drives=3 reached the daemon"
    );
    std::fs::create_dir(mp.join("pools/P")).unwrap();
    std::fs::write(mp.join("pools/P/f"), b"via mount -t kmsfs").unwrap();
    m.unmount();
    let o = inst.mount(&[
        "-t",
        "fuse.kmsfs",
        "-o",
        &log_opt(&s),
        s.dir.to_str().unwrap(),
        mp.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "mount -t fuse.kmsfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = adopt(&s.dir, &mp);
    assert_eq!(
        std::fs::read(mp.join("pools/P/f")).unwrap(),
        b"via mount -t kmsfs"
    );
    m.unmount();
    let o = inst.mount(&[
        "-t",
        "kmsfs",
        "-o",
        "bogus_opt",
        s.dir.to_str().unwrap(),
        mp.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("bogus_opt"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!is_mounted(&mp), "a bad option leaves no mount");
    let root = env!("CARGO_MANIFEST_DIR");
    run_ok(Command::new(format!("{root}/scripts/install.sh")).arg("--uninstall"));
    assert!(
        !Path::new(HELPER).exists() && !Path::new(BIN).exists(),
        "uninstall removes both"
    );
    let o = Command::new("mount")
        .args(["-t", "kmsfs", s.dir.to_str().unwrap(), mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "uninstalled: mount -t kmsfs no longer works"
    );
    assert!(!is_mounted(&mp));
    drop(inst); // restores whatever was installed before the test
}

#[test]
fn fstab_mount_dir_and_mount_a() {
    let _l = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestStore::new(&[]);
    let t = TestStore::new(&[]);
    let (a, b) = (s.path("mnt-a"), t.path("mnt-b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let fstab = s.path("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} kmsfs defaults,nofail,_netdev,drives=2,{} 0 0\n{} {} kmsfs noauto,x-systemd.automount,comment=x,{} 0 0\n",
            s.dir.display(), a.display(), log_opt(&s), t.dir.display(), b.display(), log_opt(&t)
        ),
    )
    .unwrap();
    let inst = Installed::new();
    let o = inst.mount(&["-T", fstab.to_str().unwrap(), a.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "mount DIR from fstab: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = adopt(&s.dir, &a);
    std::fs::create_dir(a.join("pools/P")).unwrap();
    std::fs::write(a.join("pools/P/f"), b"fstab").unwrap();
    m.unmount();
    let o = inst.mount(&["-a", "-T", fstab.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "mount -a: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ma = adopt(&s.dir, &a);
    assert!(is_mounted(&a), "mount -a mounts the auto entry");
    assert!(!is_mounted(&b), "mount -a skips noauto");
    assert_eq!(std::fs::read(a.join("pools/P/f")).unwrap(), b"fstab");
    let o = inst.mount(&["-T", fstab.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "noauto entry mounts by name: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mb = adopt(&t.dir, &b);
    assert!(is_mounted(&b));
    ma.unmount();
    mb.unmount();
}

#[test]
fn systemd_fstab_generator_makes_mount_and_automount_units() {
    let generator = [
        "/usr/lib/systemd/system-generators/systemd-fstab-generator",
        "/lib/systemd/system-generators/systemd-fstab-generator",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-fstab-generator (package systemd) is installed");
    let t = tempfile::tempdir().unwrap();
    let fstab = t.path().join("fstab");
    std::fs::write(
        &fstab,
        "/srv/kmsfs/store /mnt/backup kmsfs defaults,nofail,drives=2 0 0\n/srv/kmsfs/store2 /mnt/backup-auto kmsfs noauto,nofail,x-systemd.automount,x-systemd.idle-timeout=600 0 0\n",
    )
    .unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = Command::new(generator)
        .args([&out, &out, &out])
        .env("SYSTEMD_FSTAB", &fstab)
        .env("SYSTEMD_LOG_LEVEL", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = std::fs::read_to_string(out.join("mnt-backup.mount")).unwrap();
    for line in [
        "What=/srv/kmsfs/store",
        "Where=/mnt/backup",
        "Type=kmsfs",
        "Options=defaults,nofail,drives=2",
    ] {
        assert!(unit.contains(line), "{line} in\n{unit}");
    }
    let auto = std::fs::read_to_string(out.join("mnt-backup\\x2dauto.automount")).unwrap();
    assert!(
        auto.contains("Where=/mnt/backup-auto") && auto.contains("TimeoutIdleSec=10min"),
        "{auto}"
    );
    let m2 = std::fs::read_to_string(out.join("mnt-backup\\x2dauto.mount")).unwrap();
    assert!(
        m2.contains("Type=kmsfs") && m2.contains("What=/srv/kmsfs/store2"),
        "{m2}"
    );
    let wants = std::fs::read_dir(out.join("local-fs.target.wants"))
        .map(|d| d.count())
        .unwrap_or(0)
        + std::fs::read_dir(out.join("local-fs.target.requires"))
            .map(|d| d.count())
            .unwrap_or(0);
    assert!(
        wants >= 1,
        "the boot-time entry is pulled in by local-fs.target"
    );
}

/// A running automount, stopped (and its mounts undone) on drop.
struct Automount {
    child: std::process::Child,
    mp: PathBuf,
}

impl Drop for Automount {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        for _ in 0..3 {
            if is_mounted(&self.mp) {
                let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
            }
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool, secs: u64) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fuse_mounted(mp: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    m.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 2 && Path::new(f[1]) == mp && f[2].starts_with("fuse")
    })
}

#[test]
fn autofs_direct_map_mounts_on_access_and_unmounts_when_idle() {
    let _l = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    // automount needs the kernel's autofs file system; a kernel built
    // without it (some VM kernels) cannot run this test at all.
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("autofs") {
        eprintln!("SKIPPED: this kernel has no autofs file system (/proc/filesystems)");
        return;
    }
    if Command::new("automount").arg("-V").output().is_err() {
        let ok = Command::new("sh").arg("-c").arg("apt-get install -y -qq autofs >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq autofs >/dev/null)").status().unwrap();
        assert!(ok.success(), "autofs installs");
    }
    let s = TestStore::new(&[]);
    let mp = s.path("auto");
    let master = s.path("auto.master");
    let map = s.path("auto.kmsfs");
    std::fs::write(&master, format!("/- {} --timeout=2\n", map.display())).unwrap();
    std::fs::write(
        &map,
        format!(
            "{} -fstype=kmsfs,{} :{}\n",
            mp.display(),
            log_opt(&s),
            s.dir.display()
        ),
    )
    .unwrap();
    let _inst = Installed::new();
    let child = Command::new("setsid")
        .args(["automount", "-f", master.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _am = Automount {
        child,
        mp: mp.clone(),
    };
    wait_for("the autofs trigger", || is_mounted(&mp), 10);
    assert!(!fuse_mounted(&mp), "nothing mounted before first access");
    let names: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&"pools".to_string()) && names.contains(&"drives".to_string()),
        "{names:?}"
    );
    assert!(fuse_mounted(&mp), "first access mounted the store");
    std::fs::create_dir(mp.join("pools/P")).unwrap();
    std::fs::write(mp.join("pools/P/f"), b"automounted").unwrap();
    wait_for("the idle unmount", || !fuse_mounted(&mp), 30);
    wait_for(
        "the daemon to exit after the idle unmount",
        || !s.dir.join("kmsfs.pid").exists(),
        10,
    );
    assert_eq!(
        std::fs::read(mp.join("pools/P/f")).unwrap(),
        b"automounted",
        "the next access mounts it again"
    );
    assert!(fuse_mounted(&mp));
}

#[test]
fn failures_exit_non_zero_with_the_reason_and_leave_no_mount() {
    let s = TestStore::new(&[]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mount = |args: &[&str]| {
        Command::new(bin())
            .arg("mount")
            .args(args)
            .output()
            .unwrap()
    };
    for (opt, says) in [
        ("bogus", "unknown mount option 'bogus'"),
        ("drives=x", "drives=x"),
        ("log=loud", "log=loud"),
        ("passfile", "needs a value"),
    ] {
        let o = mount(&[s.dir.to_str().unwrap(), mp.to_str().unwrap(), "-o", opt]);
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(says),
            "{opt}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!is_mounted(&mp));
    }
    let o = mount(&[s.path("nostore").to_str().unwrap(), mp.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no kmsfs store"));
    let o = mount(&[s.dir.to_str().unwrap(), s.path("nodir").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("mount point"));
    let m = s.mount("");
    let o = mount(&[s.dir.to_str().unwrap(), mp.to_str().unwrap()]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("already a kmsfs mount point"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let other = s.path("mnt2");
    std::fs::create_dir(&other).unwrap();
    let o = mount(&[s.dir.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("in use"),
        "the store is held: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!is_mounted(&other));
    m.unmount();
    // A pass-phrase store: wrong phrase, missing phrase.
    let t = tempfile::tempdir().unwrap();
    let (pp, wrong) = (t.path().join("pp"), t.path().join("wrong"));
    std::fs::write(&pp, "right").unwrap();
    std::fs::write(&wrong, "wrong").unwrap();
    let store = t.path().join("s");
    run_ok(Command::new(bin()).args([
        "init",
        store.to_str().unwrap(),
        "--passphrase-file",
        pp.to_str().unwrap(),
    ]));
    let o = mount(&[
        store.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        &format!("passfile={}", wrong.display()),
    ]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("wrong pass phrase"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = mount(&[store.to_str().unwrap(), mp.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("pass phrase"));
    assert!(!is_mounted(&mp));
    let o = mount(&[
        store.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        &format!(
            "passfile={},{}",
            pp.display(),
            format_args!("log_file={}/log", t.path().display())
        ),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    adopt(&store, &mp).unmount();
}

#[test]
fn sigterm_umount_and_fusermount_stop_the_daemon_cleanly() {
    let s = TestStore::new(&[]);
    for how in ["sigterm", "umount", "fusermount3"] {
        let m = s.mount("");
        std::fs::create_dir_all(m.p("pools/P")).unwrap();
        std::fs::write(m.p(&format!("pools/P/{how}")), how.as_bytes()).unwrap();
        let pid = m.pid.unwrap();
        let ok = match how {
            "sigterm" => Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status(),
            "umount" => Command::new("umount").arg(&m.mp).status(),
            _ => Command::new("fusermount3").arg("-u").arg(&m.mp).status(),
        };
        assert!(ok.unwrap().success(), "{how}");
        assert!(wait_gone(pid), "daemon exits after {how}");
        assert!(!is_mounted(&m.mp), "{how} left no mount");
        assert!(
            !s.dir.join("control.sock").exists() && !s.dir.join("kmsfs.pid").exists(),
            "{how}: socket and pid file removed"
        );
    }
    let m = s.mount("");
    for how in ["sigterm", "umount", "fusermount3"] {
        assert_eq!(
            std::fs::read(m.p(&format!("pools/P/{how}"))).unwrap(),
            how.as_bytes()
        );
    }
}

#[test]
fn lazy_unmount_while_writing_loses_no_closed_image() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    std::fs::write(m.p("pools/P/before"), b"closed before").unwrap();
    let f = m.p("pools/P/during");
    let mut py = Command::new("python3")
        .arg("-c")
        .arg(format!("import os,sys\nf=os.open('{}',os.O_WRONLY|os.O_CREAT,0o644)\nos.write(f,b'a'*500000)\nprint('open',flush=True)\nsys.stdin.readline()\nos.write(f,b'b'*500000)\nos.close(f)\nprint('closed',flush=True)", f.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "open");
    assert!(
        Command::new("umount")
            .arg("-l")
            .arg(&m.mp)
            .status()
            .unwrap()
            .success()
    );
    assert!(!is_mounted(&m.mp), "detached");
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "closed",
        "the writer finished on the detached mount"
    );
    py.wait().unwrap();
    assert!(
        wait_gone(m.pid.unwrap()),
        "the daemon exits once the last file closes"
    );
    drop(m);
    let m = s.mount("");
    assert_eq!(
        std::fs::read(m.p("pools/P/before")).unwrap(),
        b"closed before"
    );
    let d = std::fs::read(m.p("pools/P/during")).unwrap();
    assert_eq!(d.len(), 1_000_000);
    assert!(d[..500_000].iter().all(|&b| b == b'a') && d[500_000..].iter().all(|&b| b == b'b'));
}

/// `allow_other` lets other users in; without `default_permissions` the
/// kernel would not check their rights and they would read decrypted
/// images and remove them. That combination is refused; with the kernel's
/// checks, a user reads what the modes allow and nothing else.
#[test]
fn other_users_get_what_the_modes_allow_and_nothing_more() {
    let s = TestStore::new(&[]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let o = s.cmd(&[
        "mount",
        s.dir.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        "allow_other,nodefault_permissions",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    let _refused_or_unmounted = o.status.success().then(|| adopt(&s.dir, &mp));
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("allow_other") && err.contains("nodefault_permissions"),
        "{err}"
    );
    assert!(!is_mounted(&mp));
    // The test directory is private; let the other user reach the mount.
    sh_ok(&format!("chmod 755 '{}'", s.tmp.path().display()));
    s.group_with_key("ENCR_HR");
    let m = s.mount("allow_other");
    std::fs::create_dir(m.p("pools/ENCR_HR")).unwrap();
    std::fs::write(m.p("pools/ENCR_HR/salaries"), b"secret").unwrap();
    std::fs::write(m.p("pools/ENCR_HR/notice"), b"public").unwrap();
    sh_ok(&format!(
        "chmod 600 '{}'",
        m.p("pools/ENCR_HR/salaries").display()
    ));
    sh_ok(&format!(
        "chmod 644 '{}'",
        m.p("pools/ENCR_HR/notice").display()
    ));
    let nobody = |cmd: &str| {
        sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups {cmd}"
        ))
    };
    let (ok, out, _) = nobody(&format!("cat '{}'", m.p("pools/ENCR_HR/notice").display()));
    assert!(ok && out == "public", "a readable image reads: {out}");
    let (ok, out, err) = nobody(&format!(
        "cat '{}'",
        m.p("pools/ENCR_HR/salaries").display()
    ));
    assert!(
        !ok && out.is_empty() && err.contains("Permission denied"),
        "{out}{err}"
    );
    let (ok, _, err) = nobody(&format!(
        "rm -f '{}'",
        m.p("pools/ENCR_HR/notice").display()
    ));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, _, err) = nobody(&format!(
        "cp /etc/hostname '{}'",
        m.p("pools/ENCR_HR/planted").display()
    ));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_HR/notice")).unwrap(),
        b"public"
    );
}

/// The daemon's log is created private (0600) and a `log_file=` that is a
/// symlink is refused, not followed to a file of someone else's choosing.
#[test]
fn the_log_file_is_private_and_never_a_followed_symlink() {
    let s = TestStore::new(&[]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log = s.path("daemon.log");
    let m = s.mount(&format!("log_file={}", log.display()));
    drop(m);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "log file mode {mode:o}");
    let victim = s.path("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    let link = s.path("link.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = s.cmd(&[
        "mount",
        s.dir.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        &format!("log_file={}", link.display()),
    ]);
    let _guard = o.status.success().then(|| adopt(&s.dir, &mp));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("log_file"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
}

/// SIGTERM, SIGINT and SIGHUP must reach only the daemon's signal watcher
/// (which unmounts cleanly): a thread started before they were blocked (a
/// key cache sweeper) would take the default action and kill the daemon
/// with the mount left behind.
#[test]
fn only_the_signal_watcher_can_take_a_stop_signal() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let pid = m.pid.unwrap();
    let stop =
        (1u64 << (libc::SIGTERM - 1)) | (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGHUP - 1));
    let mut open = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let blk = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or(0);
        if blk & stop != stop {
            open.push(name.trim().to_string());
        }
    }
    assert!(
        open.len() <= 1,
        "threads that a stop signal could kill the daemon through: {open:?}"
    );
}
