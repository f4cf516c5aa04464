//! MSDP LSUs through a real mount: dedup, envelope encryption and its key
//! operations, legacy conversion, reclaim, and crashes, used with cp, tar,
//! cat and sha256sum as a backup administrator would.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{TestStore, cp, flip_byte, holds_any, random_file, read_fails, sh, sh_ok, sha256};
use kmsfs::kms::Unlock;
use kmsfs::store::Store;

/// Bytes of container files of the store's LSUs.
fn lsu_bytes(s: &TestStore) -> u64 {
    sh_ok(&format!("du -sb '{}'", s.dir.join("lsu").display()))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `cp SRC DST` with the real cp; must succeed.
fn kms_lsu(s: &TestStore, name: &str) -> String {
    let tag = s.group_with_key("KG");
    s.ok(&["lsu", "create", name, "--kms", "--key-group", "KG"]);
    tag
}

/// `f` with 100 random bytes inserted at 1/4, 1/2 and 3/4.
fn shifted(f: &Path, out: &Path, mib: u64) {
    let q = mib / 4 * 1024 * 1024;
    let f = f.display();
    sh_ok(&format!(
        "(head -c {q} {f}; head -c 100 /dev/urandom; tail -c +{a} {f} | head -c {q}; head -c 100 /dev/urandom; \
         tail -c +{b} {f} | head -c {q}; head -c 100 /dev/urandom; tail -c +{c} {f}) > '{}'",
        out.display(),
        a = q + 1,
        b = 2 * q + 1,
        c = 3 * q + 1
    ));
}

#[test]
fn copies_dedup_shifted_versions_dedup_and_all_read_back_after_remount() {
    let s = TestStore::new(&[]);
    kms_lsu(&s, "lsu1");
    let f = s.path("f");
    random_file(&f, 256);
    let want = sha256(&f);
    let m = s.mount("");
    let empty = lsu_bytes(&s);
    cp(&f, &m.p("msdp/lsu1/a"));
    let one = lsu_bytes(&s) - empty;
    assert!(one >= 256 << 20, "first copy stored {one} bytes");
    cp(&f, &m.p("msdp/lsu1/b"));
    let two = lsu_bytes(&s) - empty;
    eprintln!("256 MiB once: {one} bytes stored; twice: {two}");
    assert!(two - one < 1 << 20, "second copy added {} bytes", two - one);
    let f2 = s.path("f2");
    shifted(&f, &f2, 256);
    sh_ok(&format!(
        "mkdir '{0}' && cp '{1}' '{0}/c'",
        m.p("msdp/lsu1/v2").display(),
        f2.display()
    ));
    let three = lsu_bytes(&s) - empty;
    eprintln!("shifted version added {} bytes", three - two);
    assert!(
        three - two < 6 << 20,
        "shifted version added {} bytes",
        three - two
    );
    // tar into the LSU, dd out of it.
    sh_ok(&format!(
        "cd '{}' && tar -cf '{}' f f2",
        s.tmp.path().display(),
        m.p("msdp/lsu1/v2/both.tar").display()
    ));
    let ls = sh_ok(&format!("ls -l '{}'", m.p("msdp/lsu1").display()));
    assert!(
        ls.contains(" a\n") && ls.contains(" b\n") && ls.contains(" v2\n"),
        "{ls}"
    );
    m.unmount();
    let m = s.mount("");
    assert_eq!(sha256(&m.p("msdp/lsu1/a")), want);
    assert_eq!(sha256(&m.p("msdp/lsu1/b")), want);
    assert_eq!(sha256(&m.p("msdp/lsu1/v2/c")), sha256(&f2));
    let dd = sh_ok(&format!(
        "dd if='{}' bs=1M skip=100 count=10 status=none | sha256sum",
        m.p("msdp/lsu1/a").display()
    ));
    let direct = sh_ok(&format!(
        "dd if='{}' bs=1M skip=100 count=10 status=none | sha256sum",
        f.display()
    ));
    assert_eq!(dd, direct, "random access read");
    let list = sh_ok(&format!(
        "tar -tf '{}'",
        m.p("msdp/lsu1/v2/both.tar").display()
    ));
    assert_eq!(list, "f\nf2\n");
    let mode = s.ok(&["lsu", "getmode", "lsu1", "--json"]);
    assert!(mode.contains("\"mode\": \"kms\""), "{mode}");
    let dict = s.ok(&["lsu", "keydict", "lsu1", "--json"]);
    let d: serde_json::Value = serde_json::from_str(&dict).unwrap();
    assert_eq!(d.as_array().unwrap().len(), 1);
    assert!(d[0]["segments"].as_u64().unwrap() > 1000, "{dict}");
    // Removing the copies and reclaiming gives the space back; the others read back.
    sh_ok(&format!(
        "rm '{}' '{}'",
        m.p("msdp/lsu1/a").display(),
        m.p("msdp/lsu1/v2/both.tar").display()
    ));
    s.ok(&["lsu", "gc", "lsu1"]);
    assert!(lsu_bytes(&s) - empty <= three);
    assert_eq!(sha256(&m.p("msdp/lsu1/b")), want, "shared segments stay");
    sh_ok(&format!("rm -r '{}'", m.p("msdp/lsu1/v2").display()));
    let gc = s.ok(&["lsu", "gc", "lsu1", "--json"]);
    let after = lsu_bytes(&s) - empty;
    eprintln!("after removing the shifted version and reclaiming: {after} bytes ({gc})");
    assert!(
        after < one + (8 << 20),
        "space of the shifted version came back: {after}"
    );
    assert_eq!(sha256(&m.p("msdp/lsu1/b")), want);
}

#[test]
fn no_plaintext_and_no_dek_or_kek_in_clear_in_the_store() {
    let s = TestStore::new(&[]);
    kms_lsu(&s, "sec");
    let marker = "KMSFS-LSU-PLAINTEXT-MARKER-4711";
    sh_ok(&format!(
        "yes '{marker}' | head -c 4M > '{}'",
        s.path("text").display()
    ));
    random_file(&s.path("r"), 8);
    let m = s.mount("log=trace");
    cp(&s.path("text"), &m.p("msdp/sec/text"));
    s.ok(&["lsu", "rotate-kek", "sec"]);
    cp(&s.path("r"), &m.p("msdp/sec/r"));
    assert_eq!(sha256(&m.p("msdp/sec/text")), sha256(&s.path("text")));
    let printed = s.ok(&["lsu", "keydict", "sec", "--json"]) + &s.ok(&["lsu", "getmode", "sec"]);
    m.unmount();
    assert!(
        !common::tree_contains(&s.dir, marker.as_bytes()),
        "plaintext marker found in the store"
    );
    let store = Store::open(&s.dir, Unlock::default()).unwrap();
    let keys = store.msdp.unwrapped_keys("sec").unwrap();
    drop(store);
    assert!(
        keys.len() > 30,
        "KEKs, fingerprint key and DEKs: {}",
        keys.len()
    );
    let raw: HashSet<Vec<u8>> = keys.iter().map(|k| k.expose_secret().to_vec()).collect();
    let hexed: HashSet<Vec<u8>> = keys
        .iter()
        .map(|k| hex::encode(k.expose_secret()).into_bytes())
        .collect();
    assert_eq!(holds_any(&s.dir, &raw, 32), None, "a key in clear");
    assert_eq!(holds_any(&s.dir, &hexed, 64), None, "a key in hex");
    for k in &hexed {
        assert!(!printed.as_bytes().windows(64).any(|w| w == k.as_slice()));
    }
}

#[test]
fn kek_rotation_rewrap_and_the_msdp_kms_rules() {
    let s = TestStore::new(&[]);
    let k1 = kms_lsu(&s, "L");
    let f = s.path("f");
    random_file(&f, 16);
    let g = s.path("g");
    random_file(&g, 16);
    let m = s.mount("");
    cp(&f, &m.p("msdp/L/f"));
    let out = s.ok(&["lsu", "rotate-kek", "L"]);
    assert!(out.contains("KEK 2 is now active"), "{out}");
    cp(&g, &m.p("msdp/L/g"));
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["lsu", "keydict", "L", "--json"])).unwrap();
    assert_eq!(d[0]["state"], "inactive");
    assert_eq!(d[1]["state"], "active");
    assert!(d[0]["segments"].as_u64().unwrap() > 0 && d[1]["segments"].as_u64().unwrap() > 0);
    assert_eq!(d[0]["root_key_tag"], k1.as_str());
    // The LSU's root key cannot be deprecated, terminated or deleted.
    s.set_state("KG", "k1", "inactive");
    let err = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "KG",
        "--name",
        "k1",
        "--state",
        "deprecated",
    ]);
    assert!(err.contains("LSU L"), "{err}");
    // A new root key, then rewrap: the old one is free to go.
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "KG",
        "--name",
        "k2",
        "--activate",
    ]);
    let mode = s.ok(&["lsu", "getmode", "L"]);
    assert!(mode.contains(&k1), "{mode}");
    let out = s.ok(&["lsu", "rewrap", "L"]);
    assert!(
        out.contains("2 KEKs and 1 fingerprint key rewrapped"),
        "{out}"
    );
    let mode = s.ok(&["lsu", "getmode", "L", "--json"]);
    assert!(!mode.contains(&k1), "{mode}");
    s.set_state("KG", "k1", "deprecated");
    assert_eq!(sha256(&m.p("msdp/L/f")), sha256(&f));
    assert_eq!(sha256(&m.p("msdp/L/g")), sha256(&g));
    // Other rules: one key group for all encrypted LSUs; KMS mode stays.
    s.group_with_key("OTHER");
    let err = s.fails(&["lsu", "create", "L2", "--kms", "--key-group", "OTHER"]);
    assert!(err.contains("use --key-group KG"), "{err}");
    let err = s.fails(&["lsu", "setmode", "L", "none"]);
    assert!(err.contains("cannot be disabled"), "{err}");
    let (ok, _, err) = sh(&format!("mkdir '{}'", m.p("msdp/new").display()));
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    let (ok, _, err) = sh(&format!(
        "cp '{}' '{}'",
        f.display(),
        m.p("msdp/x").display()
    ));
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    // Root key made unusable through the KMS (forced, as for a compromised
    // key): reads fail with ENOKEY, mounted and after a remount, and do
    // not hang; reactivated, they work again.
    s.set_state("KG", "k2", "inactive");
    s.force_state("KG", "k2", "deprecated");
    assert!(read_fails(&m, "msdp/L/f").contains("Required key not available"));
    m.unmount();
    let m = s.mount("");
    assert!(read_fails(&m, "msdp/L/g").contains("Required key not available"));
    let (ok, _, err) = sh(&format!(
        "cp '{}' '{}'",
        f.display(),
        m.p("msdp/L/h").display()
    ));
    assert!(!ok && err.contains("Required key not available"), "{err}");
    s.set_state("KG", "k2", "inactive");
    assert_eq!(sha256(&m.p("msdp/L/g")), sha256(&g));
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(log.contains("LSU L"), "errors name the LSU");
}

