//! Helpers of the unit tests: stores made with `init` and opened as the
//! daemon opens them, in a temporary directory, and the heap scanner.

pub mod heapscan;

use crate::catalog::{FileAttrs, KekPolicy, LsuMode};
use crate::kms::{NewKey, Unlock};
use crate::msdp::CreateLsu;
use crate::store::{InitOptions, Store};

/// `n` bytes of a xorshift stream: the same seed, the same bytes; seeds
/// that differ after `| 1` give streams that share no run.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Attributes of a directory made by a test.
pub fn dir_attrs() -> FileAttrs {
    FileAttrs {
        mode: 0o40755,
        uid: 0,
        gid: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
    }
}

/// Where a test writes image `name` in pool `pool` (made if missing).
pub fn write_target(s: &Store, pool: &str, name: &str) -> crate::pipeline::WriteTarget {
    use crate::catalog::{InodeKind, POOLS_INO};
    let parent = match s.catalog.lookup(POOLS_INO, pool).unwrap() {
        Some(p) => p.ino,
        None => {
            s.catalog
                .make_entry(POOLS_INO, pool, pool, InodeKind::Pool, dir_attrs())
                .unwrap()
                .ino
        }
    };
    crate::pipeline::WriteTarget {
        ino: s.catalog.alloc_ino(),
        parent,
        name: name.into(),
        pool: pool.into(),
        path: name.into(),
        attrs: dir_attrs(),
    }
}

/// A new store with key group `KG` (one active random key).
pub fn store() -> (tempfile::TempDir, Store) {
    store_with(|_| {})
}

/// [`store`], opened with its config changed by `adjust`.
pub fn store_with(adjust: impl FnOnce(&mut crate::store::Config)) -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("s");
    Store::init(&dir, InitOptions::default()).unwrap();
    let s = Store::open_with(&dir, Unlock::default(), adjust).unwrap();
    s.keys.keystore().write(|ks| {
        ks.create_group("KG", "").unwrap();
        ks.create_key(NewKey {
            group: "KG",
            name: "root",
            description: "",
            passphrase: None,
            activate: true,
        })
        .unwrap();
    });
    (t, s)
}

/// [`store`] with a KMS-mode LSU `L` in key group `KG`.
pub fn store_with_lsu(policy: KekPolicy) -> (tempfile::TempDir, Store) {
    let (t, s) = store();
    add_lsu(&s, policy);
    (t, s)
}

/// Creates the KMS-mode LSU `L` in key group `KG` of a [`store`].
pub fn add_lsu(s: &Store, policy: KekPolicy) {
    s.msdp
        .create(
            CreateLsu {
                name: "L".into(),
                mode: LsuMode::Kms,
                key_group: Some("KG".into()),
                policy,
                cloud: None,
            },
            dir_attrs(),
        )
        .unwrap();
}
