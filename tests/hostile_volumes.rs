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

/// Rewrites the path in the first fragment header of `vol` (same length)
/// and fixes the header's CRC, as a forger with a hex editor would.
fn forge_path(vol: &std::path::Path, from: &str, to: &str) {
    let scan = kmsfs::tape::scan::scan_volume(vol).unwrap();
    let f = &scan.fragments[0];
    let mut b = std::fs::read(vol).unwrap();
    let start = f.header_offset as usize;
    let len = (f.data_offset - f.header_offset) as usize;
    let at = start + 136 + f.header.pool.len();
    assert_eq!(&b[at..at + from.len()], from.as_bytes());
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
    let crc = crc32fast::hash(&b[start..start + len - 4]);
    b[start + len - 4..start + len].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(vol, b).unwrap();
}

/// A new store holding the keys of `a` (moved with a KMS export).
fn store_with_keys_of(a: &TestStore) -> TestStore {
    let keys = a.export_keys();
    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    b
}

/// A format-2 encrypted fragment rewritten as format 1 (MACs stripped,
/// version set to 1, CRCs right) to dodge the header MACs: its blocks were
/// sealed with the format-2 associated data (label and image offset), so
/// they fail authentication as format 1 and the volume is refused.
#[test]
fn a_version_2_fragment_downgraded_to_version_1_is_refused() {
    use kmsfs::tape::format::{FILEMARK_LEN, FileMark, FragmentHeader, MAC_LEN};
    let a = TestStore::new(&[]);
    a.group_with_key("ENCR_Finance");
    let m = a.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    std::fs::write(m.p("pools/ENCR_Finance/payroll.tar"), b"salaries").unwrap();
    m.unmount();
    let src = a.dir.join("volumes/K00001L9.kvol");
    let scan = kmsfs::tape::scan::scan_volume(&src).unwrap();
    assert_eq!(scan.fragments.len(), 1);
    let f = &scan.fragments[0];
    assert_eq!(f.header.version, 2);
    let b = std::fs::read(&src).unwrap();
    let mark_at = b.len() - FILEMARK_LEN as usize;
    assert_eq!(FileMark::decode(&b[mark_at..]).unwrap(), f.mark);
    let header = FragmentHeader {
        version: 1,
        mac: [0; MAC_LEN],
        ..f.header.clone()
    };
    let mark = FileMark {
        version: 1,
        mac: [0; MAC_LEN],
        ..f.mark.clone()
    };
    let mut v = b[..f.header_offset as usize].to_vec();
    v.extend_from_slice(&header.encode());
    v.extend_from_slice(&b[f.data_offset as usize..mark_at]);
    v.extend_from_slice(&mark.encode());
    let vol = a.path("K00001L9.kvol");
    std::fs::write(&vol, v).unwrap();
    let downgraded = kmsfs::tape::scan::scan_volume(&vol).unwrap();
    assert_eq!(
        downgraded.fragments[0].header.version, 1,
        "the forgery scans as format 1"
    );
    let b = store_with_keys_of(&a);
    let (ok, out) = import(&b, &[vol]);
    assert!(!ok, "{out}");
    assert!(out.contains("ENCR_Finance/payroll.tar"), "{out}");
    assert!(out.contains("authentication"), "{out}");
    assert_eq!(images(&b), serde_json::json!([]));
}

/// The headers of an encrypted fragment are authenticated by its key: a
/// volume whose header was edited (and its CRC fixed) is refused in phase
/// two, and nothing of it enters the catalog.
#[test]
fn an_edited_header_of_an_encrypted_fragment_is_refused() {
    let a = TestStore::new(&[]);
    let tag = a.group_with_key("ENCR_Finance");
    let m = a.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    std::fs::write(m.p("pools/ENCR_Finance/payroll.tar"), b"salaries").unwrap();
    m.unmount();
    let vol = a.path("K00001L9.kvol");
    std::fs::copy(a.dir.join("volumes/K00001L9.kvol"), &vol).unwrap();
    forge_path(&vol, "payroll.tar", "evilfile.sh");
    // Store B has the key (moved with an export), so phase two can read.
    let b = store_with_keys_of(&a);
    assert!(b.ok(&["kms", "listkeys"]).contains(&tag));
    let (ok, out) = import(&b, &[vol]);
    assert!(!ok, "{out}");
    assert!(out.contains("ENCR_Finance/evilfile.sh"), "{out}");
    assert!(out.contains("fails authentication"), "{out}");
    assert_eq!(images(&b), serde_json::json!([]));
}