#[test]
fn legacy_lsu_converts_to_kms_mode_while_reads_continue() {
    let s = TestStore::new(&[]);
    let tag = s.group_with_key("KG");
    s.ok(&["lsu", "create", "old", "--legacy-kms", "--key-group", "KG"]);
    let files: Vec<_> = (0..3).map(|i| s.path(&format!("f{i}"))).collect();
    let m = s.mount("");
    for (i, f) in files.iter().enumerate() {
        random_file(f, 24);
        cp(f, &m.p(&format!("msdp/old/f{i}")));
    }
    let mode = s.ok(&["lsu", "getmode", "old"]);
    assert!(
        mode.contains("legacy KMS mode") && mode.contains(&tag),
        "{mode}"
    );
    // One step, then a reader opened before the rest moves its data.
    let step = s.ok(&["lsu", "convert", "old", "--step"]);
    assert!(step.contains("\"finished\": false"), "{step}");
    assert!(s.ok(&["lsu", "getmode", "old"]).contains("converting"));
    let out = sh_ok(&format!(
        "exec 3< '{}'; head -c 1000 <&3 >/dev/null; '{}' --store '{}' lsu convert old >&2; cat <&3 | wc -c",
        m.p("msdp/old/f2").display(),
        common::bin(),
        s.dir.display()
    ));
    assert_eq!(out.trim(), (24 * 1048576 - 1000).to_string());
    let mode = s.ok(&["lsu", "getmode", "old", "--json"]);
    assert!(
        mode.contains("\"mode\": \"kms\"") && mode.contains("\"converting\": false"),
        "{mode}"
    );
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["lsu", "keydict", "old", "--json"])).unwrap();
    assert!(d[0]["segments"].as_u64().unwrap() >= 3 * 24 * 4, "{d}");
    m.unmount();
    // The legacy key is no longer pinned: nothing needs it now.
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "KG",
        "--name",
        "k2",
        "--activate",
    ]);
    s.ok(&["lsu", "rewrap", "old"]);
    s.set_state("KG", "k1", "deprecated");
    let m = s.mount("");
    for (i, f) in files.iter().enumerate() {
        assert_eq!(sha256(&m.p(&format!("msdp/old/f{i}"))), sha256(f));
    }
}

