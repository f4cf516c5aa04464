//! Volumes from the vault that are damaged, forged or hostile: import
//! refuses them with an error that names what is wrong, writes nothing
//! outside the store, and never imports clear data as encrypted, a size
//! the fragments do not hold, or a name that is not a valid name.

mod common;

use std::path::PathBuf;

use common::forge::{Frag, clear_volume_v1};
use common::*;

/// `kmsfs import VOLUMES…` (both phases); returns (success, stdout + stderr).
fn import(s: &TestStore, vols: &[PathBuf]) -> (bool, String) {
    let mut args = vec!["import".to_string()];
    args.extend(vols.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = s.cmd(&args);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn images(s: &TestStore) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["image", "list", "--json"])).unwrap()
}

#[test]
fn a_barcode_never_becomes_a_path_outside_the_store() {
    let s = TestStore::new(&[]);
    let outside = std::path::Path::new("/tmp/kmsfs-pwn.kvol");
    let _ = std::fs::remove_file(outside);
    for barcode in ["../../pwn", "/tmp/kmsfs-pwn", "a/b", "."] {
        let v = s.path("forged.kvol");
        clear_volume_v1(&v, barcode, "Scratch", &[Frag::default()]);
        let (ok, out) = import(&s, &[v]);
        assert!(!ok, "{barcode}: {out}");
        assert!(out.contains("barcode"), "{barcode}: {out}");
        assert!(
            !s.path("pwn.kvol").exists(),
            "{barcode} wrote outside the store"
        );
        let hit = outside.exists();
        let _ = std::fs::remove_file(outside);
        assert!(!hit, "{barcode} wrote {}", outside.display());
        assert_eq!(images(&s), serde_json::json!([]), "{barcode}");
    }
}

#[test]
fn pool_names_and_paths_from_a_volume_are_validated() {
    let s = TestStore::new(&[]);
    s.ok(&["lsu", "create", "lsu1"]);
    let cases = [
        ("msdp/lsu1", "f.bin"),
        ("", "f.bin"),
        ("Pool", "../../escape"),
        ("Pool", "/abs"),
        ("Pool", "a//b"),
        ("Pool", "a/./b"),
        ("Pool", ""),
        ("..", "f.bin"),
    ];
    for (n, (pool, path)) in cases.iter().enumerate() {
        let v = s.path(&format!("v{n}.kvol"));
        let f = Frag {
            image_id: 100 + n as u128,
            pool,
            path,
            ..Frag::default()
        };
        clear_volume_v1(&v, &format!("FRG{n:03}L9"), pool, &[f]);
        let (ok, out) = import(&s, &[v]);
        assert!(!ok, "pool {pool:?} path {path:?}: {out}");
        assert!(
            out.contains("pool name") || out.contains("path"),
            "pool {pool:?} path {path:?}: {out}"
        );
    }
    assert_eq!(images(&s), serde_json::json!([]));
    // The daemon serves on: an LSU image list and the LSU itself are intact.
    let m = s.mount("");
    std::fs::write(m.p("msdp/lsu1/ok"), b"fine").unwrap();
    assert_eq!(std::fs::read(m.p("msdp/lsu1/ok")).unwrap(), b"fine");
}

#[test]
fn clear_data_is_never_imported_into_an_encrypted_pool() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_Finance");
    let v = s.path("forged.kvol");
    let f = Frag {
        pool: "ENCR_Finance",
        path: "payroll.tar",
        mode: 0o104755,
        ..Frag::default()
    };
    clear_volume_v1(&v, "FRG001L9", "ENCR_Finance", &[f]);
    let (ok, out) = import(&s, &[v]);
    assert!(!ok, "{out}");
    assert!(out.contains("ENCR_Finance/payroll.tar"), "{out}");
    assert!(out.contains("not encrypted"), "{out}");
    assert_eq!(images(&s), serde_json::json!([]));
    let fsck = s.cmd(&["fsck"]);
    assert!(fsck.status.success());
}

#[test]
fn the_image_size_must_be_what_the_fragments_hold() {
    let s = TestStore::new(&[]);
    let data = [b'x'; 30];
    // A file mark that says 10 bytes over 30 bytes of data.
    let v = s.path("short.kvol");
    clear_volume_v1(
        &v,
        "FRG001L9",
        "Scratch",
        &[Frag {
            data: &data,
            image_size: 10,
            ..Frag::default()
        }],
    );
    let (ok, out) = import(&s, &[v]);
    assert!(!ok, "{out}");
    assert!(out.contains("size"), "{out}");
    // Two fragments whose offsets leave a gap, and two that overlap.
    for (n, second_at) in [(2u128, 40u64), (3, 20)] {
        let v = s.path(&format!("gap{n}.kvol"));
        let id = 0xABCD_0000 + n;
        clear_volume_v1(
            &v,
            &format!("FRG00{n}L9"),
            "Scratch",
            &[
                Frag {
                    image_id: id,
                    data: &data,
                    last_fragment: false,
                    ..Frag::default()
                },
                Frag {
                    image_id: id,
                    number: 1,
                    image_offset: second_at,
                    data: &data,
                    image_size: second_at + 30,
                    ..Frag::default()
                },
            ],
        );
        let (ok, out) = import(&s, &[v]);
        assert!(!ok, "offset {second_at}: {out}");
        assert!(out.contains("offset"), "offset {second_at}: {out}");
    }
    assert_eq!(images(&s), serde_json::json!([]));
    // The honest version of the same volume imports.
    let v = s.path("good.kvol");
    clear_volume_v1(
        &v,
        "FRG009L9",
        "Scratch",
        &[Frag {
            image_id: 9,
            data: &data,
            image_size: 30,
            ..Frag::default()
        }],
    );
    let (ok, out) = import(&s, &[v]);
    assert!(ok, "{out}");
    let m = s.mount("");
    assert_eq!(std::fs::read(m.p("pools/Scratch/f.bin")).unwrap(), data);
}
