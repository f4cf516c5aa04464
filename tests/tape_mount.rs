//! The tape path through a real mount, driven with cp, tar, rsync, dd,
//! sha256sum and python's os module for exact errno values.

mod common;

use std::time::Duration;

use common::*;

fn finance() -> (TestStore, String) {
    let s = TestStore::new(&["--volume-capacity", "64M", "--drive-wait", "2"]);
    let tag = s.group_with_key("ENCR_Finance");
    (s, tag)
}

/// Runs python code; returns stdout.
fn py(code: &str) -> String {
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn cp_one_gib_in_and_out_byte_identical_and_encrypted_on_disk() {
    let (s, tag) = finance();
    let src = s.path("big.bin");
    random_file(&src, 1024);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    sh_ok(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/ENCR_Finance/big.bin").display()
    ));
    assert_eq!(sha256(&m.p("pools/ENCR_Finance/big.bin")), sha256(&src));
    let back = s.path("back.bin");
    sh_ok(&format!(
        "cp '{}' '{}'",
        m.p("pools/ENCR_Finance/big.bin").display(),
        back.display()
    ));
    assert_eq!(sha256(&back), sha256(&src));
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "list", "--json"])).unwrap();
    let img = &list[0];
    assert_eq!(img["path"], "pools/ENCR_Finance/big.bin");
    assert_eq!(img["size"], 1u64 << 30);
    assert_eq!(img["key_tag"], tag.as_str());
    assert!(
        img["volumes"].as_array().unwrap().len() >= 16,
        "1 GiB spans 64 MiB volumes"
    );
    let vols: serde_json::Value =
        serde_json::from_str(&s.ok(&["volume", "list", "--json"])).unwrap();
    assert!(
        vols.as_array()
            .unwrap()
            .iter()
            .all(|v| v["file"].as_str().unwrap().ends_with(".kvol"))
    );
    m.unmount();
}

#[test]
fn tar_tree_round_trip_and_plaintext_only_in_clear_pool() {
    let (s, tag) = finance();
    let tree = s.path("tree");
    sh_ok(&format!(
        "mkdir -p '{0}/a/b' && cp -r /usr/share/doc/coreutils* /usr/share/doc/git '{0}/a/' 2>/dev/null; echo MARKER-7f3c9d-PLAINTEXT > '{0}/a/b/marker.txt'",
        tree.display()
    ));
    let m = s.mount("");
    for p in ["ENCR_Finance", "Scratch"] {
        std::fs::create_dir(m.p(&format!("pools/{p}"))).unwrap();
        sh_ok(&format!(
            "tar -cf '{}' -C '{}' .",
            m.p(&format!("pools/{p}/tree.tar")).display(),
            tree.display()
        ));
        let out = s.path(&format!("out-{p}"));
        std::fs::create_dir(&out).unwrap();
        sh_ok(&format!(
            "tar -xf '{}' -C '{}'",
            m.p(&format!("pools/{p}/tree.tar")).display(),
            out.display()
        ));
        sh_ok(&format!(
            "diff -r --no-dereference '{}' '{}'",
            tree.display(),
            out.display()
        ));
    }
    m.unmount();
    let vols = s.dir.join("volumes");
    let encr: Vec<_> = std::fs::read_dir(&vols)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut clear_has = false;
    let mut encr_has = false;
    let tag_bytes = hex::decode(&tag).unwrap();
    let mut tag_on_tape = false;
    for v in encr {
        let b = std::fs::read(&v).unwrap();
        let pool_is_encr = b.windows(12).any(|w| w == b"ENCR_Finance");
        let marker = b"MARKER-7f3c9d-PLAINTEXT";
        let has = b.windows(marker.len()).any(|w| w == marker);
        if pool_is_encr {
            encr_has |= has;
            tag_on_tape |= b.windows(16).any(|w| w == tag_bytes.as_slice());
        } else {
            clear_has |= has;
        }
    }
    assert!(clear_has, "the clear pool holds the plaintext");
    assert!(!encr_has, "the ENCR_ pool holds no plaintext");
    assert!(tag_on_tape, "the key tag (KAD) is in the fragment headers");
    assert!(!tree_contains(
        &s.dir.join("catalog"),
        b"MARKER-7f3c9d-PLAINTEXT"
    ));
}

