//! Disaster recovery of an LSU from its directory alone (`kmsfs lsu
//! recover`): the store is lost, a copy of `STORE/lsu/NAME` and the keys
//! are not. Written with cp, tar and rsync through a real mount, recovered
//! into a new store while it is mounted, read back with sha256sum.

mod common;

use std::path::{Path, PathBuf};

use common::{TestStore, cp, flip_byte, random_file, sh_ok, sha256};

/// `cp -a` of an LSU's directory to `to` (a replica kept off the server).
fn replicate(s: &TestStore, lsu: &str, to: &Path) {
    sh_ok(&format!(
        "cp -a '{}' '{}'",
        s.dir.join("lsu").join(lsu).display(),
        to.display()
    ));
}

/// A new store with a KMS-mode LSU `lsu1` in key group `KG`.
fn store_with_lsu1() -> TestStore {
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&["lsu", "create", "lsu1", "--kms", "--key-group", "KG"]);
    s
}

/// A new store with the keys of `s` and its LSU `lsu` recovered from a
/// replica of its directory.
fn recovered_elsewhere(s: &TestStore, lsu: &str) -> TestStore {
    let keys = s.export_keys();
    let replica = s.path(&format!("replica-{lsu}"));
    replicate(s, lsu, &replica);
    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    b.ok(&["lsu", "recover", lsu, "--from", replica.to_str().unwrap()]);
    b
}

/// The site that is lost: an LSU written as a backup administrator would.
/// Returns the store, the files' SHA-256 by path inside the LSU, and the
/// source of the first file.
fn site_a() -> (TestStore, Vec<(String, String)>, PathBuf) {
    let a = store_with_lsu1();
    let f1 = a.path("f1");
    random_file(&f1, 6);
    let f2 = a.path("f2");
    random_file(&f2, 3);
    let m = a.mount("");
    cp(&f1, &m.p("msdp/lsu1/a"));
    // A second name for the same data, in a folder (dedup).
    sh_ok(&format!("mkdir '{}'", m.p("msdp/lsu1/daily").display()));
    cp(&f1, &m.p("msdp/lsu1/daily/b"));
    // A new version over an old name: only the new one comes back.
    cp(&f1, &m.p("msdp/lsu1/v"));
    cp(&f2, &m.p("msdp/lsu1/v"));
    // tar of a tree into the LSU.
    sh_ok(&format!(
        "mkdir -p '{t}/src/sub' && head -c 300000 /dev/urandom > '{t}/src/sub/x' && \
         echo hello > '{t}/src/y' && tar -C '{t}' -cf '{}' src",
        m.p("msdp/lsu1/daily/set.tar").display(),
        t = a.tmp.path().display()
    ));
    // A KEK rotation while mounted, then an image sealed under the new KEK.
    a.ok(&["lsu", "rotate-kek", "lsu1"]);
    // rsync writes a temporary name and renames it into place.
    sh_ok(&format!(
        "rsync '{}' '{}/'",
        f2.display(),
        m.p("msdp/lsu1/daily").display()
    ));
    // A deleted image does not come back.
    cp(&f2, &m.p("msdp/lsu1/gone"));
    std::fs::remove_file(m.p("msdp/lsu1/gone")).unwrap();
    let names = ["a", "daily/b", "v", "daily/set.tar", "daily/f2"];
    let sums = names
        .iter()
        .map(|n| (n.to_string(), sha256(&m.p(&format!("msdp/lsu1/{n}")))))
        .collect();
    m.unmount();
    (a, sums, f1)
}

