//! Test harness: a store in a temp directory, the real `kmsfs` binary, and
//! a mount guard that unmounts and waits for the daemon even when the test
//! fails, so no mount and no daemon outlive a test.
#![allow(dead_code)]

pub mod forge;
pub mod kmip;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A virtualenv under `target/NAME` with the pinned `requirements`
/// installed, made once (a `.ready` file marks it whole).
pub fn venv_at(name: &str, requirements: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let ready = dir.join(".ready");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        run_ok(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run_ok(
            Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", "-r"])
                .arg(requirements),
        );
        std::fs::write(&ready, b"").unwrap();
    }
    dir
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kmsfs")
}

/// A store made with `kmsfs init` in a fresh temp directory.
pub struct TestStore {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestStore {
    pub fn new(init_args: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("kmsfs-test")
            .tempdir_in(test_root())
            .unwrap();
        let dir = tmp.path().join("store");
        let mut args = vec!["init", dir.to_str().unwrap()];
        args.extend_from_slice(init_args);
        run_ok(Command::new(bin()).args(&args));
        Self { tmp, dir }
    }

    /// A copy of `other`'s store (unmounted) in a fresh temp directory.
    pub fn copy_of(other: &TestStore) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("kmsfs-test")
            .tempdir_in(test_root())
            .unwrap();
        let dir = tmp.path().join("store");
        run_ok(Command::new("cp").arg("-a").arg(&other.dir).arg(&dir));
        Self { tmp, dir }
    }

    /// `kmsfs --store DIR ARGS…`
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--store")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// Same, must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "kmsfs {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Same, must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            !o.status.success(),
            "kmsfs {args:?} should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stderr).unwrap()
    }

