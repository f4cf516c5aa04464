//! Two-phase import and recovery at a DR site, as an operator does it:
//! volumes shipped from store A to store B, keys recreated from the pass
//! phrase or moved with an exported keystore.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PASS: &str = "finance dr pass phrase";

/// Store A: a pass-phrase key in ENCR_Finance, three images (one spans
/// volumes, one is a tar of a real tree). Returns A, the key tag, the
/// shipped volume files and the source files.
struct SiteA {
    a: TestStore,
    tag: String,
    shipped: Vec<PathBuf>,
    src: PathBuf,
}

fn site_a() -> SiteA {
    let a = TestStore::new(&["--volume-capacity", "2M"]);
    let pp = a.path("pp");
    std::fs::write(&pp, PASS).unwrap();
    a.ok(&["kms", "createkg", "ENCR_Finance"]);
    let out = a.ok(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_Finance",
        "--name",
        "pp1",
        "--pass-phrase-file",
        pp.to_str().unwrap(),
        "--activate",
    ]);
    let tag = out
        .split_whitespace()
        .skip_while(|w| *w != "tag")
        .nth(1)
        .unwrap()
        .to_string();
    let src = a.path("src");
    std::fs::create_dir(&src).unwrap();
    random_file(&src.join("small.bin"), 1);
    random_file(&src.join("span.bin"), 3);
    sh_ok(&format!(
        "tar -cf '{}' -C /usr/share common-licenses",
        src.join("tree.tar").display()
    ));
    let m = a.mount("");
    std::fs::create_dir_all(m.p("pools/ENCR_Finance/web01")).unwrap();
    for (f, to) in [
        ("small.bin", "small.bin"),
        ("span.bin", "span.bin"),
        ("tree.tar", "web01/tree.tar"),
    ] {
        sh_ok(&format!(
            "cp '{}' '{}'",
            src.join(f).display(),
            m.p(&format!("pools/ENCR_Finance/{to}")).display()
        ));
    }
    m.unmount();
    let vault = a.path("vault");
    std::fs::create_dir(&vault).unwrap();
    let mut shipped = Vec::new();
    for e in std::fs::read_dir(a.dir.join("volumes")).unwrap() {
        let p = e.unwrap().path();
        let to = vault.join(p.file_name().unwrap());
        std::fs::copy(&p, &to).unwrap();
        shipped.push(to);
    }
    shipped.sort();
    SiteA {
        a,
        tag,
        shipped,
        src,
    }
}

fn import(b: &TestStore, extra: &[&str], vols: &[PathBuf]) -> std::process::Output {
    let mut args: Vec<&str> = vec!["import"];
    args.extend_from_slice(extra);
    args.extend(vols.iter().map(|p| p.to_str().unwrap()));
    b.cmd(&args)
}

fn check_restored(b: &TestStore, src: &Path) {
    let m = b.mount("");
    for (f, at) in [
        ("small.bin", "small.bin"),
        ("span.bin", "span.bin"),
        ("tree.tar", "web01/tree.tar"),
    ] {
        assert_eq!(
            sha256(&m.p(&format!("pools/ENCR_Finance/{at}"))),
            sha256(&src.join(f)),
            "{f} reads back byte-identical"
        );
    }
    m.unmount();
    let files: serde_json::Value = serde_json::from_str(&b.ok(&[
        "image",
        "files",
        "pools/ENCR_Finance/web01/tree.tar",
        "--json",
    ]))
    .unwrap();
    let listed: Vec<(String, u64)> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let link = f["link"]
                .as_str()
                .map(|l| format!(" -> {l}"))
                .unwrap_or_default();
            (
                format!("{}{link}", f["path"].as_str().unwrap()),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let tvf = sh_ok(&format!("tar -tvf '{}'", src.join("tree.tar").display()));
    let want: Vec<(String, u64)> = tvf
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[5..].join(" "), w[2].parse().unwrap())
        })
        .collect();
    assert_eq!(listed, want, "the file list matches tar -tvf");
    // One member restored by seeking to its offset in the image, through the mount.
    let bsd = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "common-licenses/BSD")
        .unwrap();
    let (off, len) = (
        bsd["offset"].as_u64().unwrap(),
        bsd["size"].as_u64().unwrap(),
    );
    let m = b.mount("");
    let got = sh_ok(&format!(
        "tail -c +{} '{}' | head -c {len} | sha256sum",
        off + 1,
        m.p("pools/ENCR_Finance/web01/tree.tar").display()
    ));
    m.unmount();
    assert_eq!(
        got.split_whitespace().next().unwrap(),
        sha256(Path::new("/usr/share/common-licenses/BSD"))
    );
}

