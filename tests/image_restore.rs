//! The catalog a restore needs: every tar image written through the mount
//! (ustar, GNU, PAX; tape pools and LSUs) gets its file list, and
//! `kmsfs image restore` brings one member back reading only its blocks.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

/// A tree with a name too long for plain ustar, a nested directory, a
/// symlink and an executable.
fn tree(root: &std::path::Path) {
    let deep = root.join("dir/sub");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("a.txt"), b"alpha\n").unwrap();
    let long = format!("{}.dat", "n".repeat(120));
    std::fs::write(root.join(&long), vec![5u8; 3000]).unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("dir/sub/a.txt", root.join("link")).unwrap();
}

/// `kmsfs ARGS…`, which must fail: what it printed, stdout and stderr.
fn failed(s: &TestStore, args: &[&str]) -> String {
    let o = s.cmd(args);
    assert!(!o.status.success(), "kmsfs {args:?} should fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn listed(s: &TestStore, image: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "files", image, "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn tar_images_written_through_the_mount_get_a_file_list_in_every_format() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_T");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "ENCR_T"]);
    let src = s.path("src");
    tree(&src);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_T")).unwrap();
    let long = format!("./{}.dat", "n".repeat(120));
    // GNU and PAX hold the 124-byte name; ustar cannot (below, a tree it can).
    for (format, dir) in [("gnu", "pools/ENCR_T"), ("pax", "msdp/L")] {
        let image = format!("{dir}/{format}.tar");
        let (ok, _, err) = sh(&format!(
            "tar --format={format} -cf '{}' -C '{}' .",
            m.p(&image).display(),
            src.display()
        ));
        assert!(ok, "{format}: {err}");
        let files = listed(&s, &image);
        let by = |p: &str| {
            files
                .iter()
                .find(|f| f["path"] == p)
                .unwrap_or_else(|| panic!("{format}: {p} not listed in {files:?}"))
                .clone()
        };
        assert_eq!(by(&long)["size"], 3000, "{format}");
        assert_eq!(by("./dir/sub/a.txt")["size"], 6);
        assert_eq!(by("./link")["link"], "dir/sub/a.txt");
        assert_eq!(by("./run.sh")["mode"].as_u64().unwrap() & 0o777, 0o750);
        let text = s.ok(&["image", "files", &image]);
        assert!(
            text.lines()
                .any(|l| l.contains("./dir/sub/a.txt") && l.contains("6 B")),
            "{text}"
        );
    }
    // A ustar archive of what ustar can hold is listed too.
    sh_ok(&format!(
        "tar --format=ustar -cf '{}' -C '{}' dir run.sh",
        m.p("pools/ENCR_T/plain.tar").display(),
        src.display()
    ));
    assert!(
        listed(&s, "pools/ENCR_T/plain.tar")
            .iter()
            .any(|f| f["path"] == "dir/sub/a.txt")
    );
    // An image that is not a tar archive has no list, and says why.
    std::fs::write(m.p("pools/ENCR_T/blob"), vec![3u8; 100_000]).unwrap();
    let err = s.fails(&["image", "files", "pools/ENCR_T/blob"]);
    assert!(err.contains("is not a tar archive"), "{err}");
    m.unmount();
}

/// The daemon's bytes read from files so far (`rchar` of /proc/PID/io).
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn restoring_one_member_of_a_one_gib_tar_image_reads_under_one_percent_of_it() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_R");
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    sh_ok(&format!("head -c 1G /dev/zero > '{}/big'", src.display()));
    std::fs::write(src.join("small.txt"), b"the one file we need\n").unwrap();
    std::fs::set_permissions(
        src.join("small.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    sh_ok(&format!(
        "touch -d 2024-02-03T04:05:06Z '{}/small.txt'",
        src.display()
    ));
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_R")).unwrap();
    sh_ok(&format!(
        "tar -cf '{}' -C '{}' big small.txt",
        m.p("pools/ENCR_R/full.tar").display(),
        src.display()
    ));
    sh_ok(&format!("rm '{}/big'", src.display()));
    let out = s.path("out");
    std::fs::create_dir(&out).unwrap();
    let pid = m.pid.unwrap();
    let before = rchar(pid);
    let restore: &[&str] = &[
        "image",
        "restore",
        "pools/ENCR_R/full.tar",
        "small.txt",
        "--to",
        out.to_str().unwrap(),
    ];
    let said = s.ok(restore);
    let read = rchar(pid) - before;
    eprintln!("restore of one 21-byte member of a 1 GiB image: the daemon read {read} bytes");
    assert!(
        read < (1u64 << 30) / 100,
        "read {read} bytes for one member"
    );
    assert!(said.contains("restored small.txt"), "{said}");
    assert!(
        said.contains("1 member (21 B) of the 1.0 GiB image"),
        "{said}"
    );
    let got = out.join("small.txt");
    assert_eq!(std::fs::read(&got).unwrap(), b"the one file we need\n");
    let meta = std::fs::metadata(&got).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), 1_706_933_106);
    // A file is never overwritten.
    let again = failed(&s, restore);
    assert!(
        again.contains("NOT RESTORED small.txt") && again.contains("exists"),
        "{again}"
    );
    // A member the image does not have is named.
    let none = s.fails(&[
        "image",
        "restore",
        "pools/ENCR_R/full.tar",
        "nope",
        "--to",
        "/tmp",
    ]);
    assert!(none.contains("has no member nope"), "{none}");
    m.unmount();
    // Unmounted, the CLI restores with the store opened itself, from a
    // relative directory.
    let out2 = s.path("out2");
    std::fs::create_dir(&out2).unwrap();
    let o = std::process::Command::new(bin())
        .current_dir(s.path(""))
        .args(["--store", s.dir.to_str().unwrap()])
        .args([
            "image",
            "restore",
            "pools/ENCR_R/full.tar",
            "small.txt",
            "--to",
            "out2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out2.join("small.txt")).unwrap(),
        b"the one file we need\n"
    );
}

