//! `kmsfs mount`: parse options, open the store, serve it. Without `-f` the
//! command starts itself again as a daemon and returns only once the
//! filesystem answers (so `mount …; ls DIR` never races), or with the
//! daemon's error and a non-zero exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::args::MountArgs;
use super::mount_opts::{self, MountOpts};
use super::{CliError, Global, read_secret};
use crate::fs::{MountOptions, mount_foreground};
use crate::kmip::{KmipServer, KmsBackend};
use crate::kms::Unlock;
use crate::store::Store;

const DAEMON_ENV: &str = "KMSFS_DAEMON_CHILD";
const READY: &str = "KMSFS-READY";

pub fn mount(g: &Global, a: &MountArgs, argv: &[String]) -> Result<i32, CliError> {
    let opts = mount_opts::parse(&a.options).map_err(CliError::Usage)?;
    if let Some(t) = a
        .fstype
        .as_deref()
        .filter(|t| !matches!(*t, "kmsfs" | "fuse.kmsfs"))
    {
        return Err(CliError::Usage(format!(
            "filesystem type '{t}' is not kmsfs"
        )));
    }
    check_mountpoint(&a.mountpoint, opts.nonempty)?;
    if let Some(m) = mounted_on(&a.source) {
        let pid = std::fs::read_to_string(a.source.join("kmsfs.pid"))
            .ok()
            .map(|p| format!(" (PID {})", p.trim()))
            .unwrap_or_default();
        return Err(CliError::Mount(format!(
            "store {} is in use: mounted on {} by kmsfs{pid}; unmount it first",
            a.source.display(),
            m.display(),
        )));
    }
    let kms_override = kmip_override(&opts, &crate::store::Config::load(&a.source)?.kms)?;
    let daemon_child = std::env::var_os(DAEMON_ENV).is_some();
    if !(a.foreground || opts.foreground || daemon_child) {
        return spawn_daemon(argv);
    }
    // Before any thread starts: stop signals go to the watcher only.
    crate::fs::block_stop_signals();
    super::logging::init(
        opts.log.as_deref(),
        log_target(&opts, &a.source, daemon_child),
    )
    .map_err(CliError::Mount)?;
    let unlock = Unlock {
        hmk_file: opts.hmk.clone().or_else(|| g.hmk_file.clone()),
        passphrase: opts
            .passfile
            .as_deref()
            .or(g.passphrase_file.as_deref())
            .map(read_secret)
            .transpose()?,
    };
    let store = Store::open_with(&a.source, unlock, |c| {
        c.drives = opts.drives.unwrap_or(c.drives);
        c.kms_timeout_secs = opts.kms_timeout.unwrap_or(c.kms_timeout_secs);
        if let Some(k) = kms_override {
            c.kms = k;
        }
    })?;
    let mo = MountOptions {
        read_only: opts.read_only,
        allow_other: opts.allow_other,
        default_permissions: !opts.no_default_permissions,
        threads: opts.threads.unwrap_or(8),
    };
    let mp = std::fs::canonicalize(&a.mountpoint).map_err(|e| CliError::io(&a.mountpoint, e))?;
    let store = Arc::new(store);
    // The control socket runs the CLI's commands in this daemon, against
    // its open store, for as long as the mount lives.
    let handler: crate::control::Handler = Arc::new(super::run_in_daemon);
    let _control = crate::control::Server::start(store.clone(), handler)
        .map_err(|e| CliError::Mount(format!("control socket: {e}")))?;
    mount_foreground(store, &mp, &mo, || {
        if daemon_child {
            println!("{READY}");
            let _ = std::io::stdout().flush();
            detach_stdio();
        }
    })
    .map_err(|e| CliError::Mount(format!("{}: {e}", mp.display())))?;
    Ok(0)
}

/// Foreground: stderr. Daemon: `log_file=`, else syslog/journald when
/// `/dev/log` exists, else `STORE/kmsfs.log`.
fn log_target(o: &MountOpts, store: &Path, daemon: bool) -> super::logging::Target {
    use super::logging::Target;
    match (&o.log_file, daemon) {
        (Some(f), _) => Target::File(f.clone()),
        (None, false) => Target::Stderr,
        (None, true) if Path::new("/dev/log").exists() => Target::Syslog,
        (None, true) => Target::File(store.join("kmsfs.log")),
    }
}