#[test]
fn dr_with_recoverkey() {
    let SiteA {
        a: _a,
        tag,
        shipped,
        src,
    } = site_a();
    let b = TestStore::new(&[]);
    let o = import(&b, &["--phase", "1", "--json"], &shipped);
    assert!(
        o.status.success(),
        "phase 1 needs no key: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let imgs = s["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 3);
    for i in imgs {
        assert_eq!(i["key_tag"], tag.as_str());
        assert_eq!(i["have_key"], false);
        assert!(i["missing"].as_array().unwrap().is_empty());
    }
    let span = imgs.iter().find(|i| i["path"] == "span.bin").unwrap();
    assert!(
        span["volumes"].as_array().unwrap().len() >= 2,
        "the spanning image is recognised: {span}"
    );
    assert_eq!(span["size"], 3u64 << 20);
    let o = import(&b, &["--phase", "2"], &shipped);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("needs key tag {tag}")), "{out}");
    assert_eq!(
        b.ok(&["image", "list", "--json"]).trim(),
        "[]",
        "nothing changed"
    );
    assert_eq!(
        b.ok(&["volume", "list", "--json"]).trim(),
        "[]",
        "nothing changed"
    );
    let pp = b.path("pp");
    std::fs::write(&pp, PASS).unwrap();
    b.ok(&["kms", "createkg", "ENCR_Finance"]);
    b.ok(&[
        "kms",
        "recoverkey",
        "--kg",
        "ENCR_Finance",
        "--name",
        "pp1",
        "--tag",
        &tag,
        "--pass-phrase-file",
        pp.to_str().unwrap(),
    ]);
    let out = b.ok(&["import", "--phase", "2"]
        .iter()
        .copied()
        .chain(shipped.iter().map(|p| p.to_str().unwrap()))
        .collect::<Vec<_>>());
    assert_eq!(out.matches("imported ").count(), 3, "{out}");
    let again = b.ok(&["import"]
        .iter()
        .copied()
        .chain(shipped.iter().map(|p| p.to_str().unwrap()))
        .collect::<Vec<_>>());
    assert_eq!(
        again.matches("already in the catalog").count(),
        3,
        "a second run redoes nothing: {again}"
    );
    for p in &shipped {
        assert!(
            std::fs::read(p).unwrap()
                == std::fs::read(_a.dir.join("volumes").join(p.file_name().unwrap())).unwrap(),
            "import never writes to the volume it reads"
        );
    }
    check_restored(&b, &src);
}

#[test]
fn dr_with_exported_keystore() {
    let SiteA {
        a, shipped, src, ..
    } = site_a();
    let keys = a.export_keys();
    let c = TestStore::new(&[]);
    c.import_keys(&keys);
    let out = c.ok(&["import"]
        .iter()
        .copied()
        .chain(shipped.iter().map(|p| p.to_str().unwrap()))
        .collect::<Vec<_>>());
    assert_eq!(out.matches("imported ").count(), 3, "{out}");
    check_restored(&c, &src);
}

