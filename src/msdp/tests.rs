//! The operator operations on an LSU through the store API (no mount):
//! each returns a typed report, and each leaves every committed image
//! readable byte for byte.

use crate::catalog::{FileAttrs, ImageRec, KekPolicy, MSDP_INO};
use crate::pipeline::{ImageSink, WriteTarget};
use crate::store::Store;
use crate::testing::{pseudo_random, store_with_lsu};
use crate::util::report::CheckReport;

use super::{LsuReader, LsuWriter};

fn file_attrs() -> FileAttrs {
    FileAttrs {
        mode: 0o100644,
        ..crate::testing::dir_attrs()
    }
}

fn write(s: &Store, name: &str, data: &[u8]) -> ImageRec {
    let parent = s.catalog.lookup(MSDP_INO, "L").unwrap().unwrap().ino;
    let target = WriteTarget {
        ino: s.catalog.alloc_ino(),
        parent,
        name: name.into(),
        pool: "msdp/L".into(),
        path: name.into(),
        attrs: file_attrs(),
    };
    let mut w = LsuWriter::begin(&s.msdp, target).unwrap();
    for c in data.chunks(256 * 1024) {
        w.append(c).unwrap();
    }
    w.finish().unwrap().expect("committed").0
}

fn read(s: &Store, img: &ImageRec) -> Vec<u8> {
    LsuReader::open(&s.msdp, img.clone())
        .unwrap()
        .read_at(0, img.size as usize)
        .unwrap()
}

#[test]
fn rotate_rewrap_gc_and_check_report_what_they_did_and_keep_images_readable() {
    let (_t, s) = store_with_lsu(KekPolicy::default());
    let (a, b) = (pseudo_random(3 << 20, 1), pseudo_random(2 << 20, 2));
    let img_a = write(&s, "a", &a);

    let kek = s.msdp.rotate_kek("L").unwrap();
    assert_eq!(kek.id, 2);
    let img_b = write(&s, "b", &b);
    let dict = s.msdp.keydict("L").unwrap();
    assert_eq!(dict.len(), 2, "two KEKs in the key dictionary");
    assert_eq!(
        dict.iter().filter(|k| k.state == "active").count(),
        1,
        "{dict:?}"
    );
    assert!(
        dict.iter().all(|k| k.segments > 0),
        "each KEK sealed data: {dict:?}"
    );
    let mode = s.msdp.getmode("L").unwrap();
    assert_eq!((mode.mode.as_str(), mode.active_kek), ("kms", Some(2)));

    // A new root key in the LSU's key group: rewrap moves every KEK to it.
    s.keys
        .admin()
        .unwrap()
        .write(|ks| {
            ks.create_key(crate::kms::NewKey {
                group: "KG",
                name: "root2",
                description: "",
                passphrase: None,
                activate: true,
            })
        })
        .unwrap();
    let rw = s.msdp.rewrap("L").unwrap();
    assert_eq!(rw.keks, 2);
    let active_root = s.keys.list_groups().unwrap()[0].active_tag.clone();
    assert_eq!(Some(rw.root), active_root);

    s.msdp.forget_keys();
    assert_eq!(read(&s, &img_a), a);
    assert_eq!(read(&s, &img_b), b);

    let parent = s.catalog.lookup(MSDP_INO, "L").unwrap().unwrap().ino;
    s.catalog.unlink(parent, "b").unwrap();
    let mut judged = 0;
    let gc = s.msdp.reclaim("L", |done, _| judged = done).unwrap();
    assert!(gc.dead_segments > 0, "{gc:?}");
    assert!(gc.bytes_after < gc.bytes_before, "{gc:?}");
    assert!(judged > 0, "progress reported");
    let again = s.msdp.reclaim("L", |_, _| {}).unwrap();
    assert_eq!(
        (again.dead_segments, again.bytes_after),
        (0, gc.bytes_after)
    );

    s.msdp.forget_keys();
    assert_eq!(read(&s, &img_a), a);
    let mut report = CheckReport::default();
    s.msdp.check_into(&mut report).unwrap();
    assert_eq!(report.images, 1);
    assert!(
        report.damaged.is_empty() && report.unverified.is_empty(),
        "{report:?}"
    );
}

