//! Real I/O errors under a running daemon, as a store meets them: the
//! filesystem under the store runs full (a size-limited tmpfs). Writers
//! fail with the error the disk gave, the half image never appears (and
//! its name is free for a retry at once), everything committed reads back,
//! and the store works again once space is freed.

mod common;

use std::path::Path;

use common::*;

/// `dd` of `src` to `dst` through the mount: (ok, stderr).
fn dd(src: &Path, dst: &Path) -> (bool, String) {
    let (ok, _, err) = sh(&format!(
        "dd if='{}' of='{}' bs=1M status=none",
        src.display(),
        dst.display()
    ));
    (ok, err)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// The store's data directory `sub` fills up under a tape pool or an LSU.
fn full_disk_case(sub: &str, dir: &str) {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_A");
    s.group_with_key("kg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "kg"]);
    let kept = s.path("kept");
    let big = s.path("big");
    random_file(&kept, 2);
    random_file(&big, 24);
    let m = s.mount("");
    std::fs::create_dir_all(m.p("pools/ENCR_A")).unwrap();
    cp(&kept, &m.p(&format!("{dir}/kept")));
    m.unmount();

    let disk = FullDisk::over(&s.dir.join(sub), 64 * 1024);
    let m = s.mount("");
    disk.fill();
    let (ok, err) = dd(&big, &m.p(&format!("{dir}/big")));
    assert!(!ok, "a write onto a full disk succeeded");
    assert!(err.contains("No space left on device"), "{sub}: {err}");
    assert_eq!(
        names(&m.p(dir)),
        ["kept"],
        "{sub}: the half image is not there"
    );
    assert_eq!(sha256(&m.p(&format!("{dir}/kept"))), sha256(&kept));
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(log.contains("big"), "the log names the image that failed");

    disk.free();
    let (ok, err) = dd(&big, &m.p(&format!("{dir}/big")));
    assert!(ok, "{sub}: the store works again once space is free: {err}");
    assert_eq!(sha256(&m.p(&format!("{dir}/big"))), sha256(&big));
    m.unmount();
    drop(disk);

    let m = s.mount("");
    assert_eq!(names(&m.p(dir)), ["big", "kept"]);
    assert_eq!(sha256(&m.p(&format!("{dir}/kept"))), sha256(&kept));
    assert_eq!(sha256(&m.p(&format!("{dir}/big"))), sha256(&big));
    m.unmount();
    let o = s.cmd(&["fsck"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_full_volume_disk_fails_the_tape_writer_with_enospc_and_loses_nothing() {
    full_disk_case("volumes", "pools/ENCR_A");
}

#[test]
fn a_full_container_disk_fails_the_lsu_writer_with_enospc_and_loses_nothing() {
    full_disk_case("lsu", "msdp/L");
}
