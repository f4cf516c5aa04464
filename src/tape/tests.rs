//! Tape path tests through the store API (no mount): round trips across
//! volumes, tampering, truncation, dead writers, key states.

use std::sync::Arc;

use crate::catalog::InodeKind;
use crate::catalog::{FileAttrs, POOLS_INO};
use crate::kms::{KeyState, NewKey, Unlock};
use crate::store::{InitOptions, Store};

use super::{ImageReader, ImageWriter, TapeError};
use crate::pipeline::WriteTarget;

pub(crate) fn attrs() -> FileAttrs {
    FileAttrs {
        mode: 0o100644,
        uid: 0,
        gid: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
    }
}

pub(crate) fn store(capacity: u64) -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    Store::init(
        &dir,
        InitOptions {
            volume_capacity: Some(capacity),
            drive_wait_secs: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let s = Store::open(&dir, Unlock::default()).unwrap();
    s.keys.keystore().write(|ks| {
        ks.create_group("ENCR_F", "").unwrap();
        ks.create_key(NewKey {
            group: "ENCR_F",
            name: "k1",
            description: "",
            passphrase: None,
            activate: true,
        })
        .unwrap();
    });
    for p in ["ENCR_F", "Clear"] {
        s.catalog
            .make_entry(POOLS_INO, p, p, InodeKind::Pool, attrs())
            .unwrap();
    }
    (d, s)
}

/// A write target in an existing pool, with the attributes of these tests.
fn target(s: &Store, pool: &str, name: &str) -> WriteTarget {
    WriteTarget {
        attrs: attrs(),
        ..crate::testing::write_target(s, pool, name)
    }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn write(s: &Store, pool: &str, name: &str, bytes: &[u8]) -> crate::catalog::ImageRec {
    let mut w = ImageWriter::begin(&s.library, target(s, pool, name)).unwrap();
    for (i, chunk) in bytes.chunks(100_000).enumerate() {
        w.write_at((i * 100_000) as u64, chunk).unwrap();
    }
    w.finish().unwrap().unwrap().0
}

fn read_all(s: &Store, img: &crate::catalog::ImageRec) -> Result<Vec<u8>, TapeError> {
    ImageReader::open(&s.library, img.clone())?.read_at(0, img.size as usize)
}

#[test]
fn encrypted_image_spans_volumes_and_reads_back() {
    let (_d, s) = store(2 << 20);
    let bytes = data(5 << 20, 1);
    let img = write(&s, "ENCR_F", "big.img", &bytes);
    assert!(
        img.fragments.len() >= 3,
        "spans volumes: {}",
        img.fragments.len()
    );
    let vols: std::collections::BTreeSet<_> =
        img.fragments.iter().map(|f| f.volume.clone()).collect();
    assert_eq!(vols.len(), img.fragments.len());
    assert_eq!(read_all(&s, &img).unwrap(), bytes);
    let r = ImageReader::open(&s.library, img.clone()).unwrap();
    assert_eq!(
        r.read_at(3_000_000, 10).unwrap(),
        bytes[3_000_000..3_000_010]
    );
    assert!(img.key_tag.is_some());
    for i in 0..s.library.drives.count() {
        assert!(
            !s.library.drives.holds_key(i),
            "idle drive {i} holds no key"
        );
    }
}

#[test]
fn empty_and_clear_images() {
    let (_d, s) = store(8 << 20);
    let img = write(&s, "Clear", "empty", b"");
    assert_eq!(read_all(&s, &img).unwrap(), b"");
    let bytes = data(300_000, 2);
    let img = write(&s, "Clear", "c", &bytes);
    assert!(img.key_tag.is_none());
    assert_eq!(read_all(&s, &img).unwrap(), bytes);
}

#[test]
fn flipped_byte_fails_only_the_affected_block() {
    let (_d, s) = store(8 << 20);
    for pool in ["ENCR_F", "Clear"] {
        let bytes = data(1 << 20, 3);
        let img = write(&s, pool, "x", &bytes);
        let f = &img.fragments[0];
        let path = s.library.volume_path(&f.volume).unwrap();
        let mut vol = std::fs::read(&path).unwrap();
        let at = (f.data_offset + super::format::block_stride(img.block_size) + 1000) as usize;
        vol[at] ^= 1;
        std::fs::write(&path, &vol).unwrap();
        let r = ImageReader::open(&s.library, img.clone()).unwrap();
        assert_eq!(
            r.read_at(0, 1000).unwrap(),
            bytes[..1000],
            "block 0 intact in {pool}"
        );
        let e = r.read_at(300_000, 10).unwrap_err();
        assert!(
            matches!(e, TapeError::Integrity { block: 1, .. }),
            "{pool}: {e}"
        );
        assert!(e.to_string().contains(&f.volume));
        assert_eq!(r.read_at(600_000, 10).unwrap(), bytes[600_000..600_010]);
    }
}

#[test]
fn truncated_volume_is_detected() {
    let (_d, s) = store(8 << 20);
    let bytes = data(600_000, 4);
    let img = write(&s, "ENCR_F", "t", &bytes);
    let path = s.library.volume_path(&img.fragments[0].volume).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 200)
        .unwrap();
    assert!(matches!(
        read_all(&s, &img),
        Err(TapeError::Integrity { .. })
    ));
}

#[test]
fn abandoned_writer_commits_nothing_and_its_tail_is_cut() {
    let (_d, s) = store(8 << 20);
    let first = write(&s, "ENCR_F", "a", &data(400_000, 5));
    let mut w = ImageWriter::begin(&s.library, target(&s, "ENCR_F", "dead")).unwrap();
    w.write_at(0, &data(700_000, 6)).unwrap();
    drop(w);
    let parent = s.catalog.lookup(POOLS_INO, "ENCR_F").unwrap().unwrap().ino;
    assert!(s.catalog.lookup(parent, "dead").unwrap().is_none());
    let second = write(&s, "ENCR_F", "b", &data(100_000, 7));
    assert_eq!(second.fragments[0].volume, first.fragments[0].volume);
    assert_eq!(read_all(&s, &first).unwrap(), data(400_000, 5));
    assert_eq!(read_all(&s, &second).unwrap(), data(100_000, 7));
}

#[test]
fn non_sequential_write_is_refused_and_holes_fill_with_zeros() {
    let (_d, s) = store(8 << 20);
    let mut w = ImageWriter::begin(&s.library, target(&s, "Clear", "h")).unwrap();
    w.write_at(0, b"abc").unwrap();
    assert!(matches!(
        w.write_at(1, b"x"),
        Err(TapeError::NotSequential {
            offset: 1,
            end: 3,
            ..
        })
    ));
    w.write_at(10, b"z").unwrap();
    let (img, _) = w.finish().unwrap().unwrap();
    assert_eq!(read_all(&s, &img).unwrap(), b"abc\0\0\0\0\0\0\0z");
}

#[test]
fn key_state_governs_reads_and_writes() {
    let (_d, s) = store(8 << 20);
    let img = write(&s, "ENCR_F", "k", &data(1000, 8));
    let set = |st| {
        s.keys
            .keystore()
            .write(|ks| ks.modify_key("ENCR_F", "k1", Some(st), None, None))
            .unwrap()
    };
    set(KeyState::Inactive);
    assert_eq!(
        read_all(&s, &img).unwrap(),
        data(1000, 8),
        "inactive still decrypts"
    );
    let e = ImageWriter::begin(&s.library, target(&s, "ENCR_F", "n"))
        .err()
        .unwrap();
    assert!(
        matches!(&e, TapeError::Kms { source, .. } if source.is_missing_key()),
        "{e}"
    );
    set(KeyState::Deprecated);
    let e = read_all(&s, &img).unwrap_err();
    assert!(
        matches!(&e, TapeError::Kms { source, .. } if source.is_missing_key()),
        "{e}"
    );
    set(KeyState::Inactive);
    assert_eq!(read_all(&s, &img).unwrap(), data(1000, 8));
}

#[test]
fn library_full_is_no_scratch() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    Store::init(
        &dir,
        InitOptions {
            volume_capacity: Some(1 << 20),
            max_volumes: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let s = Arc::new(Store::open(&dir, Unlock::default()).unwrap());
    s.catalog
        .make_entry(POOLS_INO, "P", "P", InodeKind::Pool, attrs())
        .unwrap();
    let mut w = ImageWriter::begin(&s.library, target(&s, "P", "f")).unwrap();
    let e = w.write_at(0, &data(3 << 20, 9)).unwrap_err();
    assert!(matches!(e, TapeError::NoScratch { .. }), "{e}");
}

/// A new version of an image replaces the old one in the transaction that
/// commits it: no crash between the two leaves the old version holding its
/// volumes (or, in an LSU, its segments) with no name pointing at it.
#[test]
fn a_replaced_image_leaves_the_catalog_in_the_commit_of_its_replacement() {
    let (_d, s) = store(8 << 20);
    let first = write(&s, "Clear", "v", &data(1000, 1));
    let second = write(&s, "Clear", "v", &data(2000, 2));
    assert!(
        s.catalog.image(first.id).unwrap().is_none(),
        "the old version is gone with the commit of the new"
    );
    let vol = s
        .catalog
        .volume(&second.fragments[0].volume)
        .unwrap()
        .unwrap();
    assert_eq!(vol.images, 1, "the volume counts the new version only");
}

/// Every way a request can fall on blocks and fragments: whole blocks
/// (decrypted straight into the caller's buffer), parts of blocks at
/// either end (through the block cache), requests across a fragment
/// boundary, past the end; each gives the bytes written, also when two
/// readers of one image ask at once.
#[test]
fn reads_at_any_offset_and_size_give_the_bytes_written() {
    let (_d, s) = store(2 << 20);
    let bytes = data((5 << 20) + 12_345, 3);
    let img = write(&s, "ENCR_F", "r.img", &bytes);
    assert!(img.fragments.len() >= 3, "spans volumes");
    let bs = u64::from(img.block_size);
    let mut asks = vec![
        (0, 1 << 20),
        (bs, 2 * bs),
        (1, bs),
        (bs - 1, 2),
        (7, 5 * bs + 9),
    ];
    for f in &img.fragments[1..] {
        let at = f.image_offset;
        asks.extend([
            (at - 3, 10),
            (at - bs, 2 * bs),
            (at, bs),
            (at - 100, 1 << 20),
        ]);
    }
    asks.extend([(img.size - 5, 100), (img.size, 10), (img.size + 7, 10)]);
    let r = ImageReader::open(&s.library, img.clone()).unwrap();
    let check = |(at, n): (u64, u64)| {
        let n = n as usize;
        let got = r.read_at(at, n).unwrap();
        let from = (at as usize).min(bytes.len());
        let to = (from + n).min(bytes.len());
        assert_eq!(got, bytes[from..to], "{n} bytes at {at}");
    };
    std::thread::scope(|t| {
        t.spawn(|| asks.iter().rev().for_each(|&a| check(a)));
        asks.iter().for_each(|&a| check(a));
    });
    // A reused buffer longer than the answer: only the answer's bytes are written.
    let mut buf = vec![0xAAu8; 300];
    let n = r.read_into(img.size - 100, &mut buf).unwrap();
    assert_eq!(n, 100);
    assert_eq!(buf[..100], bytes[bytes.len() - 100..]);
    assert!(buf[100..].iter().all(|&b| b == 0xAA));
}

/// An image removed from the catalog whose volume was not recycled (the
/// recycle failed, or the daemon died between the two) leaves a labelled
/// volume holding nothing: the next open returns it to scratch.
#[test]
fn a_volume_left_empty_by_an_interrupted_delete_is_recycled_at_open() {
    let (d, s) = store(8 << 20);
    let img = write(&s, "Clear", "v", &data(1000, 1));
    let barcode = img.fragments[0].volume.clone();
    let pool = s.catalog.lookup(POOLS_INO, "Clear").unwrap().unwrap().ino;
    s.catalog.unlink(pool, "v").unwrap();
    let vol = |s: &Store| s.catalog.volume(&barcode).unwrap().unwrap();
    assert_eq!(vol(&s).state, crate::catalog::VolumeState::Active);
    drop(s);
    let s = Store::open(&d.path().join("s"), Unlock::default()).unwrap();
    assert_eq!(vol(&s).state, crate::catalog::VolumeState::Scratch);
    assert!(!s.library.volume_path(&barcode).unwrap().exists());
}

/// A new version written through a name that an unlink took away
/// meanwhile (the writer started at name `a`, then `a` was unlinked and
/// the inode lives on as `b`) lands on the inode under the names it has
/// now: `b` reads the new version, `a` stays gone, the old image is
/// dropped, and the link count is right.
#[test]
fn a_new_version_lands_on_the_inode_whatever_names_it_has_now() {
    let (_d, s) = store(8 << 20);
    let old = write(&s, "Clear", "a", &data(1000, 1));
    let pool = s.catalog.lookup(POOLS_INO, "Clear").unwrap().unwrap().ino;
    let x = s.catalog.lookup(pool, "a").unwrap().unwrap().ino;
    s.catalog.link(x, pool, "b").unwrap();
    // The writer of the new version targets the inode under name `a`...
    let t = WriteTarget {
        ino: x,
        ..target(&s, "Clear", "a")
    };
    let mut w = ImageWriter::begin(&s.library, t).unwrap();
    w.write_at(0, &data(500, 2)).unwrap();
    // ... which is unlinked before it commits.
    assert!(s.catalog.unlink(pool, "a").unwrap().is_none());
    let (new, replaced) = w.finish().unwrap().unwrap();
    assert_eq!(
        replaced.map(|r| r.id),
        Some(old.id),
        "the old version is dropped"
    );
    assert!(
        s.catalog.lookup(pool, "a").unwrap().is_none(),
        "a stays gone"
    );
    let b = s.catalog.lookup(pool, "b").unwrap().unwrap();
    assert_eq!((b.ino, b.kind), (x, InodeKind::Image(new.id)));
    assert_eq!(s.catalog.nlink(x).unwrap(), 1);
    assert!(
        s.catalog.unlink(pool, "b").unwrap().is_some(),
        "the last name frees it"
    );
    assert!(s.catalog.image(new.id).unwrap().is_none());
}

/// Attributes set on a file that was being written and never committed
/// (the daemon died) do not outlive the store's next open: inode numbers
/// are handed out again, and a new file must not inherit them.
#[test]
fn attributes_of_a_file_never_committed_are_swept_at_open() {
    let (d, s) = store(8 << 20);
    let ino = s.catalog.alloc_ino();
    s.catalog
        .set_xattr(ino, "user.secret", b"alice", crate::catalog::XattrSet::Any)
        .unwrap();
    drop(s);
    let s = Store::open(&d.path().join("s"), Unlock::default()).unwrap();
    assert!(s.catalog.xattr_names(ino).unwrap().is_empty());
}
