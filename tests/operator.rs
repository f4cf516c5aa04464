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
    for args in [&["imgae", "list"][..], &["completion", "DIR"][..]] {
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

/// `kmsfs status` on a mounted store: where, by which PID, which KMS
/// answered, and every pool and LSU with its images and sizes.
#[test]
fn status_says_where_the_store_is_mounted_and_what_each_pool_holds() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_St");
    s.ok(&["lsu", "create", "dd", "--kms", "--key-group", "ENCR_St"]);
    let before = s.ok(&["status"]);
    assert!(before.contains("mounted: no"), "{before}");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_St")).unwrap();
    std::fs::create_dir(m.p("pools/Clear")).unwrap();
    std::fs::write(m.p("pools/ENCR_St/one"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(m.p("msdp/dd/two"), vec![9u8; 1536]).unwrap();
    let st = s.ok(&["status"]);
    let want = format!(
        "mounted: on {} by kmsfs (PID {})",
        m.mp.display(),
        m.pid.unwrap()
    );
    assert!(st.contains(&want), "{st}");
    assert!(st.contains("kms: embedded keystore"), "{st}");
    let row = |name: &str| -> Vec<String> {
        let l = st
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {st}"));
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        row("ENCR_St")[..4],
        ["ENCR_St", "encrypted", "1", "3.0 MiB"]
    );
    assert_eq!(row("Clear")[..4], ["Clear", "clear", "0", "0 B"]);
    let lsu = row("msdp/dd");
    assert_eq!(lsu[1], "LSU, kms mode, key group ENCR_St", "{st}");
    assert_eq!(lsu[2..4], ["1", "1.5 KiB"], "{st}");
    // The header lines up with the rows.
    let head = st.lines().find(|l| l.starts_with("POOL")).unwrap();
    let first = st.lines().find(|l| l.starts_with("ENCR_St")).unwrap();
    assert_eq!(head.find("KIND"), first.find("encrypted"), "{st}");
    let exact = s.ok(&["status", "--bytes"]);
    assert!(exact.contains(&(3u64 << 20).to_string()), "{exact}");
    let j: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(j["mounted"]["pid"], m.pid.unwrap());
    assert_eq!(j["kms"]["answered"], true);
    let pools = j["pools"].as_array().unwrap();
    let encr = pools.iter().find(|p| p["name"] == "ENCR_St").unwrap();
    assert_eq!(encr["bytes"], 3u64 << 20);
    // image list --json: an LSU image shows no empty tape fields.
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "list", "--json"])).unwrap();
    let by_path = |p: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == p)
            .unwrap_or_else(|| panic!("{p} not in {list}"))
            .clone()
    };
    let (tape, lsu) = (by_path("pools/ENCR_St/one"), by_path("msdp/dd/two"));
    assert_eq!(tape["volumes"].as_array().unwrap().len(), 1, "{tape}");
    assert!(
        lsu.get("volumes").is_none() && lsu.get("fragments").is_none(),
        "{lsu}"
    );
    assert_eq!(
        (&tape["verifiable"], &lsu["verifiable"]),
        (&true.into(), &true.into())
    );
    m.unmount();
}