/// The mount point must be an existing directory not already mounted by kmsfs.
fn check_mountpoint(mp: &Path, nonempty: bool) -> Result<(), CliError> {
    let meta = std::fs::metadata(mp)
        .map_err(|e| CliError::Mount(format!("mount point {}: {e}", mp.display())))?;
    if !meta.is_dir() {
        return Err(CliError::Mount(format!(
            "mount point {} is not a directory",
            mp.display()
        )));
    }
    let canon = std::fs::canonicalize(mp).map_err(|e| CliError::io(mp, e))?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let busy = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 2 && Path::new(&unescape_mount_field(f[1])) == canon && f[2].contains("kmsfs")
    });
    if busy {
        return Err(CliError::Mount(format!(
            "{} is already a kmsfs mount point",
            canon.display()
        )));
    }
    if nonempty {
        return Ok(());
    }
    let holds_files = std::fs::read_dir(&canon)
        .map_err(|e| CliError::io(&canon, e))?
        .next()
        .is_some();
    if holds_files {
        return Err(CliError::Mount(format!(
            "mount point {} is not empty: its files would be hidden while mounted \
             (give -o nonempty to mount over them)",
            canon.display()
        )));
    }
    Ok(())
}

/// Where the store at `store` is mounted now, if it is (a kmsfs mount
/// whose source is this store).
pub(super) fn mounted_on(store: &Path) -> Option<std::path::PathBuf> {
    // Only this store's path is resolved: a mount's source is compared as
    // written (the daemon mounts with the canonical path), so a hung mount
    // of another store is never touched.
    let store = std::fs::canonicalize(store).ok()?;
    let want = store.to_string_lossy().replace(',', "_");
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let ours = f.len() > 2 && f[2].contains("kmsfs") && unescape_mount_field(f[0]) == want;
        ours.then(|| std::path::PathBuf::from(unescape_mount_field(f[1])))
    })
}

/// A field of /proc/self/mounts with its octal escapes (`\040` space,
/// `\011` tab, `\012` newline, `\134` backslash) decoded.
fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the daemon and waits until it says the mount answers.
fn spawn_daemon(argv: &[String]) -> Result<i32, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Mount(format!("cannot find own executable: {e}")))?;
    let mut child = Command::new(exe)
        .args(&argv[1..])
        .env(DAEMON_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::Mount(format!("cannot start the daemon: {e}")))?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    if line.trim() == READY {
        return Ok(0);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait_timeout_or_kill();
    eprint!("{err}");
    Err(CliError::Mount(format!(
        "the daemon did not mount ({status})"
    )))
}

trait WaitTimeout {
    fn wait_timeout_or_kill(&mut self) -> String;
}

impl WaitTimeout for std::process::Child {
    fn wait_timeout_or_kill(&mut self) -> String {
        for _ in 0..100 {
            if let Ok(Some(s)) = self.try_wait() {
                return s.to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.kill();
        let _ = self.wait();
        "killed: it neither mounted nor exited".into()
    }
}

/// Once the mount answers: stdout and stderr of the daemon go to
/// /dev/null, and it leaves the caller's session (no terminal signals).
/// Not earlier: autofs serves only its own process group on the trigger
/// directory, so the daemon must mount from the group that autofs's
/// `mount` runs in, or it waits on itself.
#[allow(unsafe_code)]
fn detach_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 of a valid open descriptor onto stdout/stderr.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
    // SAFETY: setsid has no memory effects; it fails harmlessly for a group leader.
    unsafe {
        libc::setsid();
    }
}

/// The KMS backend the `kmip_*` mount options ask for, completed from the
/// store's own KMIP settings; `None` when no such option is given.
fn kmip_override(o: &MountOpts, current: &KmsBackend) -> Result<Option<KmsBackend>, CliError> {
    let any = !o.kmip_servers.is_empty()
        || o.kmip_ca.is_some()
        || o.kmip_cert.is_some()
        || o.kmip_key.is_some()
        || o.key_cache.is_some();
    if !any {
        return Ok(None);
    }
    let cur = match current {
        KmsBackend::Kmip(k) => Some(k),
        KmsBackend::Embedded => None,
    };
    let first = cur.and_then(|k| k.servers.first());
    let servers = if o.kmip_servers.is_empty() {
        cur.map(|k| k.servers.iter().map(|s| s.address.clone()).collect())
            .unwrap_or_default()
    } else {
        o.kmip_servers.clone()
    };
    let pick = |opt: &Option<PathBuf>, f: fn(&KmipServer) -> &PathBuf| {
        opt.clone().or_else(|| first.map(|s| f(s).clone()))
    };
    let cfg = super::kmip_cmd::kmip_config(
        &servers,
        &pick(&o.kmip_ca, |s| &s.ca),
        &pick(&o.kmip_cert, |s| &s.cert),
        &pick(&o.kmip_key, |s| &s.key),
        o.key_cache.or(cur.map(|k| k.key_cache_secs)),
    )
    .map_err(|e| CliError::Usage(format!("mount options kmip_*: {e}")))?;
    Ok(Some(KmsBackend::Kmip(cfg)))
}