#[test]
fn sigkill_during_ingest_and_reclaim_loses_nothing_committed() {
    let s = TestStore::new(&[]);
    s.ok(&["lsu", "create", "P"]);
    let mode = s.ok(&["lsu", "getmode", "P"]);
    assert!(mode.contains("no encryption"), "{mode}");
    let m = s.mount("");
    // Ten pairs: x_i, and y_i sharing x_i's first half.
    let mut keep = Vec::new();
    for i in 0..10 {
        let x = s.path(&format!("x{i}"));
        random_file(&x, 4);
        let y = s.path(&format!("y{i}"));
        sh_ok(&format!(
            "(head -c 2M '{}'; head -c 1M /dev/urandom) > '{}'",
            x.display(),
            y.display()
        ));
        cp(&x, &m.p(&format!("msdp/P/x{i}")));
        cp(&y, &m.p(&format!("msdp/P/y{i}")));
        keep.push((format!("msdp/P/y{i}"), sha256(&y)));
    }
    sh_ok(&format!("rm '{}'/x*", m.p("msdp/P").display()));
    // A writer killed mid-image.
    let big = s.path("big");
    random_file(&big, 64);
    // It copies the file and then waits on its open stdin, so the kill
    // always lands before its close (a plain cp of 64 MiB may finish and
    // commit first on a fast moment).
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' - > '{}'",
            big.display(),
            m.p("msdp/P/big").display()
        ))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    m.kill();
    let _ = writer.kill();
    common::expect_cut_off(writer.wait_with_output().unwrap());
    // Reclaims killed at different moments.
    for delay in [0, 20, 80] {
        let m = s.mount("");
        for (rel, sum) in &keep {
            assert_eq!(&sha256(&m.p(rel)), sum, "{rel} after a kill");
        }
        let (ok, ls, _) = sh(&format!("ls '{}'", m.p("msdp/P").display()));
        assert!(
            ok && !ls.contains("big"),
            "half-written image is not there: {ls}"
        );
        let mut gc = std::process::Command::new(common::bin())
            .args(["--store", s.dir.to_str().unwrap(), "lsu", "gc", "P"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        m.kill();
        let _ = gc.wait();
    }
    let m = s.mount("");
    let before = lsu_bytes(&s);
    let gc: serde_json::Value = serde_json::from_str(&s.ok(&["lsu", "gc", "P", "--json"])).unwrap();
    eprintln!("final reclaim: {gc}");
    let after = lsu_bytes(&s);
    assert!(after <= before);
    for (rel, sum) in &keep {
        assert_eq!(&sha256(&m.p(rel)), sum, "{rel} after reclaim");
    }
    // About 10 × 3 MiB live (plus headers), nothing of the dead halves.
    assert!(after < 40 << 20, "space came back: {after} bytes");
    m.unmount();
}

#[test]
fn a_damaged_container_gives_eio_and_names_the_lsu() {
    let s = TestStore::new(&[]);
    kms_lsu(&s, "D");
    let f = s.path("f");
    random_file(&f, 4);
    let m = s.mount("");
    cp(&f, &m.p("msdp/D/f"));
    m.unmount();
    let c = sh_ok(&format!(
        "ls '{}'/*.kct",
        s.dir.join("lsu/D/containers").display()
    ));
    let c = c.lines().next().unwrap();
    flip_byte(Path::new(c), 1_000_000);
    let m = s.mount("");
    let err = read_fails(&m, "msdp/D/f");
    assert!(err.contains("Input/output error"), "{err}");
    let o = s.cmd(&["fsck"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && text.contains("DAMAGED image msdp/D/f"),
        "{text}"
    );
    m.unmount();
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(
        log.contains("integrity check failed: LSU D"),
        "log names the LSU"
    );
}

/// Holes (a write past the end, ftruncate past the end) read back as zeros,
/// through a tape pool and through an LSU alike: the write pipeline fills them.
#[test]
fn sparse_writes_and_growing_truncates_read_back_as_zeros() {
    let s = TestStore::new(&[]);
    kms_lsu(&s, "L");
    s.group_with_key("ENCR_S");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_S")).unwrap();
    let script = "import sys\n\
        with open(sys.argv[1], 'wb') as f:\n\
        \x20   f.write(b'head')\n\
        \x20   f.seek(3 << 20)\n\
        \x20   f.write(b'x' * 100000)\n\
        \x20   f.truncate(5 << 20)\n";
    let want = s.path("want.bin");
    let py = s.path("sparse.py");
    std::fs::write(&py, script).unwrap();
    sh_ok(&format!("python3 '{}' '{}'", py.display(), want.display()));
    for rel in ["pools/ENCR_S/sparse.img", "msdp/L/sparse.img"] {
        sh_ok(&format!(
            "python3 '{}' '{}'",
            py.display(),
            m.p(rel).display()
        ));
        assert_eq!(std::fs::metadata(m.p(rel)).unwrap().len(), 5 << 20, "{rel}");
        assert_eq!(sha256(&m.p(rel)), sha256(&want), "{rel}");
    }
    m.unmount();
}

/// Nightly backups start together while the active KEK is due for
/// rotation (here at every segment): every writer must end up with DEKs
/// wrapped under a KEK the key dictionary holds. Checked after a remount,
/// when no unwrapped KEK is cached any more.
#[test]
fn concurrent_writers_racing_kek_rotation_read_back_after_a_cold_remount() {
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&[
        "lsu",
        "create",
        "R",
        "--kms",
        "--key-group",
        "KG",
        "--kek-max-segments",
        "1",
    ]);
    let m = s.mount("");
    let first = s.path("first");
    random_file(&first, 1);
    cp(&first, &m.p("msdp/R/first"));
    let mut want = vec![("msdp/R/first".to_string(), sha256(&first))];
    // One folder per writer: creates in one directory are serialised by
    // the kernel, creates in different ones reach the daemon together.
    for i in 0..8 {
        std::fs::create_dir(m.p(&format!("msdp/R/d{i}"))).unwrap();
    }
    for round in 0..6 {
        let files: Vec<_> = (0..8)
            .map(|i| {
                let f = s.path(&format!("r{round}-{i}"));
                random_file(&f, 1);
                f
            })
            .collect();
        let script: String = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                format!(
                    "cp '{}' '{}' & ",
                    f.display(),
                    m.p(&format!("msdp/R/d{i}/r{round}")).display()
                )
            })
            .collect();
        sh_ok(&format!("{script} wait"));
        for (i, f) in files.iter().enumerate() {
            want.push((format!("msdp/R/d{i}/r{round}"), sha256(f)));
        }
    }
    m.unmount();
    let m = s.mount("");
    for (rel, sum) in &want {
        assert_eq!(&sha256(&m.p(rel)), sum, "{rel} after a cold remount");
    }
    let o = s.cmd(&["fsck"]);
    assert!(
        o.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// A legacy writer still writing when a conversion to KMS mode finishes:
/// its commit records the legacy key again, so the key stays pinned and
/// the next `convert` converts what it wrote.
#[test]
fn a_legacy_writer_in_flight_when_conversion_finishes_keeps_its_key_pinned() {
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&["lsu", "create", "old", "--legacy-kms", "--key-group", "KG"]);
    let f = s.path("f");
    random_file(&f, 4);
    let m = s.mount("");
    let out = sh_ok(&format!(
        "exec 3> '{img}'; head -c 2M '{f}' >&3; '{bin}' --store '{store}' lsu convert old >&2; tail -c +2097153 '{f}' >&3; exec 3>&-; '{bin}' --store '{store}' lsu getmode old --json",
        img = m.p("msdp/old/late").display(),
        f = f.display(),
        bin = common::bin(),
        store = s.dir.display()
    ));
    assert!(out.contains("\"converting\": true"), "{out}");
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "KG",
        "--name",
        "k2",
        "--activate",
    ]);
    s.ok(&["lsu", "rewrap", "old"]);
    let err = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "KG",
        "--name",
        "k1",
        "--state",
        "deprecated",
    ]);
    assert!(err.contains("LSU old"), "{err}");
    s.ok(&["lsu", "convert", "old"]);
    s.set_state("KG", "k1", "deprecated");
    assert_eq!(sha256(&m.p("msdp/old/late")), sha256(&f));
}