#[test]
fn tables_show_human_sizes_and_exact_bytes_on_request() {
    let s = TestStore::new(&["--volume-capacity", "8G"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    std::fs::write(m.p("pools/P/img"), vec![1u8; 5 << 20]).unwrap();
    m.unmount();
    let images = s.ok(&["image", "list"]);
    let line = images
        .lines()
        .find(|l| l.starts_with("pools/P/img"))
        .unwrap();
    assert!(line.contains("5.0 MiB"), "{images}");
    let volumes = s.ok(&["volume", "list"]);
    assert!(volumes.contains("8.0 GiB"), "{volumes}");
    let exact = s.ok(&["volume", "list", "--bytes"]);
    assert!(exact.contains(&(8u64 << 30).to_string()), "{exact}");
    let fsck = s.ok(&["fsck"]);
    assert!(
        fsck.contains("checked 1 image (5.0 MiB) and 1 volume"),
        "{fsck}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_binary() {
    let bash = kmsfs(&["completions", "bash"]);
    let text_bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.status.success(), "{}", text(&bash));
    assert!(text_bash.contains("_kmsfs()"), "{text_bash}");
    for sub in ["listkeys", "rotate-kek", "status"] {
        assert!(text_bash.contains(sub), "{sub} missing");
    }
    for shell in ["zsh", "fish"] {
        let o = kmsfs(&["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
    let man = kmsfs(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH kmsfs 1"), "{page}");
    assert!(page.contains("status"), "{page}");
    let bad = kmsfs(&["completion", "bash"]);
    assert!(
        text(&bad).contains("completions"),
        "a suggestion: {}",
        text(&bad)
    );
}

#[test]
fn install_puts_the_binary_the_mount_helper_the_man_page_and_completions_in_place() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("usr");
    let sbin = t.path().join("sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("bash")
        .arg(format!("{root}/scripts/install.sh"))
        .env("PREFIX", &prefix)
        .env("SBINDIR", &sbin)
        .env("KMSFS_SRC_BIN", bin())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "bin/kmsfs",
        "share/man/man1/kmsfs.1",
        "share/man/man1/kmsfs-mount.1",
        "share/bash-completion/completions/kmsfs",
        "share/zsh/site-functions/_kmsfs",
        "share/fish/vendor_completions.d/kmsfs.fish",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed: {}", text(&o));
    }
    assert!(sbin.join("mount.kmsfs").is_file());
    // The installed pages are roff man(1) reads, one per command.
    let page = |f: &str| std::fs::read_to_string(prefix.join("share/man/man1").join(f)).unwrap();
    assert!(page("kmsfs.1").contains(".TH kmsfs 1"));
    assert!(page("kmsfs-mount.1").contains(".TH kmsfs-mount 1"));
    let o = Command::new("bash")
        .arg(format!("{root}/scripts/install.sh"))
        .arg("--uninstall")
        .env("PREFIX", &prefix)
        .env("SBINDIR", &sbin)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!prefix.join("share/man/man1/kmsfs.1").exists());
    assert!(!prefix.join("bin/kmsfs").exists());
}

/// `kms import --preview` says what it would create; an import makes no
/// key group it puts no key in (an empty exported group, or a second
/// import of the same keys).
#[test]
fn a_key_import_creates_no_empty_groups_and_its_preview_says_would() {
    let a = TestStore::new(&[]);
    a.group_with_key("ENCR_X");
    a.ok(&["kms", "createkg", "ENCR_Empty"]);
    let pp = a.path("pp");
    std::fs::write(&pp, "export pass").unwrap();
    let file = a.path("keys.kex");
    let (file, pp) = (file.to_str().unwrap(), pp.to_str().unwrap());
    a.ok(&["kms", "export", "--out", file, "--pass-phrase-file", pp]);
    let b = TestStore::new(&[]);
    let import = |extra: &[&str]| {
        let mut args = vec!["kms", "import", "--in", file, "--pass-phrase-file", pp];
        args.extend_from_slice(extra);
        b.ok(&args)
    };
    let preview = import(&["--preview"]);
    assert!(preview.contains("would import 1 key,"), "{preview}");
    assert!(
        preview.contains("would create key group ENCR_X"),
        "{preview}"
    );
    assert!(!preview.contains("ENCR_Empty"), "{preview}");
    let done = import(&[]);
    assert!(done.contains("imported 1 key,"), "{done}");
    assert!(done.contains("created key group ENCR_X"), "{done}");
    let again = import(&[]);
    assert!(!again.contains("created key group"), "{again}");
    let groups = b.ok(&["kms", "listkgs"]);
    assert!(groups.contains("ENCR_X"), "{groups}");
    assert!(!groups.contains("ENCR_X-imported"), "{groups}");
    assert!(!groups.contains("ENCR_Empty"), "{groups}");
}

/// A daemon killed under its mount: `status` does not call the dead mount
/// healthy or show the dead PID as its server; it says what to do.
#[test]
fn status_tells_a_dead_mount_from_a_live_one() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    let pid = m.pid.unwrap();
    run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
    assert!(wait_gone(pid));
    assert!(is_mounted(&m.mp), "the dead FUSE mount stays in the table");
    let st = s.ok(&["status"]);
    assert!(!st.contains(&format!("by kmsfs (PID {pid})")), "{st}");
    assert!(st.contains("its daemon is gone"), "{st}");
    assert!(st.contains(&format!("umount {}", m.mp.display())), "{st}");
    let j: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(j["mounted"]["alive"], false, "{j}");
    m.unmount();
}
