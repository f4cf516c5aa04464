//! What an operator meets on day one, asserted on the words: a directory
//! kmsfs did not make is never advised for removal, a mistyped subcommand
//! is not taken for a mount, a file is not overwritten and a non-empty
//! directory not hidden without being asked.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn kmsfs(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// `kmsfs mount STORE MP ARGS…` that is expected to fail; if it mounted
/// after all, the mount is handed to a guard (unmounted even when the
/// test's assertions fail).
fn refused_mount(store: &Path, mp: &Path, args: &[&str]) -> (Output, Option<Mounted>) {
    let o = Command::new(bin())
        .arg("mount")
        .arg(store)
        .arg(mp)
        .args(args)
        .output()
        .unwrap();
    let guard = is_mounted(mp).then(|| adopt(store, mp));
    (o, guard)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_directory_kmsfs_did_not_make_is_never_advised_for_removal() {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0").unwrap();
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let (mounted, _guard) = refused_mount(&etc, &mp, &[]);
    for o in [
        kmsfs(&["--store", etc.to_str().unwrap(), "status"]),
        mounted,
    ] {
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(out.contains("not a kmsfs store"), "{out}");
        assert!(!out.contains("remove"), "never advise removing it: {out}");
    }
    assert!(etc.join("passwd").exists());
    // A store whose init was interrupted (its marker, no config) is named so.
    let half = t.path().join("half");
    let s = TestStore::new(&[]);
    copy_dir(&s.dir, &half);
    std::fs::remove_file(half.join("kmsfs.conf")).unwrap();
    let o = kmsfs(&["--store", half.to_str().unwrap(), "status"]);
    assert!(text(&o).contains("init was interrupted"), "{}", text(&o));
    // A config that exists but cannot be read is an I/O error naming it,
    // never "remove it and run init again".
    std::fs::create_dir(half.join("kmsfs.conf")).unwrap();
    let o = kmsfs(&["--store", half.to_str().unwrap(), "status"]);
    let out = text(&o);
    assert!(
        out.contains("kmsfs.conf") && !out.contains("remove"),
        "{out}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    sh_ok(&format!("cp -a '{}' '{}'", from.display(), to.display()));
}

#[test]
fn a_mistyped_subcommand_is_not_taken_for_a_mount() {
    let t = tempfile::tempdir().unwrap();
    for args in [&["imgae", "list"][..], &["completions", "bash"][..]] {
        let o = Command::new(bin())
            .args(args)
            .current_dir(t.path())
            .output()
            .unwrap();
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(out.contains("unrecognized subcommand"), "{args:?}: {out}");
        assert!(!out.contains("mount point"), "{args:?}: {out}");
    }
    let o = kmsfs(&["imgae", "list"]);
    assert!(text(&o).contains("image"), "a suggestion: {}", text(&o));
    // The mount.fuse3 form still mounts a store on a directory.
    let s = TestStore::new(&[]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    run_ok(Command::new(bin()).args([s.dir.to_str().unwrap(), mp.to_str().unwrap(), "-o", "rw"]));
    adopt(&s.dir, &mp).unmount();
}

#[test]
fn export_never_overwrites_a_file_without_force() {
    let s = TestStore::new(&[]);
    s.group_with_key("G");
    let pp = s.path("pp");
    std::fs::write(&pp, "export pass").unwrap();
    let out = s.path("keys.kex");
    std::fs::write(&out, "precious").unwrap();
    let args = [
        "kms",
        "export",
        "--out",
        out.to_str().unwrap(),
        "--pass-phrase-file",
        pp.to_str().unwrap(),
    ];
    let o = s.cmd(&args);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("keys.kex") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let mut forced = args.to_vec();
    forced.push("--force");
    s.ok(&forced);
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");
}

#[test]
fn mounting_over_a_non_empty_directory_needs_nonempty() {
    let s = TestStore::new(&[]);
    let mp = s.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    std::fs::write(mp.join("hidden.txt"), "would be hidden").unwrap();
    let (o, _guard) = refused_mount(&s.dir, &mp, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not empty") && text(&o).contains("nonempty"),
        "{}",
        text(&o)
    );
    assert!(!is_mounted(&mp));
    run_ok(Command::new(bin()).args([
        "mount",
        s.dir.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        "nonempty",
    ]));
    adopt(&s.dir, &mp).unmount();
    assert!(mp.join("hidden.txt").exists());
}

/// Mounting a store that is already mounted says at once where it is
/// mounted and by which process.
#[test]
fn mounting_a_mounted_store_says_where_and_by_whom_at_once() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    let pid = std::fs::read_to_string(s.dir.join("kmsfs.pid")).unwrap();
    let other = s.path("mnt2");
    std::fs::create_dir(&other).unwrap();
    let t = std::time::Instant::now();
    let (o, _guard) = refused_mount(&s.dir, &other, &[]);
    let took = t.elapsed();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains(m.mp.to_str().unwrap()),
        "names the mount point: {out}"
    );
    assert!(out.contains(pid.trim()), "names the PID {pid}: {out}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "at once, not after {took:?}"
    );
    assert!(!is_mounted(&other));
    drop(m);
}

/// Refusals say what to do next: the step a key state must go through
/// first, and how to free a root key an LSU uses.
#[test]
fn key_refusals_say_what_to_do_next() {
    let s = TestStore::new(&[]);
    s.ok(&["kms", "createkg", "G"]);
    s.ok(&[
        "kms",
        "createkey",
        "--key-group",
        "G",
        "--name",
        "a",
        "--activate",
    ]);
    s.ok(&["kms", "createkey", "--key-group", "G", "--name", "p"]);
    let modify = |name: &str, state: &str| {
        text(&s.cmd(&[
            "kms",
            "modifykey",
            "--key-group",
            "G",
            "--name",
            name,
            "--state",
            state,
        ]))
    };
    let out = modify("a", "deprecated");
    assert!(out.contains("make it inactive first"), "{out}");
    let out = modify("p", "inactive");
    assert!(
        out.contains("a prelive key can only become active"),
        "{out}"
    );
    s.ok(&["lsu", "create", "demo", "--kms", "--key-group", "G"]);
    modify("a", "inactive");
    let out = modify("a", "deprecated");
    assert!(out.contains("LSU demo"), "{out}");
    assert!(
        out.contains("kmsfs lsu rewrap demo") && out.contains("--force"),
        "{out}"
    );
}