/// A record whose header was edited to claim another kind of sealing (and
/// a KMS key of the forger's choosing) is damage (EIO): how a segment is
/// sealed is what the index says, not what the container says.
#[test]
fn a_record_claiming_another_sealing_than_the_index_is_damage() {
    let s = TestStore::new(&[]);
    kms_lsu(&s, "F");
    let f = s.path("f");
    random_file(&f, 1);
    let m = s.mount("");
    cp(&f, &m.p("msdp/F/f"));
    m.unmount();
    let c = s.dir.join("lsu/F/containers/0000000000000001.kct");
    let mut b = std::fs::read(&c).unwrap();
    let rec = 64;
    assert_eq!(&b[rec..rec + 4], b"KSEG");
    assert_eq!(b[rec + 5], 2, "a KEK-sealed segment");
    b[rec + 5] = 1;
    b[rec + 64..rec + 80].copy_from_slice(&[0x5c; 16]);
    let crc = crc32fast::hash(&b[rec..rec + 156]);
    b[rec + 156..rec + 160].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&c, b).unwrap();
    let m = s.mount("");
    let err = read_fails(&m, "msdp/F/f");
    assert!(err.contains("Input/output error"), "{err}");
    m.unmount();
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(
        log.contains("index"),
        "the log says the record disagrees with the index"
    );
}

