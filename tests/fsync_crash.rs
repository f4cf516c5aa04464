//! fsync(2) of an image being written, through the mount: what was
//! written survives a crash before close, and fsync is a commit like
//! close (a replaced image's volumes go back to the library, attributes
//! set after it are kept). Alone in its file: a child process started by
//! a test running beside it would inherit and, closing them at exec,
//! flush (commit) the images these tests hold open.

mod common;

use common::*;

/// One test at a time: another test's child processes would inherit and
/// flush the images a test holds open.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// fsync(2) of an image being written makes what was written survive a
/// crash before close, in a tape pool and in an LSU, as POSIX promises: a
/// backup program that fsyncs and is then killed with its daemon finds
/// the fsynced bytes after a restart.
#[test]
fn what_was_fsynced_survives_a_crash_before_close() {
    let _alone = alone();
    use std::io::Write;
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_A");
    s.group_with_key("kg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "kg"]);
    let src = s.path("src");
    random_file(&src, 3);
    let data = std::fs::read(&src).unwrap();
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_A")).unwrap();
    let mut open = Vec::new();
    for rel in ["pools/ENCR_A/synced", "msdp/L/synced"] {
        // No child process runs from here to the kill: see below.
        let mut f = std::fs::File::create(m.p(rel)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        open.push(f);
    }
    // Killed from here, not by a kill(1) child: a fork would close (and
    // so flush, and commit) the inherited descriptors first.
    let pid = m.pid.unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(wait_gone(pid));
    drop(open);
    m.kill();
    let m = s.mount("");
    for rel in ["pools/ENCR_A/synced", "msdp/L/synced"] {
        assert_eq!(
            std::fs::read(m.p(rel)).map(|d| sha_of(&d)).ok(),
            Some(sha256(&src)),
            "{rel}: the fsynced image after the crash"
        );
    }
    m.unmount();
}

fn sha_of(d: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("kmsfs-sha-{}", std::process::id()));
    std::fs::write(&p, d).unwrap();
    let s = sha256(&p);
    let _ = std::fs::remove_file(&p);
    s
}

/// A replacement (O_TRUNC) committed by fsync gives the old image's
/// volumes back to the library as close does.
#[test]
fn an_fsynced_replacement_frees_the_old_images_volumes() {
    let _alone = alone();
    use std::io::Write;
    let s = TestStore::new(&["--volume-capacity", "2M"]);
    let src = s.path("src");
    random_file(&src, 5);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    cp(&src, &m.p("pools/P/img"));
    let full = |s: &TestStore| -> usize {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["volume", "list", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|v| {
                v["state"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("full"))
            })
            .count()
    };
    let before = full(&s);
    assert!(before >= 2, "the first version spans volumes");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.p("pools/P/img"))
            .unwrap();
        f.write_all(b"a small new version").unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(
        std::fs::read(m.p("pools/P/img")).unwrap(),
        b"a small new version"
    );
    m.unmount();
    assert_eq!(full(&s), 0, "the old version's full volumes are recycled");
}

/// Attributes set after an fsync are committed at close.
#[test]
fn attributes_set_after_an_fsync_are_kept() {
    let _alone = alone();
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let s = TestStore::new(&[]);
    s.group_with_key("kg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "kg"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    for rel in ["pools/P/a", "msdp/L/a"] {
        let mut f = std::fs::File::create(m.p(rel)).unwrap();
        f.write_all(&[7u8; 100_000]).unwrap();
        f.sync_all().unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .unwrap();
        drop(f);
        let mode = std::fs::metadata(m.p(rel)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{rel}: mode after close");
    }
    m.unmount();
    let m = s.mount("");
    for rel in ["pools/P/a", "msdp/L/a"] {
        let mode = std::fs::metadata(m.p(rel)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{rel}: mode after a remount");
    }
    m.unmount();
}