#[test]
fn an_lsu_comes_back_from_its_directory_and_the_keys_alone() {
    let (a, sums, f1) = site_a();
    let keys = a.export_keys();
    let dr = tempfile::tempdir_in(a.tmp.path()).unwrap();
    let replica = dr.path().join("lsu1");
    replicate(&a, "lsu1", &replica);
    // The backup server is lost.
    std::fs::remove_dir_all(&a.dir).unwrap();

    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    let m = b.mount("");
    let out = b.ok(&[
        "lsu",
        "recover",
        "lsu1",
        "--from",
        replica.to_str().unwrap(),
    ]);
    assert!(out.contains("5 images"), "{out}");
    assert!(!out.contains("not recovered"), "{out}");
    for (n, want) in &sums {
        assert_eq!(&sha256(&m.p(&format!("msdp/lsu1/{n}"))), want, "{n}");
    }
    assert!(!m.p("msdp/lsu1/gone").exists());
    let listed = sh_ok(&format!("ls '{}'", m.p("msdp/lsu1/daily").display()));
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        ["b", "f2", "set.tar"]
    );
    // Its key dictionary came back (both KEKs), and a fresh KEK is active:
    // the rotation counters did not travel.
    let kd = b.ok(&["lsu", "keydict", "lsu1", "--json"]);
    let kd: serde_json::Value = serde_json::from_str(&kd).unwrap();
    let kd = kd.as_array().unwrap();
    assert_eq!(kd.len(), 3, "{kd:?}");
    assert!(kd[0]["segments"].as_u64().unwrap() > 0, "{kd:?}");
    assert_eq!(kd[2]["state"], "active", "{kd:?}");
    // Writes go on, and deduplicate against what came back.
    let before = sh_ok(&format!("du -sb '{}'", b.dir.join("lsu").display()));
    cp(&f1, &m.p("msdp/lsu1/again"));
    let after = sh_ok(&format!("du -sb '{}'", b.dir.join("lsu").display()));
    let n = |s: &str| s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
    assert!(n(&after) - n(&before) < 1 << 20, "{before} -> {after}");
    m.unmount();
    // A cold mount, and fsck, agree.
    b.ok(&["fsck"]);
    let m = b.mount("");
    for (n, want) in &sums {
        assert_eq!(&sha256(&m.p(&format!("msdp/lsu1/{n}"))), want, "{n}");
    }
    m.unmount();
}