#[test]
fn rsync_a_tree_in() {
    let (s, _) = finance();
    let tree = s.path("tree");
    sh_ok(&format!(
        "mkdir -p '{0}/x/y' && echo one > '{0}/x/1' && head -c 300000 /dev/urandom > '{0}/x/y/2' && chmod 640 '{0}/x/1'",
        tree.display()
    ));
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    let dst = m.p("pools/ENCR_Finance/r");
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        tree.display(),
        dst.display()
    ));
    sh_ok(&format!("diff -r '{}' '{}'", tree.display(), dst.display()));
    let mode = sh_ok(&format!("stat -c %a '{}'", dst.join("x/1").display()));
    assert_eq!(mode.trim(), "640", "rsync -a kept the mode");
    let again = sh_ok(&format!(
        "rsync -a --itemize-changes '{}/' '{}/'",
        tree.display(),
        dst.display()
    ));
    assert!(
        again.trim().is_empty(),
        "a second rsync finds nothing to do: {again}"
    );
}

#[test]
fn deprecated_key_gives_enokey_and_reactivation_brings_reads_back() {
    let (s, tag) = finance();
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    std::fs::write(m.p("pools/ENCR_Finance/a"), b"payroll").unwrap();
    s.set_state("ENCR_Finance", "k1", "inactive");
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_Finance/a")).unwrap(),
        b"payroll",
        "inactive decrypts"
    );
    s.set_state("ENCR_Finance", "k1", "deprecated");
    let (ok, _, err) = sh(&format!("cat '{}'", m.p("pools/ENCR_Finance/a").display()));
    assert!(!ok && err.contains("Required key not available"), "{err}");
    let (ok, _, err) = sh(&format!(
        "echo x > '{}'",
        m.p("pools/ENCR_Finance/b").display()
    ));
    assert!(
        !ok && err.contains("Required key not available"),
        "write needs an active key: {err}"
    );
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(log.contains(&tag), "the log line names the tag");
    s.set_state("ENCR_Finance", "k1", "inactive");
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_Finance/a")).unwrap(),
        b"payroll"
    );
    let e = s.fails(&["kms", "deletekey", "--kg", "ENCR_Finance", "--name", "k1"]);
    assert!(e.contains("only prelive and terminated"), "{e}");
    s.set_state("ENCR_Finance", "k1", "deprecated");
    s.set_state("ENCR_Finance", "k1", "terminated");
    let e = s.fails(&["kms", "deletekey", "--kg", "ENCR_Finance", "--name", "k1"]);
    assert!(
        e.contains("in use by image ENCR_Finance/a"),
        "the refusal names the image: {e}"
    );
}

