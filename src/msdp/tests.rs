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