#[test]
fn damage_in_the_replica_is_reported_and_never_committed_half() {
    let a = store_with_lsu1();
    a.ok(&["lsu", "create", "lsu2", "--kms", "--key-group", "KG"]);
    let (x, y) = (a.path("x"), a.path("y"));
    random_file(&x, 2);
    random_file(&y, 2);
    let m = a.mount("");
    cp(&x, &m.p("msdp/lsu1/x"));
    cp(&y, &m.p("msdp/lsu1/y"));
    cp(&y, &m.p("msdp/lsu2/z"));
    m.unmount();
    let keys = a.export_keys();
    let dr = tempfile::tempdir_in(a.tmp.path()).unwrap();
    let replica = dr.path().join("lsu1");
    replicate(&a, "lsu1", &replica);
    // x was written first: the first segment record of the first container is x's.
    let containers = replica.join("containers");
    let first = std::fs::read_dir(&containers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    flip_byte(&first, 64 + 160 + 10);
    // A recipe file of another LSU slipped in.
    let other = std::fs::read_dir(a.dir.join("lsu/lsu2/recipes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(
        &other,
        replica.join("recipes").join(other.file_name().unwrap()),
    )
    .unwrap();

    let b = TestStore::new(&[]);
    // Without the keys: refused, naming the root key, and nothing made.
    let err = b.fails(&[
        "lsu",
        "recover",
        "lsu1",
        "--from",
        replica.to_str().unwrap(),
    ]);
    assert!(err.contains("root key"), "{err}");
    assert!(!b.ok(&["lsu", "list"]).contains("lsu1"));
    b.import_keys(&keys);
    let m = b.mount("");
    let o = b.cmd(&[
        "lsu",
        "recover",
        "lsu1",
        "--from",
        replica.to_str().unwrap(),
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success(), "{out}{err}");
    assert!(out.contains("not recovered: x: segment 0"), "{out}");
    assert!(out.contains("recipe of another LSU"), "{out}");
    assert!(err.contains("2 images could not be recovered"), "{err}");
    assert!(
        !m.p("msdp/lsu1/x").exists(),
        "a damaged image was committed"
    );
    assert_eq!(sha256(&m.p("msdp/lsu1/y")), sha256(&y));
    // The key group rule holds for recovered LSUs: another group is refused.
    let dr2 = tempfile::tempdir_in(a.tmp.path()).unwrap();
    let c = TestStore::new(&[]);
    c.import_keys(&keys);
    c.group_with_key("OTHER");
    c.ok(&["lsu", "create", "mine", "--kms", "--key-group", "OTHER"]);
    replicate(&a, "lsu2", &dr2.path().join("lsu2"));
    let err = c.fails(&[
        "lsu",
        "recover",
        "lsu2",
        "--from",
        dr2.path().join("lsu2").to_str().unwrap(),
    ]);
    assert!(err.contains("key group"), "{err}");
    m.unmount();
}

#[test]
fn gc_keeps_the_recipe_files_in_step_with_the_catalog() {
    let s = store_with_lsu1();
    let f = s.path("f");
    random_file(&f, 1);
    let m = s.mount("");
    cp(&f, &m.p("msdp/lsu1/keep"));
    cp(&f, &m.p("msdp/lsu1/old"));
    let recipes = s.dir.join("lsu/lsu1/recipes");
    let count = || std::fs::read_dir(&recipes).unwrap().count();
    assert_eq!(count(), 2);
    // A file removed behind kmsfs's back (or an image written before
    // kmsfs kept them) is written again by gc; a renamed file or folder's
    // images get their new names at once.
    for e in std::fs::read_dir(&recipes).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    sh_ok(&format!(
        "mkdir '{0}/d' && mv '{0}/old' '{0}/d/new' && mv '{0}/d' '{0}/e'",
        m.p("msdp/lsu1").display()
    ));
    let out = s.ok(&["lsu", "gc", "lsu1", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["recipes_written"], 1, "{out}");
    assert_eq!(count(), 2);
    let out = s.ok(&["lsu", "gc", "lsu1", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["recipes_written"], 0, "{out}");
    // A recipe file no image has is removed.
    std::fs::write(recipes.join(format!("{:032x}.krc", 7)), b"stale").unwrap();
    let out = s.ok(&["lsu", "gc", "lsu1", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["recipes_removed"], 1, "{out}");
    m.unmount();
    // And the names are the namespace's: recovered into a new store.
    let b = recovered_elsewhere(&s, "lsu1");
    let m = b.mount("");
    assert_eq!(sha256(&m.p("msdp/lsu1/e/new")), sha256(&f));
    assert_eq!(sha256(&m.p("msdp/lsu1/keep")), sha256(&f));
    m.unmount();
}

/// A key dictionary from outside that says "encrypted" but carries its
/// fingerprint key in clear (so its MAC and recipes could be forged) is
/// refused before anything is made or any key fetched.
#[test]
fn a_forged_key_dictionary_with_a_clear_key_is_refused() {
    let a = store_with_lsu1();
    let other = a.group_with_key("OTHER");
    let keys = a.export_keys();
    let dr = tempfile::tempdir_in(a.tmp.path()).unwrap();
    let replica = dr.path().join("lsu1");
    replicate(&a, "lsu1", &replica);
    let path = replica.join("keydict.kkd");
    let forged =
        kmsfs::fuzzing::forged_keydict(&std::fs::read(&path).unwrap(), [7; 32], &other).unwrap();
    std::fs::write(&path, forged).unwrap();
    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    let err = b.fails(&[
        "lsu",
        "recover",
        "lsu1",
        "--from",
        replica.to_str().unwrap(),
    ]);
    assert!(err.contains("key dictionary"), "{err}");
    assert!(!b.ok(&["lsu", "list"]).contains("lsu1"));
}

/// The same LSU recovered under a second name is refused (it would share
/// the first one's id and keys, and hold nothing).
#[test]
fn an_lsu_the_store_holds_is_not_recovered_twice() {
    let s = store_with_lsu1();
    let f = s.path("f");
    random_file(&f, 1);
    let m = s.mount("");
    cp(&f, &m.p("msdp/lsu1/x"));
    let dr = tempfile::tempdir_in(s.tmp.path()).unwrap();
    replicate(&s, "lsu1", &dr.path().join("lsu1"));
    let err = s.fails(&[
        "lsu",
        "recover",
        "copy",
        "--from",
        dr.path().join("lsu1").to_str().unwrap(),
    ]);
    assert!(err.contains("lsu1"), "{err}");
    // In place (the store's own directory) is refused too: move it aside first.
    let err = s.fails(&[
        "lsu",
        "recover",
        "lsu1",
        "--from",
        s.dir.join("lsu/lsu1").to_str().unwrap(),
    ]);
    assert!(err.contains("aside") || err.contains("exists"), "{err}");
    m.unmount();
}

/// An image whose recipe file still names the folder it was in before a
/// folder rename, and a newer image at that old name: both come back.
#[test]
fn images_renamed_with_their_folder_keep_their_names() {
    let s = store_with_lsu1();
    let (f, g) = (s.path("f"), s.path("g"));
    random_file(&f, 1);
    random_file(&g, 1);
    let m = s.mount("");
    let root = m.p("msdp/lsu1");
    sh_ok(&format!(
        "mkdir '{0}/d' && cp '{1}' '{0}/d/f'",
        root.display(),
        f.display()
    ));
    sh_ok(&format!(
        "mv '{0}/d' '{0}/e' && mkdir '{0}/d' && cp '{1}' '{0}/d/f'",
        root.display(),
        g.display()
    ));
    m.unmount();
    let b = recovered_elsewhere(&s, "lsu1");
    let m = b.mount("");
    assert_eq!(sha256(&m.p("msdp/lsu1/e/f")), sha256(&f));
    assert_eq!(sha256(&m.p("msdp/lsu1/d/f")), sha256(&g));
    m.unmount();
}