#[test]
fn flipped_byte_fails_exactly_the_affected_read_with_eio() {
    let (s, _) = finance();
    let src = s.path("f");
    random_file(&src, 4);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    sh_ok(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/ENCR_Finance/f").display()
    ));
    m.unmount();
    let vol = std::fs::read_dir(s.dir.join("volumes"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let mut b = std::fs::read(&vol).unwrap();
    // Block 5 (of 256 KiB blocks) starts 5 strides after the data; flip a byte in its middle.
    let first_block = b.windows(8).position(|w| w == b"KMSFSFRG").unwrap();
    let hdr_len =
        u32::from_le_bytes(b[first_block + 12..first_block + 16].try_into().unwrap()) as usize;
    let at = first_block + hdr_len + 5 * (8 + 262144 + 16) + 100_000;
    b[at] ^= 0x01;
    std::fs::write(&vol, &b).unwrap();
    let m = s.mount("");
    let f = m.p("pools/ENCR_Finance/f");
    let code = format!(
        "import os\nf=os.open('{}',os.O_RDONLY)\nok=[]\nfor blk in range(16):\n  try:\n    os.pread(f,4096,blk*262144+1000); ok.append('ok')\n  except OSError as e: ok.append(str(e.errno))\nprint(','.join(ok))",
        f.display()
    );
    let res = py(&code);
    let expected: Vec<String> = (0..16)
        .map(|i| {
            if i == 5 {
                libc::EIO.to_string()
            } else {
                "ok".into()
            }
        })
        .collect();
    assert_eq!(res.trim(), expected.join(","));
    let (ok, _, err) = sh(&format!("sha256sum '{}'", f.display()));
    assert!(!ok && err.contains("Input/output error"), "{err}");
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(
        log.contains("integrity check failed")
            && log.contains("block 5")
            && log.contains("K00001L9"),
        "log names volume and block"
    );
}

#[test]
fn sigkill_mid_write_loses_no_closed_image_and_shows_no_half_image() {
    let (s, _) = finance();
    let src = s.path("f");
    random_file(&src, 8);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    for i in 0..3 {
        sh_ok(&format!(
            "cp '{}' '{}'",
            src.display(),
            m.p(&format!("pools/ENCR_Finance/done{i}")).display()
        ));
    }
    let target = m.p("pools/ENCR_Finance/half");
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' '{}' - > '{}'",
            src.display(),
            src.display(),
            target.display()
        ))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    m.kill();
    let _ = writer.kill();
    let out = writer.wait_with_output().unwrap();
    assert!(!out.status.success(), "a writer cut off by the crash fails");
    expect_cut_off(out);
    let m = s.mount("");
    for i in 0..3 {
        assert_eq!(
            sha256(&m.p(&format!("pools/ENCR_Finance/done{i}"))),
            sha256(&src)
        );
    }
    assert!(
        !m.p("pools/ENCR_Finance/half").exists(),
        "the dead writer's image is not shown"
    );
    sh_ok(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/ENCR_Finance/after").display()
    ));
    assert_eq!(sha256(&m.p("pools/ENCR_Finance/after")), sha256(&src));
    assert_eq!(sha256(&m.p("pools/ENCR_Finance/done0")), sha256(&src));
}

#[test]
fn drive_registers_and_unregisters_its_key_and_holds_none_when_idle() {
    let (s, tag) = finance();
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    let status =
        |i: usize| std::fs::read_to_string(m.p(&format!("drives/drive{i}/status"))).unwrap();
    for i in 0..2 {
        let st = status(i);
        assert!(
            st.contains("state: idle")
                && st.contains("encryption: off")
                && st.contains("key_tag: -"),
            "{st}"
        );
    }
    let code = format!(
        "import os,time\nf=os.open('{}',os.O_WRONLY|os.O_CREAT,0o644)\nos.write(f,b'x'*1000)\nprint(open('{}').read(), flush=True)\nos.close(f)",
        m.p("pools/ENCR_Finance/w").display(),
        m.p("drives/drive0/status").display()
    );
    let during = py(&code);
    assert!(
        during.contains("state: writing") && during.contains("encryption: on"),
        "{during}"
    );
    assert!(
        during.contains(&format!("key_tag: {tag}")) && during.contains("pool: ENCR_Finance"),
        "{during}"
    );
    assert!(during.contains("volume: K0000"), "{during}");
    std::thread::sleep(Duration::from_millis(200));
    let after = status(0);
    assert!(
        after.contains("encryption: off") && after.contains("key_tag: -"),
        "key unregistered after the image: {after}"
    );
    let list = s.ok(&["image", "list", "--json"]);
    assert!(list.contains(&tag), "tag recorded in the catalog");
}

#[test]
fn writers_queue_for_drives_then_get_ebusy() {
    let s = TestStore::new(&["--drive-wait", "1"]);
    let m = s.mount("drives=1");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let code = format!(
        "import os,errno\nf=os.open('{0}/a',os.O_WRONLY|os.O_CREAT,0o644)\ntry:\n  os.open('{0}/b',os.O_WRONLY|os.O_CREAT,0o644); print('opened')\nexcept OSError as e: print(errno.errorcode[e.errno])\nos.close(f)\ng=os.open('{0}/c',os.O_WRONLY|os.O_CREAT,0o644); os.close(g); print('after')",
        m.p("pools/P").display()
    );
    assert_eq!(
        py(&code).split_whitespace().collect::<Vec<_>>(),
        ["EBUSY", "after"]
    );
}