/// A reclaim that runs while a backup writes more than one container's
/// worth (64 MiB) must leave the writer's full containers alone: they are
/// in no catalog record until the writer commits, but they are not orphans.
#[test]
fn gc_during_a_large_write_leaves_the_writers_full_containers_alone() {
    let s = TestStore::new(&[]);
    s.ok(&["lsu", "create", "L"]);
    let f = s.path("f");
    random_file(&f, 100);
    let m = s.mount("");
    let fifo = s.path("fifo");
    let out = sh_ok(&format!(
        "mkfifo '{fifo}'; dd if='{fifo}' of='{img}' bs=1M iflag=fullblock 2>/dev/null & D=$!; \
         exec 4>'{fifo}'; head -c 80M '{f}' >&4; sleep 2; \
         '{bin}' --store '{store}' lsu gc L --json; \
         tail -c +83886081 '{f}' >&4; exec 4>&-; wait $D; echo closed-ok",
        fifo = fifo.display(),
        img = m.p("msdp/L/big").display(),
        f = f.display(),
        bin = common::bin(),
        store = s.dir.display()
    ));
    assert!(out.contains("closed-ok"), "{out}");
    assert!(out.contains("\"orphans_removed\": 0"), "{out}");
    m.unmount();
    let m = s.mount("");
    assert_eq!(
        sha256(&m.p("msdp/L/big")),
        sha256(&f),
        "committed image reads back"
    );
}