#[test]
fn damaged_block_and_missing_volume_are_named_and_the_rest_imports() {
    let SiteA {
        a, shipped, src, ..
    } = site_a();
    // small.bin was written first: its first data block is on the first volume.
    let first = &shipped[0];
    let mut b = std::fs::read(first).unwrap();
    let frag = b.windows(8).position(|w| w == b"KMSFSFRG").unwrap();
    let hdr_len = u32::from_le_bytes(b[frag + 12..frag + 16].try_into().unwrap()) as usize;
    b[frag + hdr_len + 8 + 1000] ^= 0x04;
    std::fs::write(first, &b).unwrap();
    let keys = a.export_keys();
    let d = TestStore::new(&[]);
    d.import_keys(&keys);
    let o = import(&d, &[], &shipped);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("DAMAGED ENCR_Finance/small.bin") && out.contains("integrity check failed"),
        "{out}"
    );
    assert_eq!(
        out.matches("imported ").count(),
        2,
        "every other image imports: {out}"
    );
    let m = d.mount("");
    assert_eq!(
        sha256(&m.p("pools/ENCR_Finance/span.bin")),
        sha256(&src.join("span.bin"))
    );
    assert!(!m.p("pools/ENCR_Finance/small.bin").exists());
    m.unmount();
    // A set with a volume missing: the missing one is named by barcode.
    let e = TestStore::new(&[]);
    let o = import(&e, &["--phase", "1", "--json"], &shipped[..1]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let span = s["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "span.bin")
        .cloned()
        .unwrap();
    let missing = span["missing"].as_array().unwrap();
    assert!(
        !missing.is_empty() && missing[0].as_str().unwrap().starts_with("volume K0000"),
        "{span}"
    );
}

#[test]
fn foreign_and_truncated_volumes_get_clear_errors() {
    let b = TestStore::new(&[]);
    let junk = b.path("junk.kvol");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let o = import(&b, &["--phase", "1"], std::slice::from_ref(&junk));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("junk.kvol") && out.contains("bad magic"),
        "{out}"
    );
    let SiteA { a: _a, shipped, .. } = site_a();
    let t = b.path("trunc.kvol");
    let full = std::fs::read(&shipped[0]).unwrap();
    std::fs::write(&t, &full[..full.len() - 5000]).unwrap();
    let o = import(&b, &["--phase", "1"], &[t]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("problem: volume K0000") && out.contains("offset"),
        "{out}"
    );
}

/// Two imports at once of different volumes that carry the same barcode
/// (every kmsfs store names its first volume K00001L9): one reserves the
/// barcode and imports, the other is refused with a clear error; neither
/// overwrites the other's volume, and a local writer's volumes stay too.
#[test]
fn concurrent_imports_of_one_barcode_never_overwrite_a_volume() {
    let mut srcs = Vec::new();
    for n in 0..2 {
        let a = TestStore::new(&[]);
        let f = a.path("f");
        random_file(&f, 60);
        let m = a.mount("");
        std::fs::create_dir(m.p("pools/Scratch")).unwrap();
        cp(&f, &m.p(&format!("pools/Scratch/img{n}")));
        m.unmount();
        srcs.push((a, f));
    }
    let b = TestStore::new(&[]);
    let mb = b.mount("");
    let out = sh_ok(&format!(
        "'{bin}' --store '{st}' import '{v0}' > '{o0}' 2>&1 & '{bin}' --store '{st}' import '{v1}' > '{o1}' 2>&1 & wait; cat '{o0}' '{o1}'",
        bin = bin(),
        st = b.dir.display(),
        v0 = srcs[0].0.dir.join("volumes/K00001L9.kvol").display(),
        v1 = srcs[1].0.dir.join("volumes/K00001L9.kvol").display(),
        o0 = b.path("o0").display(),
        o1 = b.path("o1").display(),
    ));
    let mut imported = 0;
    for (n, (_, f)) in srcs.iter().enumerate() {
        let p = mb.p(&format!("pools/Scratch/img{n}"));
        if p.exists() {
            assert_eq!(sha256(&p), sha256(f), "img{n} reads back: {out}");
            imported += 1;
        }
    }
    assert_eq!(imported, 1, "one of the two is imported: {out}");
    assert!(
        out.contains("K00001L9"),
        "the refusal names the barcode: {out}"
    );
}

/// `volume list --json` of a store.
fn volumes(s: &TestStore) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["volume", "list", "--json"])).unwrap()
}

/// One clear image in pool Scratch of a new store, on K00001L9; returns
/// the store and the source file.
fn one_image_store(name: &str) -> (TestStore, PathBuf) {
    let a = TestStore::new(&[]);
    let f = a.path("f");
    random_file(&f, 1);
    let m = a.mount("");
    std::fs::create_dir(m.p("pools/Scratch")).unwrap();
    cp(&f, &m.p(&format!("pools/Scratch/{name}")));
    m.unmount();
    (a, f)
}