#[test]
fn images_are_written_once_sequentially() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let f = m.p("pools/P/x");
    let code = format!(
        "import os,errno\nf=os.open('{0}',os.O_WRONLY|os.O_CREAT,0o644)\nos.write(f,b'hello')\ntry:\n  os.pwrite(f,b'J',0); print('rewrote')\nexcept OSError as e: print(errno.errorcode[e.errno])\nos.pwrite(f,b'!',8)\nos.close(f)\nprint(open('{0}','rb').read())\ntry:\n  os.open('{0}',os.O_WRONLY); print('opened')\nexcept OSError as e: print(errno.errorcode[e.errno])",
        f.display()
    );
    let out = py(&code);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ESPIPE", "b'hello\\x00\\x00\\x00!'", "EPERM"]
    );
    std::fs::write(&f, b"version two").unwrap();
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"version two",
        "O_TRUNC writes a new version"
    );
    sh_ok(&format!(
        "dd if=/dev/zero of='{}' bs=1M count=3 status=none",
        f.display()
    ));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 3 << 20);
}

#[test]
fn namespace_operations_behave_as_users_expect() {
    let (s, _) = finance();
    let m = s.mount("");
    let e = std::fs::create_dir(m.p("pools/ENCR_NoKey")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOKEY),
        "ENCR_ pool without an active key"
    );
    for p in [
        "pools/ENCR_Finance",
        "pools/Scratch",
        "pools/ENCR_Finance/web01",
        "pools/ENCR_Finance/web01/daily",
    ] {
        std::fs::create_dir(m.p(p)).unwrap();
    }
    let f = m.p("pools/ENCR_Finance/web01/daily/img");
    std::fs::write(&f, b"data").unwrap();
    sh_ok(&format!(
        "chmod 600 '{0}' && touch -d '2020-01-02 03:04:05' '{0}'",
        f.display()
    ));
    let st = sh_ok(&format!("stat -c '%a %s %Y' '{}'", f.display()));
    assert_eq!(
        st.trim(),
        format!(
            "600 4 {}",
            sh_ok("date -d '2020-01-02 03:04:05' +%s").trim()
        )
    );
    std::fs::rename(&f, m.p("pools/ENCR_Finance/img2")).unwrap();
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_Finance/img2")).unwrap(),
        b"data"
    );
    let e = std::fs::rename(m.p("pools/ENCR_Finance/img2"), m.p("pools/Scratch/img2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    sh_ok(&format!(
        "mv '{}' '{}'",
        m.p("pools/ENCR_Finance/img2").display(),
        m.p("pools/Scratch/img2").display()
    ));
    assert_eq!(std::fs::read(m.p("pools/Scratch/img2")).unwrap(), b"data");
    assert!(!m.p("pools/ENCR_Finance/img2").exists());
    let ls = sh_ok(&format!(
        "ls '{}'",
        m.p("pools/ENCR_Finance/web01").display()
    ));
    assert_eq!(ls.trim(), "daily");
    let e = std::fs::remove_dir(m.p("pools/Scratch")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_file(m.p("pools/Scratch/img2")).unwrap();
    std::fs::remove_dir(m.p("pools/Scratch")).unwrap();
    let ls = sh_ok(&format!("ls '{}'", m.p("pools").display()));
    assert_eq!(ls.split_whitespace().collect::<Vec<_>>(), ["ENCR_Finance"]);
    let ls = sh_ok(&format!("ls '{}'", m.p("drives").display()));
    assert_eq!(
        ls.split_whitespace().collect::<Vec<_>>(),
        ["drive0", "drive1"]
    );
    let e = std::fs::write(m.p("drives/drive0/status"), b"x").unwrap_err();
    assert!(
        matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)),
        "{e}"
    );
    m.unmount();
    let m = s.mount("");
    assert_eq!(
        std::fs::read_dir(m.p("pools/ENCR_Finance/web01/daily"))
            .unwrap()
            .count(),
        0,
        "namespace survives a remount"
    );
}

#[test]
fn removing_images_recycles_their_volumes() {
    let s = TestStore::new(&["--volume-capacity", "2M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let src = s.path("f");
    random_file(&src, 5);
    sh_ok(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/P/a").display()
    ));
    let used = |s: &TestStore| {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&["volume", "list", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|v| v["state"] != "scratch")
            .count()
    };
    assert!(used(&s) >= 3, "spans volumes");
    std::fs::remove_file(m.p("pools/P/a")).unwrap();
    assert_eq!(used(&s), 0, "all volumes back to scratch");
    sh_ok(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/P/b").display()
    ));
    assert_eq!(sha256(&m.p("pools/P/b")), sha256(&src));
}