/// An image of several batches (the chunker hands each to the sealing
/// stage while it cuts the next), with a commit in the middle: every
/// byte reads back, at any offset and size (whole segments go straight
/// into the caller's buffer, parts through the cache), and the image
/// digest is the keyed digest of the whole stream.
#[test]
fn a_multi_batch_image_reads_back_at_any_offset_and_keeps_its_digest() {
    let (_t, s) = store_with_lsu(KekPolicy::default());
    let data = pseudo_random((13 << 20) + 777, 5);
    let parent = s.catalog.lookup(MSDP_INO, "L").unwrap().unwrap().ino;
    let target = WriteTarget {
        ino: s.catalog.alloc_ino(),
        parent,
        name: "m".into(),
        pool: "msdp/L".into(),
        path: "m".into(),
        attrs: file_attrs(),
    };
    let mut w = LsuWriter::begin(&s.msdp, target).unwrap();
    let (first, rest) = data.split_at(5 << 20);
    first.chunks(1_000_003).for_each(|c| w.append(c).unwrap());
    let mid = w.checkpoint().unwrap().expect("committed").0;
    assert_eq!(read(&s, &mid), first);
    rest.chunks(1 << 20).for_each(|c| w.append(c).unwrap());
    let img = w.finish().unwrap().expect("committed").0;
    assert_eq!(read(&s, &img), data);

    let mut d = crate::crypto::ImageDigest::new(&s.library.digest_key);
    d.update(&data);
    assert_eq!(img.digest, Some(d.finalize()));

    let r = LsuReader::open(&s.msdp, img.clone()).unwrap();
    let recipe = s.catalog.recipe(img.id).unwrap().unwrap();
    let mut at = 0u64;
    let mut asks = vec![(0u64, 1usize << 20), (img.size - 3, 10), (img.size, 5)];
    for seg in recipe.iter().take(40) {
        asks.extend([
            (at, seg.len as usize),
            (at + 1, seg.len as usize),
            (at.saturating_sub(5), 10),
        ]);
        at += u64::from(seg.len);
    }
    let check = |&(at, n): &(u64, usize)| {
        let got = r.read_at(at, n).unwrap();
        let from = (at as usize).min(data.len());
        let to = (from + n).min(data.len());
        assert_eq!(got, data[from..to], "{n} bytes at {at}");
    };
    std::thread::scope(|t| {
        t.spawn(|| asks.iter().rev().for_each(check));
        asks.iter().for_each(check);
    });
}

/// The sealing stage fails (the LSU's container directory is gone): the
/// failure comes back from a later write or the commit, nothing is
/// committed, the writer's pins are gone once it is dropped, and the LSU
/// takes the next image once the directory is back.
#[test]
fn a_failure_of_the_sealing_stage_fails_the_image_and_commits_nothing() {
    let (_t, s) = store_with_lsu(KekPolicy::default());
    let state = s.msdp.state("L").unwrap();
    std::fs::remove_dir_all(&state.dir).unwrap();
    std::fs::write(&state.dir, b"not a directory").unwrap();
    let parent = s.catalog.lookup(MSDP_INO, "L").unwrap().unwrap().ino;
    let target = WriteTarget {
        ino: s.catalog.alloc_ino(),
        parent,
        name: "f".into(),
        pool: "msdp/L".into(),
        path: "f".into(),
        attrs: file_attrs(),
    };
    let data = pseudo_random(12 << 20, 6);
    let e = {
        let mut w = LsuWriter::begin(&s.msdp, target).unwrap();
        let failed = data
            .chunks(1 << 20)
            .map(|c| w.append(c))
            .find_map(Result::err);
        match failed {
            Some(e) => e,
            None => match w.finish() {
                Err(e) => e,
                Ok(_) => panic!("the commit fails"),
            },
        }
    };
    assert!(e.to_string().contains("container"), "{e}");
    assert!(s.catalog.lookup(parent, "f").unwrap().is_none());
    let inflight = state.inflight.lock();
    assert!(inflight.fps.is_empty() && inflight.containers.is_empty());
    drop(inflight);

    std::fs::remove_file(&state.dir).unwrap();
    std::fs::create_dir(&state.dir).unwrap();
    let img = write(&s, "g", &data);
    assert_eq!(read(&s, &img), data);
}