/// fsck authenticates the headers and file marks of the store's own
/// encrypted fragments too: an edited header is reported, not only data.
#[test]
fn fsck_reports_an_edited_header_in_the_store() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_Finance");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    std::fs::write(m.p("pools/ENCR_Finance/payroll.tar"), b"salaries").unwrap();
    m.unmount();
    assert!(s.cmd(&["fsck"]).status.success());
    forge_path(
        &s.dir.join("volumes/K00001L9.kvol"),
        "payroll.tar",
        "evilfile.sh",
    );
    let o = s.cmd(&["fsck"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("DAMAGED image pools/ENCR_Finance/payroll.tar")
            && text.contains("fragment header fails authentication"),
        "{text}"
    );
}

/// A tar image whose GNU long-name member claims 256 MiB: import lists
/// members with bounded memory (a name longer than PATH_MAX ends the
/// listing; the image itself is imported and listed as one file).
#[test]
fn a_tar_member_name_of_256_mib_is_not_read_into_memory() {
    let a = TestStore::new(&[]);
    let tar = a.path("hostile.tar");
    let py = a.path("mk.py");
    std::fs::write(
        &py,
        r#"import sys
n = int(sys.argv[2])
def hdr(name, typ, size):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = ("%011o" % size).encode() + b"\0"
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156] = ord(typ)
    h[257:265] = b"ustar  \0"
    h[148:156] = ("%06o" % sum(h)).encode() + b"\0 "
    return bytes(h)
with open(sys.argv[1], "wb") as f:
    f.write(hdr(b"././@LongLink", "L", n))
    chunk = b"a" * (1 << 20)
    left = n
    while left:
        w = min(left, len(chunk))
        f.write(chunk[:w])
        left -= w
    f.write(b"\0" * ((512 - n % 512) % 512))
    f.write(hdr(b"x", "0", 5))
    f.write(b"hello" + b"\0" * 507)
    f.write(b"\0" * 1024)
"#,
    )
    .unwrap();
    sh_ok(&format!(
        "python3 '{}' '{}' {}",
        py.display(),
        tar.display(),
        256 << 20
    ));
    let m = a.mount("");
    std::fs::create_dir(m.p("pools/Scratch")).unwrap();
    cp(&tar, &m.p("pools/Scratch/hostile.tar"));
    m.unmount();
    let vols: Vec<String> = std::fs::read_dir(a.dir.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let b = TestStore::new(&[]);
    // Peak memory of the import, as the kernel counts it for a child.
    let rss = sh_ok(&format!(
        "python3 -c 'import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' '{}' --store '{}' import {}",
        bin(),
        b.dir.display(),
        vols.join(" ")
    ));
    let mut w = rss.lines().last().unwrap().split_whitespace();
    let (code, kib): (i32, u64) = (
        w.next().unwrap().parse().unwrap(),
        w.next().unwrap().parse().unwrap(),
    );
    eprintln!("import of a 256 MiB hostile tar: exit {code}, peak RSS {kib} KiB");
    assert_eq!(code, 0);
    assert!(kib < 100 << 10, "import took {kib} KiB for a tar listing");
    let files: serde_json::Value =
        serde_json::from_str(&b.ok(&["image", "files", "pools/Scratch/hostile.tar", "--json"]))
            .unwrap();
    assert_eq!(files[0]["kind"], u64::from(b'I'), "{files}");
}