/// A volume file an administrator put into the library directory by hand
/// (no catalog record yet) and then imports from there: the import adopts
/// it in place, and neither a success nor a failure ever removes it.
#[test]
fn importing_a_volume_already_in_the_library_directory_keeps_it() {
    let (a, f) = one_image_store("img");
    let b = TestStore::new(&[]);
    let inside = b.dir.join("volumes/K00001L9.kvol");
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::copy(a.dir.join("volumes/K00001L9.kvol"), &inside).unwrap();
    let o = import(&b, &[], std::slice::from_ref(&inside));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(inside.exists(), "the volume file is still there: {out}");
    assert!(o.status.success(), "{out}");
    let m = b.mount("");
    assert_eq!(sha256(&m.p("pools/Scratch/img")), sha256(&f));
    m.unmount();
    // A different file in the way of a barcode is refused and left alone.
    let (c, _) = one_image_store("other");
    let d = TestStore::new(&[]);
    let in_way = d.dir.join("volumes/K00001L9.kvol");
    std::fs::create_dir_all(in_way.parent().unwrap()).unwrap();
    std::fs::write(&in_way, b"an administrator's file").unwrap();
    let o = import(&d, &[], &[c.dir.join("volumes/K00001L9.kvol")]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("K00001L9"), "{out}");
    assert_eq!(std::fs::read(&in_way).unwrap(), b"an administrator's file");
}

/// Importing an image back from the vault copy of a volume this store
/// still holds and writes to: the volume keeps its state (Active) and its
/// length; only its image count grows.
#[test]
fn an_import_onto_a_volume_in_use_leaves_its_state_alone() {
    let a = TestStore::new(&[]);
    let m = a.mount("");
    std::fs::create_dir(m.p("pools/Scratch")).unwrap();
    std::fs::write(m.p("pools/Scratch/keep"), b"keep").unwrap();
    // Unmounted between the two: the first image's drive and volume are
    // released (release(2) runs after close returns), so the second goes
    // on the same volume.
    m.unmount();
    let m = a.mount("");
    std::fs::write(m.p("pools/Scratch/lost"), b"lost").unwrap();
    m.unmount();
    let vols: serde_json::Value = volumes(&a);
    assert_eq!(
        vols.as_array().unwrap().len(),
        1,
        "both images on one volume: {vols}"
    );
    let vault = a.path("K00001L9.kvol");
    std::fs::copy(a.dir.join("volumes/K00001L9.kvol"), &vault).unwrap();
    let m = a.mount("");
    std::fs::remove_file(m.p("pools/Scratch/lost")).unwrap();
    m.unmount();
    let before: serde_json::Value = volumes(&a);
    assert_eq!(before[0]["state"], "active", "{before}");
    let o = import(&a, &[], &[vault]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after: serde_json::Value = volumes(&a);
    assert_eq!(after[0]["state"], "active", "{after}");
    assert_eq!(after[0]["used"], before[0]["used"], "{after}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let m = a.mount("");
    assert_eq!(
        std::fs::read(m.p("pools/Scratch/lost")).ok().as_deref(),
        Some(&b"lost"[..]),
        "import said: {said}"
    );
    std::fs::write(m.p("pools/Scratch/next"), b"next").unwrap();
    m.unmount();
    let vols: serde_json::Value = volumes(&a);
    assert_eq!(
        vols.as_array().unwrap().len(),
        1,
        "the next write appends to it: {vols}"
    );
}

/// What an import killed during its copy leaves (a hidden temporary copy
/// in the library directory) is removed when the store is next opened.
#[test]
fn a_dead_imports_temporary_copy_is_removed_at_open() {
    let s = TestStore::new(&[]);
    let vols = s.dir.join("volumes");
    std::fs::create_dir_all(&vols).unwrap();
    let tmp = vols.join(".import-0011223344556677.tmp");
    std::fs::write(&tmp, vec![0u8; 4096]).unwrap();
    s.ok(&["volume", "list"]);
    assert!(!tmp.exists(), "the temporary copy is gone");
}

/// An imported image whose name is a directory in this store is imported
/// under the second name, like one whose name is an image.
#[test]
fn an_image_named_like_a_local_directory_is_imported_beside_it() {
    let (a, f) = one_image_store("img");
    let b = TestStore::new(&[]);
    let m = b.mount("");
    std::fs::create_dir_all(m.p("pools/Scratch/img")).unwrap();
    m.unmount();
    let o = import(&b, &[], &[a.dir.join("volumes/K00001L9.kvol")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = b.mount("");
    let names: Vec<String> = std::fs::read_dir(m.p("pools/Scratch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let other = names
        .iter()
        .find(|n| n.starts_with("img.imported-"))
        .expect("second name");
    assert_eq!(sha256(&m.p(&format!("pools/Scratch/{other}"))), sha256(&f));
    assert!(m.p("pools/Scratch/img").is_dir());
    m.unmount();
}