    /// Creates a key group with an active random key; returns the tag.
    pub fn group_with_key(&self, group: &str) -> String {
        self.ok(&["kms", "createkg", group]);
        let out = self.ok(&[
            "kms",
            "createkey",
            "--kg",
            group,
            "--name",
            "k1",
            "--activate",
        ]);
        out.split_whitespace()
            .skip_while(|w| *w != "tag")
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// `kms modifykey --kg KG --name NAME --state STATE`, which must succeed.
    pub fn set_state(&self, kg: &str, name: &str, state: &str) -> String {
        self.ok(&[
            "kms",
            "modifykey",
            "--kg",
            kg,
            "--name",
            name,
            "--state",
            state,
        ])
    }

    /// The same with `--force` (a key an LSU needs, as for a compromised key).
    pub fn force_state(&self, kg: &str, name: &str, state: &str) -> String {
        self.ok(&[
            "kms",
            "modifykey",
            "--kg",
            kg,
            "--name",
            name,
            "--state",
            state,
            "--force",
        ])
    }

    /// `kms export` of the store's keys to `TMP/keys.kex`; returns the
    /// file and its pass-phrase file.
    pub fn export_keys(&self) -> (PathBuf, PathBuf) {
        let pp = self.path("export-pp");
        std::fs::write(&pp, "export phrase").unwrap();
        let kex = self.path("keys.kex");
        self.ok(&[
            "kms",
            "export",
            "--out",
            kex.to_str().unwrap(),
            "--pass-phrase-file",
            pp.to_str().unwrap(),
        ]);
        (kex, pp)
    }

    /// `kms import` of keys [`TestStore::export_keys`] wrote.
    pub fn import_keys(&self, (kex, pp): &(PathBuf, PathBuf)) {
        self.ok(&[
            "kms",
            "import",
            "--in",
            kex.to_str().unwrap(),
            "--pass-phrase-file",
            pp.to_str().unwrap(),
        ]);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Mounts at `TMP/mnt` in the background with `-o opts`.
    pub fn mount(&self, opts: &str) -> Mounted {
        self.try_mount(opts, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts with environment `env` for the daemon; the error is the
    /// mount command's stderr.
    pub fn try_mount(&self, opts: &str, env: &[(&str, &str)]) -> Result<Mounted, String> {
        let mp = self.tmp.path().join("mnt");
        std::fs::create_dir_all(&mp).unwrap();
        let mut c = Command::new(bin());
        c.envs(env.iter().copied());
        c.arg("mount").arg(&self.dir).arg(&mp);
        // The tests read the log: keep it in the store even where syslog exists.
        c.arg("-o")
            .arg(format!("log_file={}", self.dir.join("kmsfs.log").display()));
        if !opts.is_empty() {
            c.arg("-o").arg(opts);
        }
        let o = c.output().unwrap();
        let m = Mounted {
            mp,
            store: self.dir.clone(),
            pid: read_pid(&self.dir),
        };
        if !o.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        if m.pid.is_none() {
            return Err("daemon pid file missing".into());
        }
        Ok(m)
    }
}

/// Where test stores live: a tmpfs-backed /dev/shm when large enough, else /tmp.
fn test_root() -> PathBuf {
    std::env::var_os("KMSFS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn read_pid(store: &Path) -> Option<u32> {
    std::fs::read_to_string(store.join("kmsfs.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Takes charge of a mount made some other way (mount(8), autofs).
pub fn adopt(store: &Path, mp: &Path) -> Mounted {
    Mounted {
        mp: mp.to_path_buf(),
        store: store.to_path_buf(),
        pid: read_pid(store),
    }
}

/// A mounted store; unmounts on drop and waits for the daemon to exit.
pub struct Mounted {
    pub mp: PathBuf,
    pub store: PathBuf,
    pub pid: Option<u32>,
}

impl Mounted {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    pub fn unmount(mut self) {
        self.teardown();
    }

    /// SIGKILLs the daemon (simulated crash) and clears the dead mount.
    pub fn kill(mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            wait_gone(pid);
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
    }

    fn teardown(&mut self) {
        if is_mounted(&self.mp) {
            let ok = Command::new("umount")
                .arg(&self.mp)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
            }
        }
        if let Some(pid) = self.pid.take()
            && !wait_gone(pid)
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            wait_gone(pid);
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub fn is_mounted(mp: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mp = mp.to_string_lossy();
    m.lines().any(|l| l.split(' ').nth(1) == Some(&*mp))
}

/// Waits up to 15 s for a process to exit (reaping it if it is our child's child).
pub fn wait_gone(pid: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A killed multi-threaded daemon's leader shows Z as soon as it is
        // gone; the other threads still hold the descriptors (the control
        // socket) until they exit too and leave /proc/PID/task.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        if stat.is_empty() || (stat.split(' ').nth(2) == Some("Z") && threads <= 1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn run_ok(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A writer whose mount was killed under it: if it failed, it failed
/// because the mount went away (its words are captured here, not printed
/// into the test run).
pub fn expect_cut_off(o: Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && !err.is_empty() {
        assert!(
            err.contains("Transport endpoint is not connected")
                || err.contains("Software caused connection abort"),
            "the writer failed for another reason: {err}"
        );
    }
}

/// `sh -c SCRIPT`; returns (success, stdout, stderr).
pub fn sh(script: &str) -> (bool, String, String) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

pub fn sh_ok(script: &str) -> String {
    let (ok, out, err) = sh(script);
    assert!(ok, "`{script}` failed: {out}{err}");
    out
}

/// `cp SRC DST`, which must succeed.
pub fn cp(src: &Path, dst: &Path) {
    sh_ok(&format!("cp '{}' '{}'", src.display(), dst.display()));
}

/// `cat` of a file on the mount, which must fail; returns its stderr.
pub fn read_fails(m: &Mounted, rel: &str) -> String {
    let (ok, _, err) = sh(&format!(
        "timeout 60 cat '{}' > /dev/null",
        m.p(rel).display()
    ));
    assert!(!ok, "reading {rel} should fail");
    err
}

/// SHA-256 of a file, with the real sha256sum.
pub fn sha256(path: &Path) -> String {
    let out = sh_ok(&format!("sha256sum '{}'", path.display()));
    out.split_whitespace().next().unwrap().to_string()
}

/// Whether `needle` occurs in any file under `dir`.
pub fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    let one = std::collections::HashSet::from([needle.to_vec()]);
    holds_any(dir, &one, needle.len()).is_some()
}

/// The first file under `dir` holding any of `needles` (all `width` long).
pub fn holds_any(
    dir: &Path,
    needles: &std::collections::HashSet<Vec<u8>>,
    width: usize,
) -> Option<String> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p)
                && b.windows(width).any(|w| needles.contains(w))
            {
                return Some(p.display().to_string());
            }
        }
    }
    None
}

/// Flips every bit of the byte at `offset` of `path` (writing a fixed
/// byte instead leaves the file as it was one time in 256).
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[!b[0]], offset).unwrap();
}

/// A file of `mib` MiB of pseudo-random bytes made with dd and openssl-free means.
pub fn random_file(path: &Path, mib: usize) {
    sh_ok(&format!(
        "head -c {}M /dev/urandom > '{}'",
        mib,
        path.display()
    ));
}

/// A small tmpfs mounted over a directory of a store (its old content
/// copied in), so a test can fill it and make writes there fail with
/// ENOSPC; unmounted on drop, the old content back in place.
pub struct FullDisk {
    dir: PathBuf,
    saved: PathBuf,
}

impl FullDisk {
    /// Mounts a tmpfs of `kib` KiB over `dir`, keeping what `dir` held.
    pub fn over(dir: &Path, kib: u64) -> Self {
        let saved = dir.with_extension("before-tmpfs");
        std::fs::rename(dir, &saved).unwrap();
        std::fs::create_dir(dir).unwrap();
        sh_ok(&format!(
            "mount -t tmpfs -o size={kib}k,mode=0700 kmsfs-test-tmpfs '{d}' && cp -a '{s}/.' '{d}/'",
            d = dir.display(),
            s = saved.display()
        ));
        Self {
            dir: dir.to_path_buf(),
            saved,
        }
    }

    /// Fills the tmpfs; writes there now fail with ENOSPC.
    pub fn fill(&self) {
        let _ = sh(&format!(
            "dd if=/dev/zero of='{}/filler' bs=4k status=none",
            self.dir.display()
        ));
    }

    /// Frees the space [`FullDisk::fill`] took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        // What the test left in the tmpfs becomes the directory again.
        let _ = std::fs::remove_file(self.dir.join("filler"));
        let _ = std::fs::remove_dir_all(&self.saved);
        let _ = std::fs::create_dir(&self.saved);
        let _ = sh(&format!(
            "cp -a '{d}/.' '{s}/' && umount '{d}' && rmdir '{d}' && mv '{s}' '{d}'",
            d = self.dir.display(),
            s = self.saved.display()
        ));
    }
}
