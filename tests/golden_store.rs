//! A whole store written by an earlier kmsfs (tests/golden/store-v1: volume
//! format 1, catalog format 2, keystore format 1, LSU container format 1,
//! made by its make.sh) is opened, upgraded and served by this one: every
//! image reads back byte-identical through a real mount, fsck is clean, new
//! images go in beside the old, and the old LSU still deduplicates.

mod common;

use std::path::Path;

use common::*;

/// Byte i of golden file n: (i*31+7) % 251 ^ n (as make.sh writes them).
fn pattern(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8 ^ n).collect()
}

/// A copy of the golden store in a fresh test directory.
fn golden_copy() -> TestStore {
    let s = TestStore::new(&[]);
    std::fs::remove_dir_all(&s.dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store-v1/store");
    sh_ok(&format!(
        "cp -a '{}' '{}' && chmod 700 '{}'",
        src.display(),
        s.dir.display(),
        s.dir.display()
    ));
    s
}

const IMAGES: [(&str, u8, usize); 5] = [
    ("pools/ENCR_Golden/small.bin", 1, 1000),
    ("pools/ENCR_Golden/web01/span.bin", 2, 1_500_000),
    ("pools/Clear/clear.bin", 3, 10_000),
    ("msdp/lsu1/dedup.bin", 4, 700_000),
    ("msdp/lsu1/copy.bin", 4, 700_000),
];

#[test]
fn a_store_of_the_first_formats_reads_back_after_the_upgrade() {
    let s = golden_copy();
    let m = s.mount("");
    for (rel, n, len) in IMAGES {
        assert_eq!(std::fs::read(m.p(rel)).unwrap(), pattern(n, len), "{rel}");
    }
    let fsck = s.cmd(&["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // New images beside the old ones; the old LSU still finds its segments.
    let containers = s.dir.join("lsu/lsu1/containers");
    let before = sh_ok(&format!("du -sb '{}'", containers.display()));
    std::fs::write(m.p("msdp/lsu1/again.bin"), pattern(4, 700_000)).unwrap();
    let after = sh_ok(&format!("du -sb '{}'", containers.display()));
    let size = |s: &str| s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
    assert!(
        size(&after) < size(&before) + 64 * 1024,
        "the same data deduplicates against the old segments: {before} -> {after}"
    );
    std::fs::write(m.p("pools/ENCR_Golden/new.bin"), pattern(5, 300_000)).unwrap();
    m.unmount();
    let m = s.mount("");
    for (rel, n, len) in IMAGES {
        assert_eq!(std::fs::read(m.p(rel)).unwrap(), pattern(n, len), "{rel}");
    }
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_Golden/new.bin")).unwrap(),
        pattern(5, 300_000)
    );
    m.unmount();
    let fsck = s.cmd(&["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