/// A tar written by someone hostile: `..` in a name, and a symlink that a
/// later member tries to write through. Neither leaves the directory.
#[test]
fn a_hostile_archive_cannot_restore_outside_the_directory() {
    let s = TestStore::new(&[]);
    let outside = s.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let py = format!(
        r#"
import io, tarfile
with tarfile.open({tar:?}, "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, data=b"", kind=tarfile.REGTYPE, link=""):
        i = tarfile.TarInfo(name); i.type = kind; i.linkname = link; i.size = len(data)
        t.addfile(i, io.BytesIO(data) if data else None)
    add("../escape", b"out")
    add("link", kind=tarfile.SYMTYPE, link={outside:?})
    add("link/evil", b"through the link")
    add("fine.txt", b"ok")
    add("a\nrestored /etc/passwd", b"x")
    i = tarfile.TarInfo("far-future"); i.size = 1
    i.pax_headers = {{"mtime": "18446744073709551615"}}
    t.addfile(i, io.BytesIO(b"f"))
"#,
        tar = m.p("pools/P/evil.tar").display().to_string(),
        outside = outside.display().to_string()
    );
    let (ok, _, err) = sh(&format!("python3 -c '{}'", py.replace('\'', "'\\''")));
    assert!(ok, "{err}");
    let to = s.path("to");
    std::fs::create_dir(&to).unwrap();
    let said = failed(
        &s,
        &[
            "image",
            "restore",
            "pools/P/evil.tar",
            ".",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert!(said.contains("NOT RESTORED ../escape"), "{said}");
    assert!(said.contains("NOT RESTORED link/evil"), "{said}");
    assert!(said.contains("restored fine.txt"), "{said}");
    assert!(!s.path("escape").exists() && !to.parent().unwrap().join("escape").exists());
    assert!(
        !outside.join("evil").exists(),
        "nothing written through the link"
    );
    assert_eq!(std::fs::read(to.join("fine.txt")).unwrap(), b"ok");
    // A name with a newline cannot forge a line of the report.
    assert!(!said.lines().any(|l| l == "restored /etc/passwd"), "{said}");
    assert!(said.contains("restored a\\nrestored /etc/passwd"), "{said}");
    // A time past what the system can hold restores the file anyway.
    assert!(said.contains("restored far-future"), "{said}");
    assert_eq!(std::fs::read(to.join("far-future")).unwrap(), b"f");
    m.unmount();
}

/// A pool and an LSU with the same name: `msdp/NAME/…` and
/// `pools/NAME/…` are two different images.
#[test]
fn a_pool_and_an_lsu_of_the_same_name_are_not_confused() {
    let s = TestStore::new(&[]);
    s.ok(&["lsu", "create", "same"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/same")).unwrap();
    for (dir, text) in [
        ("pools/same", "from the pool"),
        ("msdp/same", "from the LSU"),
    ] {
        let src = s.path(&format!("src-{}", dir.replace('/', "-")));
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), text).unwrap();
        sh_ok(&format!(
            "tar -cf '{}' -C '{}' f",
            m.p(&format!("{dir}/a.tar")).display(),
            src.display()
        ));
    }
    for (dir, text) in [
        ("msdp/same", "from the LSU"),
        ("pools/same", "from the pool"),
    ] {
        let to = s.path(&format!("to-{}", dir.replace('/', "-")));
        std::fs::create_dir(&to).unwrap();
        s.ok(&[
            "image",
            "restore",
            &format!("{dir}/a.tar"),
            "f",
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read_to_string(to.join("f")).unwrap(),
            text,
            "{dir}"
        );
    }
    m.unmount();
}
