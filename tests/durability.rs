//! The order of durable steps, observed on the real daemon with strace: a
//! file the catalog will refer to (a volume, a container, an imported
//! volume) has its directory entry fsynced before the catalog transaction
//! that refers to it, so a power cut cannot leave a committed image whose
//! volume or container has vanished from its directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The strace lines of `log`, one syscall each (pid prefix removed).
fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, r)| r).trim().to_string())
        .collect()
}

/// Index of the first call at or after `from` that matches `f`.
fn find(calls: &[String], from: usize, what: &str, f: impl Fn(&str) -> bool) -> usize {
    calls[from..]
        .iter()
        .position(|c| f(c))
        .map(|i| i + from)
        .unwrap_or_else(|| {
            panic!(
                "no {what} after call {from} in:\n{}",
                calls[from..].join("\n")
            )
        })
}

fn is_sync_of(c: &str, path_end: &str) -> bool {
    (c.starts_with("fsync(") || c.starts_with("fdatasync(")) && c.contains(&format!("{path_end}>)"))
}

/// After the call that creates a file matching `created`, its directory
/// `dir` is fsynced before the catalog's next durable commit.
fn dir_synced_before_commit(calls: &[String], created: &str, dir: &str) {
    let made = find(calls, 0, created, |c| {
        c.starts_with("openat(") && c.contains(created) && c.contains("O_CREAT")
    });
    let commit = find(calls, made, "catalog commit", |c| {
        is_sync_of(c, "catalog.redb")
    });
    let synced = find(calls, made, &format!("fsync of {dir}"), |c| {
        is_sync_of(c, dir)
    });
    assert!(
        synced < commit,
        "{dir} fsynced (call {synced}) after the catalog commit (call {commit}) that refers to {created}"
    );
}

#[test]
fn new_volumes_and_containers_are_in_a_synced_directory_before_the_catalog_names_them() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_D");
    s.ok(&["lsu", "create", "L"]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log = s.path("strace.log");
    let mut daemon = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,rename",
            "-o",
        ])
        .arg(&log)
        .arg(bin())
        .arg("mount")
        .arg(&s.dir)
        .arg(&mp)
        .args(["-o", "foreground"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !is_mounted(&mp) {
        assert!(start.elapsed().as_secs() < 20, "mount did not come up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let m = adopt(&s.dir, &mp);
    std::fs::create_dir(m.p("pools/ENCR_D")).unwrap();
    std::fs::write(m.p("pools/ENCR_D/a"), b"tape image").unwrap();
    std::fs::write(m.p("msdp/L/b"), vec![7u8; 300_000]).unwrap();
    m.unmount();
    let _ = daemon.wait();
    let c = calls(&log);
    dir_synced_before_commit(&c, "K00001L9.kvol", "/volumes");
    dir_synced_before_commit(&c, ".kct", "/containers");
    // Import: the copied volume is linked into place, then its directory
    // is synced, before the catalog commits the image.
    let vault = s.path("vault");
    std::fs::create_dir(&vault).unwrap();
    std::fs::copy(
        s.dir.join("volumes/K00001L9.kvol"),
        vault.join("K00001L9.kvol"),
    )
    .unwrap();
    let b = TestStore::new(&[]);
    b.import_keys(&s.export_keys());
    let log = b.path("import.log");
    run_ok(
        Command::new("strace")
            .args([
                "-f",
                "-y",
                "-qq",
                "-e",
                "trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat",
                "-o",
            ])
            .arg(&log)
            .arg(bin())
            .arg("--store")
            .arg(&b.dir)
            .arg("import")
            .arg(vault.join("K00001L9.kvol")),
    );
    let c = calls(&log);
    let renamed = find(&c, 0, "link into the store", |c| {
        c.starts_with("link") && c.contains(".import-")
    });
    let commit = find(&c, renamed, "catalog commit", |c| {
        is_sync_of(c, "catalog.redb")
    });
    let synced = find(&c, renamed, "fsync of /volumes", |c| {
        is_sync_of(c, "/volumes")
    });
    assert!(
        synced < commit,
        "volumes/ synced (call {synced}) after the commit (call {commit})"
    );
}
