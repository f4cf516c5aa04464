//! Cloud LSUs: containers, recipes and the key dictionary in an
//! S3-compatible bucket (a real moto server on loopback), written with cp
//! and tar through a real mount and read back with a cold local cache.

mod common;

use std::collections::HashSet;

use common::s3::S3Server;
use common::{TestStore, cp, holds_any, random_file, sh_ok, sha256, tree_contains};
use kmsfs::kms::Unlock;
use kmsfs::store::Store;

/// A store with an encrypted cloud LSU `c1` in bucket `bucket`, prefix `site1`.
fn cloud_store(s3: &S3Server, bucket: &str) -> TestStore {
    let s = TestStore::new(&[]);
    s3.make_bucket(bucket);
    s.group_with_key("KG");
    let creds = S3Server::credentials_file(s.tmp.path());
    s.ok(&[
        "lsu",
        "create",
        "c1",
        "--kms",
        "--key-group",
        "KG",
        "--cloud",
        &format!("s3://{bucket}/site1"),
        "--endpoint",
        &s3.endpoint(),
        "--credentials-file",
        creds.to_str().unwrap(),
    ]);
    s
}

#[test]
fn images_go_to_the_bucket_and_come_back_with_a_cold_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    let s = cloud_store(&s3, "backups-one");
    let f = s.path("f");
    random_file(&f, 5);
    let marker = "KMSFS-CLOUD-PLAINTEXT-MARKER-4711";
    sh_ok(&format!(
        "yes '{marker}' | head -c 1M > '{}'",
        s.path("text").display()
    ));
    let m = s.mount("");
    cp(&s.path("text"), &m.p("msdp/c1/text"));
    cp(&f, &m.p("msdp/c1/a"));
    let after_one = s3.list("backups-one", "site1/containers/");
    cp(&f, &m.p("msdp/c1/b"));
    sh_ok(&format!(
        "mkdir -p '{t}/src' && head -c 200000 /dev/urandom > '{t}/src/x' && tar -C '{t}' -cf '{}' src",
        m.p("msdp/c1/set.tar").display(),
        t = s.tmp.path().display()
    ));
    let want_tar = sha256(&m.p("msdp/c1/set.tar"));
    m.unmount();
    // Dedup across images: the second copy uploaded (almost) nothing.
    let objects = s3.list("backups-one", "site1/");
    let bytes = |prefix: &str| -> u64 {
        objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|o| o.1)
            .sum()
    };
    let first: u64 = after_one.iter().map(|o| o.1).sum();
    assert!(first >= 5 << 20, "{after_one:?}");
    assert!(bytes("site1/containers/") - first < 1 << 20, "{objects:?}");
    assert!(
        objects.iter().any(|(k, _)| k == "site1/keydict.kkd"),
        "{objects:?}"
    );
    assert_eq!(
        objects
            .iter()
            .filter(|(k, _)| k.starts_with("site1/recipes/"))
            .count(),
        4,
        "{objects:?}"
    );
    // No plaintext and no key in clear in the bucket.
    let dump = tmp.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    s3.dump("backups-one", &dump);
    assert!(
        !tree_contains(&dump, marker.as_bytes()),
        "plaintext in the bucket"
    );
    let store = Store::open(&s.dir, Unlock::default()).unwrap();
    let keys = store.msdp.unwrapped_keys("c1").unwrap();
    drop(store);
    assert!(keys.len() > 10, "{}", keys.len());
    let raw: HashSet<Vec<u8>> = keys.iter().map(|k| k.expose_secret().to_vec()).collect();
    assert_eq!(
        holds_any(&dump, &raw, 32),
        None,
        "a key in clear in the bucket"
    );
    // A cold cache: the local copies are gone, everything comes back.
    sh_ok(&format!(
        "rm -f '{}'/*.kct",
        s.dir.join("lsu/c1/containers").display()
    ));
    let m = s.mount("");
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f));
    assert_eq!(sha256(&m.p("msdp/c1/b")), sha256(&f));
    assert_eq!(sha256(&m.p("msdp/c1/set.tar")), want_tar);
    // gc gives back the objects no image needs.
    std::fs::remove_file(m.p("msdp/c1/a")).unwrap();
    std::fs::remove_file(m.p("msdp/c1/b")).unwrap();
    std::fs::remove_file(m.p("msdp/c1/text")).unwrap();
    s.ok(&["lsu", "gc", "c1"]);
    let left = s3.list("backups-one", "site1/containers/");
    let left_bytes: u64 = left.iter().map(|o| o.1).sum();
    assert!(left_bytes < 1 << 20, "{left:?}");
    assert_eq!(s3.list("backups-one", "site1/recipes/").len(), 1);
    assert_eq!(sha256(&m.p("msdp/c1/set.tar")), want_tar);
    m.unmount();
}

#[test]
fn a_bucket_prefix_holding_an_lsu_is_not_taken_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    let s = cloud_store(&s3, "backups-two");
    let m = s.mount("");
    cp(&s.dir.join("kmsfs.conf"), &m.p("msdp/c1/conf"));
    m.unmount();
    let creds = S3Server::credentials_file(s.tmp.path());
    let err = s.fails(&[
        "lsu",
        "create",
        "c2",
        "--kms",
        "--key-group",
        "KG",
        "--cloud",
        "s3://backups-two/site1",
        "--endpoint",
        &s3.endpoint(),
        "--credentials-file",
        creds.to_str().unwrap(),
    ]);
    assert!(err.contains("holds an LSU already"), "{err}");
    assert!(!err.contains("testing-secret"), "{err}");
    // Nothing is left behind by the refusal: c2 is not a cloud LSU now.
    assert!(!s.dir.join("lsu/c2/cloud.json").exists());
}

/// A legacy-mode cloud LSU converted to KMS mode: the converted
/// containers are in the bucket before the index names them (a cold cache
/// reads everything back), and backups leave no more on local disk than
/// the cache holds.
#[test]
fn conversion_uploads_and_the_local_cache_stays_within_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    s3.make_bucket("backups-three");
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    let creds = S3Server::credentials_file(s.tmp.path());
    s.ok(&[
        "lsu",
        "create",
        "c1",
        "--legacy-kms",
        "--key-group",
        "KG",
        "--cloud",
        "s3://backups-three/x",
        "--endpoint",
        &s3.endpoint(),
        "--credentials-file",
        creds.to_str().unwrap(),
        "--cache-size",
        "1M",
    ]);
    let f = s.path("f");
    random_file(&f, 6);
    let m = s.mount("");
    cp(&f, &m.p("msdp/c1/a"));
    let local = || -> u64 {
        std::fs::read_dir(s.dir.join("lsu/c1/containers"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    assert!(
        local() <= 1 << 20,
        "{} bytes of containers kept locally",
        local()
    );
    s.ok(&["lsu", "convert", "c1"]);
    assert!(s.ok(&["lsu", "getmode", "c1"]).contains("KMS mode"));
    m.unmount();
    sh_ok(&format!(
        "rm -f '{}'/*.kct",
        s.dir.join("lsu/c1/containers").display()
    ));
    let m = s.mount("");
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f));
    m.unmount();
}