#[test]
fn library_full_gives_enospc() {
    let s = TestStore::new(&["--volume-capacity", "1M", "--max-volumes", "2"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let (ok, _, err) = sh(&format!(
        "head -c 5000000 /dev/urandom > '{}'",
        m.p("pools/P/big").display()
    ));
    assert!(!ok && err.contains("No space left on device"), "{err}");
    assert!(
        !m.p("pools/P/big").exists(),
        "the failed image is not shown"
    );
    std::fs::write(m.p("pools/P/small"), b"fits").unwrap();
    assert_eq!(std::fs::read(m.p("pools/P/small")).unwrap(), b"fits");
}

#[test]
fn close_returning_means_committed_even_if_the_daemon_dies_right_after() {
    let (s, _) = finance();
    let src = s.path("f");
    random_file(&src, 3);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    sh_ok(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/ENCR_Finance/c").display()
    ));
    m.kill();
    let m = s.mount("");
    assert_eq!(sha256(&m.p("pools/ENCR_Finance/c")), sha256(&src));
}

#[test]
fn writes_after_a_duplicate_descriptor_closes_continue_the_image() {
    let s = TestStore::new(&["--volume-capacity", "2M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    let f = m.p("pools/P/d");
    let code = format!(
        "import os\nf=os.open('{0}',os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644)\nos.write(f,b'a'*700000)\ng=os.dup(f); os.close(g)\nprint(os.path.getsize('{0}'), flush=True)\nos.write(f,b'b'*1500000)\nos.close(f)\nd=open('{0}','rb').read()\nprint(len(d), d[:700000]==b'a'*700000, d[700000:]==b'b'*1500000)",
        f.display()
    );
    let out = py(&code);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["700000", "2200000 True True"]
    );
    m.unmount();
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["volume", "list", "--json"])).unwrap();
    let counts: u64 = v
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["images"].as_u64().unwrap())
        .sum();
    let img: serde_json::Value = serde_json::from_str(&s.ok(&["image", "list", "--json"])).unwrap();
    assert_eq!(
        counts as usize,
        img[0]["volumes"].as_array().unwrap().len(),
        "each volume counts the image once"
    );
    let m = s.mount("");
    assert_eq!(
        std::fs::metadata(m.p("pools/P/d")).unwrap().len(),
        2_200_000
    );
    std::fs::remove_file(m.p("pools/P/d")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["volume", "list", "--json"])).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "scratch"),
        "all volumes recycled: {v}"
    );
}

/// The catalog keeps no unkeyed hash of an image's plaintext (which would
/// tell anyone holding it whether a known file was backed up); a restore
/// is verified against a digest keyed by the store: `image verify`.
#[test]
fn a_restore_is_verified_by_a_keyed_digest_and_no_plain_hash_is_kept() {
    let (s, _tag) = finance();
    let src = s.path("payroll.bin");
    random_file(&src, 3);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    cp(&src, &m.p("pools/ENCR_Finance/payroll.bin"));
    s.ok(&["lsu", "create", "L"]);
    cp(&src, &m.p("msdp/L/payroll.bin"));
    let plain = blake3::hash(&std::fs::read(&src).unwrap())
        .to_hex()
        .to_string();
    let list = s.ok(&["image", "list", "--json"]);
    assert!(!list.contains(&plain), "an unkeyed BLAKE3 in: {list}");
    m.unmount();
    assert!(
        !common::tree_contains(&s.dir, &hex::decode(&plain).unwrap()),
        "an unkeyed BLAKE3 of the plaintext in the store"
    );
    let restored = s.path("restored.bin");
    let m = s.mount("");
    cp(&m.p("pools/ENCR_Finance/payroll.bin"), &restored);
    for image in ["pools/ENCR_Finance/payroll.bin", "msdp/L/payroll.bin"] {
        let out = s.ok(&[
            "image",
            "verify",
            image,
            "--file",
            restored.to_str().unwrap(),
        ]);
        assert!(out.contains("matches"), "{out}");
    }
    flip_byte(&restored, 1000);
    let o = s.cmd(&[
        "image",
        "verify",
        "pools/ENCR_Finance/payroll.bin",
        "--file",
        restored.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("DIFFERS"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