/// A catalog whose recipe and index disagree on a segment's length (the
/// totals agree) is refused at open with an error naming the image, not
/// a panic of the daemon when a read falls inside that segment.
#[test]
fn a_recipe_that_disagrees_with_the_index_is_refused_at_open() {
    use crate::catalog::{Commit, LsuCommit, SegRef};
    let (_t, s) = store_with_lsu(KekPolicy::default());
    let a = write(&s, "a", &pseudo_random(1 << 20, 8));
    let recipe = s.catalog.recipe(a.id).unwrap().unwrap();
    assert!(recipe.len() >= 2, "several segments");
    // The first segment claimed 100 bytes longer, the second 100 shorter.
    let mut forged: Vec<SegRef> = recipe.clone();
    forged[0].len += 100;
    forged[1].len -= 100;
    let img = ImageRec {
        id: 99,
        path: "b".into(),
        ..a.clone()
    };
    let parent = s.catalog.lookup(MSDP_INO, "L").unwrap().unwrap().ino;
    s.catalog
        .commit_lsu_image(
            Commit {
                ino: s.catalog.alloc_ino(),
                parent,
                name: "b",
                attrs: file_attrs(),
                image: &img,
                volumes: &[],
                replace: true,
                files: None,
            },
            LsuCommit {
                lsu: "L",
                recipe: &forged,
                new_segments: &Default::default(),
                containers: &[],
                kek_usage: None,
                legacy_tag: None,
            },
        )
        .unwrap();
    let e = LsuReader::open(&s.msdp, img)
        .err()
        .expect("refused at open");
    let text = e.to_string();
    assert!(
        text.contains("image b") && text.contains("segment 0"),
        "{text}"
    );
}

/// A tape read that waits for a drive (every drive busy with backups)
/// waits on its own thread: LSU reads, which share the thread pool that
/// decrypts, go on meanwhile instead of waiting until the tape read gets
/// a drive or gives up.
#[test]
fn a_tape_read_waiting_for_a_drive_does_not_hold_up_lsu_reads() {
    use crate::tape::ImageReader;
    let (_t, s) = crate::testing::store_with(|c| {
        c.drives = 1;
        c.drive_wait_secs = 5;
    });
    crate::testing::add_lsu(&s, KekPolicy::default());
    let data = pseudo_random(2 << 20, 9);
    let lsu_img = write(&s, "l", &data);
    let mut w =
        crate::tape::ImageWriter::begin(&s.library, crate::testing::write_target(&s, "Clear", "t"))
            .unwrap();
    w.write_at(0, &data).unwrap();
    let tape_img = w.finish().unwrap().expect("committed").0;

    let busy = s.library.drives.acquire("a backup").unwrap();
    let (tx, order) = std::sync::mpsc::channel();
    std::thread::scope(|t| {
        let tape = ImageReader::open(&s.library, tape_img).unwrap();
        let tx2 = tx.clone();
        t.spawn(move || {
            let r = tape.read_at(0, 1 << 20);
            tx2.send(("tape", r.is_ok())).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let lsu = LsuReader::open(&s.msdp, lsu_img.clone()).unwrap();
        let got = lsu.read_at(0, 1 << 20).unwrap();
        tx.send(("lsu", got == data[..1 << 20])).unwrap();
        drop(busy);
    });
    let order: Vec<_> = order.try_iter().collect();
    assert_eq!(order, [("lsu", true), ("tape", true)]);
}

/// An index entry whose record length does not match its segment (a
/// forged catalog asking for a 4 GiB record) is refused at open, before
/// any reader sizes a buffer by it.
#[test]
fn an_index_entry_with_a_forged_record_length_is_refused_at_open() {
    use crate::catalog::Move;
    let (_t, s) = store_with_lsu(KekPolicy::default());
    let a = write(&s, "a", &pseudo_random(1 << 20, 10));
    let recipe = s.catalog.recipe(a.id).unwrap().unwrap();
    let fp = recipe[0].fp;
    let mut to = s.catalog.segments("L", &[fp]).unwrap()[0].clone().unwrap();
    to.len = u32::MAX;
    s.catalog
        .relocate("L", &[Move { fp, to }], &[], &[])
        .unwrap();
    let e = LsuReader::open(&s.msdp, a).err().expect("refused at open");
    assert!(e.to_string().contains("segment 0"), "{e}");
}

/// Every path that reads a record by its index entry (reads, gc,
/// conversion, audit) refuses a record length no container holds before
/// it sizes a buffer by it: a forged index cannot make kmsfs allocate and
/// clear gigabytes.
#[test]
fn a_record_longer_than_any_container_is_refused_before_it_is_read() {
    let (_t, s) = store_with_lsu(KekPolicy::default());
    let a = write(&s, "a", &pseudo_random(1 << 20, 11));
    let fp = s.catalog.recipe(a.id).unwrap().unwrap()[0].fp;
    let loc = s.catalog.segments("L", &[fp]).unwrap()[0].clone().unwrap();
    let state = s.msdp.state("L").unwrap();
    match super::container::read_record(&state, loc.container, loc.offset, u32::MAX) {
        Err(super::container::RecordError::Damaged(why)) => {
            assert!(why.contains("longer than"), "{why}")
        }
        Err(e) => panic!("refused, but not as damage: {e:?}"),
        Ok(_) => panic!("a 4 GiB record was read"),
    }
}