/// A descriptor opened before a conversion (or a KEK rotation) reads on:
/// segments moved under a KEK made after the open are found by reading
/// the key dictionary again, not refused.
#[test]
fn a_reader_opened_before_a_conversion_reads_on() {
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&["lsu", "create", "old", "--legacy-kms", "--key-group", "KG"]);
    let f = s.path("f");
    random_file(&f, 4);
    let m = s.mount("");
    cp(&f, &m.p("msdp/old/a"));
    let out = sh_ok(&format!(
        "exec 3< '{img}'; '{bin}' --store '{store}' lsu convert old >&2; sha256sum <&3",
        img = m.p("msdp/old/a").display(),
        bin = common::bin(),
        store = s.dir.display()
    ));
    assert!(out.contains(&sha256(&f)), "{out}");
}

/// While a legacy writer is still writing, its KMS key cannot be retired,
/// even after a conversion finished and a rewrap moved every KEK to a new
/// root key: the writer's segments need it.
#[test]
fn a_legacy_writers_key_cannot_be_retired_while_it_writes() {
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&["lsu", "create", "old", "--legacy-kms", "--key-group", "KG"]);
    let f = s.path("f");
    random_file(&f, 4);
    let m = s.mount("");
    let out = sh_ok(&format!(
        "exec 3> '{img}'; head -c 2M '{f}' >&3; \
         B='{bin}'; S='{store}'; \
         $B --store $S lsu convert old >&2; \
         $B --store $S kms createkey --kg KG --name k2 --activate >&2; \
         $B --store $S lsu rewrap old >&2; \
         $B --store $S kms modifykey --kg KG --name k1 --state deprecated 2>&1 && echo RETIRED; \
         tail -c +2097153 '{f}' >&3; exec 3>&-; echo closed-ok",
        img = m.p("msdp/old/late").display(),
        f = f.display(),
        bin = common::bin(),
        store = s.dir.display()
    ));
    assert!(out.contains("closed-ok"), "{out}");
    assert!(
        !out.contains("RETIRED"),
        "the key of a writer in flight was deprecated: {out}"
    );
    assert!(out.contains("LSU old"), "the refusal names the LSU: {out}");
    assert_eq!(sha256(&m.p("msdp/old/late")), sha256(&f));
}
