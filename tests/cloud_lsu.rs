//! Cloud LSUs: containers, recipes and the key dictionary in an
//! S3-compatible bucket (a real moto server on loopback), written with cp
//! and tar through a real mount and read back with a cold local cache.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::s3::S3Server;
use common::{TestStore, cp, holds_any, random_file, sh_ok, sha256, tree_contains};
use kmsfs::kms::Unlock;
use kmsfs::store::Store;

/// A store with an encrypted cloud LSU `c1` in bucket `bucket`, prefix `site1`.
fn cloud_store(s3: &S3Server, bucket: &str) -> TestStore {
    let s = TestStore::new(&[]);
    s3.make_bucket(bucket);
    s.group_with_key("KG");
    s.ok(&args(&create_args(
        &s,
        s3,
        "c1",
        "--kms",
        &format!("s3://{bucket}/site1"),
        &[],
    )));
    s
}

/// `lsu create NAME MODE --key-group KG --cloud URL …` on the server `s3`
/// (credentials file made in the store's folder), then `extra`.
fn create_args(
    s: &TestStore,
    s3: &S3Server,
    name: &str,
    mode: &str,
    url: &str,
    extra: &[&str],
) -> Vec<String> {
    let creds = S3Server::credentials_file(s.tmp.path());
    let mut v: Vec<String> = [
        "lsu",
        "create",
        name,
        mode,
        "--key-group",
        "KG",
        "--cloud",
        url,
    ]
    .map(String::from)
    .to_vec();
    v.extend(bucket_args(s3, &creds));
    v.extend(extra.iter().map(|e| e.to_string()));
    v
}

/// `--endpoint URL --credentials-file FILE` of the server `s3`.
fn bucket_args(s3: &S3Server, creds: &Path) -> Vec<String> {
    vec![
        "--endpoint".into(),
        s3.endpoint(),
        "--credentials-file".into(),
        creds.to_str().unwrap().into(),
    ]
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
    // Where each LSU lives, asked of the running daemon.
    s.ok(&["lsu", "create", "l1"]);
    let list = s.ok(&["lsu", "list"]);
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{list}"))
            .to_string()
    };
    assert!(row("LSU").contains("LOCATION"), "{list}");
    assert!(
        row("c1").contains(&format!("s3://backups-one/site1 at {}", s3.endpoint())),
        "{list}"
    );
    assert!(row("l1").ends_with(" local"), "{list}");
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["lsu", "list", "--json"])).unwrap();
    assert_eq!(json[0]["location"], "s3://backups-one/site1", "{json}");
    assert_eq!(json[0]["endpoint"], s3.endpoint().as_str(), "{json}");
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
    let err = s.fails(&args(&create_args(
        &s,
        &s3,
        "c2",
        "--kms",
        "s3://backups-two/site1",
        &[],
    )));
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
    let (_tmp, _s3, s, f) = small_cache_site("--legacy-kms", "backups-three", 6);
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

/// The backup server is lost: a new store, the keys (export and import)
/// and the bucket bring every image back byte-identical, while mounted;
/// the recovered LSU stays in the bucket and takes new backups there.
#[test]
fn the_bucket_and_the_keys_are_enough_after_the_server_is_lost() {
    let (_tmp, s3, a, f1, f2) = site("backups-dr", 5);
    let m = a.mount("");
    cp(&f1, &m.p("msdp/c1/a"));
    sh_ok(&format!("mkdir '{}'", m.p("msdp/c1/daily").display()));
    cp(&f1, &m.p("msdp/c1/daily/b"));
    sh_ok(&format!(
        "mkdir -p '{t}/src' && head -c 300000 /dev/urandom > '{t}/src/x' && tar -C '{t}' -cf '{}' src",
        m.p("msdp/c1/daily/set.tar").display(),
        t = a.tmp.path().display()
    ));
    a.ok(&["lsu", "rotate-kek", "c1"]);
    sh_ok(&format!(
        "rsync '{}' '{}/'",
        f2.display(),
        m.p("msdp/c1/daily").display()
    ));
    let names = ["a", "daily/b", "daily/set.tar", "daily/f2"];
    let sums: Vec<(&str, String)> = names
        .iter()
        .map(|n| (*n, sha256(&m.p(&format!("msdp/c1/{n}")))))
        .collect();
    m.unmount();
    let keys = a.export_keys();
    let creds = S3Server::credentials_file(a.tmp.path());
    std::fs::remove_dir_all(&a.dir).unwrap();

    let b = TestStore::new(&[]);
    let from = |url: &str| recover_args(&s3, &creds, url);
    // Without --endpoint: a usage error; a prefix holding no LSU: named.
    let err = b.fails(&["lsu", "recover", "c1", "--from", "s3://backups-dr/site1"]);
    assert!(err.contains("--endpoint"), "{err}");
    let err = b.fails(&args(&from("s3://backups-dr/nothing-here")));
    assert!(
        err.contains("s3://backups-dr/nothing-here") && err.contains("no key dictionary"),
        "{err}"
    );
    b.import_keys(&keys);
    let m = b.mount("");
    let out = b.ok(&args(&from("s3://backups-dr/site1")));
    assert!(out.contains("4 images"), "{out}");
    for (n, want) in &sums {
        assert_eq!(&sha256(&m.p(&format!("msdp/c1/{n}"))), want, "{n}");
    }
    // Run again (as after an interruption): nothing to do, and the LSU
    // still writes (its claim is kept, not replaced under the daemon).
    let again = b.ok(&args(&from("s3://backups-dr/site1")));
    assert!(again.contains("4 were back already"), "{again}");
    // Another prefix for the same name: refused.
    let err = b.fails(&args(&from("s3://backups-dr/elsewhere")));
    assert!(
        err.contains("no key dictionary") || err.contains("s3://backups-dr/site1"),
        "{err}"
    );
    // A cloud LSU of the same prefix: new backups go to the bucket.
    let before = s3.list("backups-dr", "site1/containers/").len();
    cp(&f2, &m.p("msdp/c1/new"));
    let mut f3 = std::fs::read(&f2).unwrap();
    f3.extend_from_slice(&std::fs::read(&f1).unwrap()[..1 << 20]);
    std::fs::write(a.path("f3"), &f3).unwrap();
    cp(&a.path("f3"), &m.p("msdp/c1/new2"));
    assert!(s3.list("backups-dr", "site1/containers/").len() > before);
    m.unmount();
    b.ok(&["fsck"]);
    // Cold: nothing of the LSU's containers on local disk.
    sh_ok(&format!(
        "rm -f '{}'/*.kct",
        b.dir.join("lsu/c1/containers").display()
    ));
    let m = b.mount("");
    for (n, want) in &sums {
        assert_eq!(&sha256(&m.p(&format!("msdp/c1/{n}"))), want, "{n}");
    }
    assert_eq!(sha256(&m.p("msdp/c1/new2")), sha256(&a.path("f3")));
    m.unmount();
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The object store stops answering: cached images are still read, an
/// image not cached fails within the configured timeout with a clear
/// error (not "damaged"), a new image fails cleanly and leaves no name,
/// the rest of the mount is served, and everything works again by itself
/// once the store answers.
#[test]
fn an_unreachable_bucket_fails_cleanly_and_recovers_by_itself() {
    let (_tmp, s3, s) = outage_site("backups-out");
    let (f, g, h) = (s.path("f"), s.path("g"), s.path("h"));
    random_file(&f, 3);
    random_file(&g, 2);
    random_file(&h, 2);
    let m = s.mount("");
    cp(&f, &m.p("msdp/c1/a"));
    m.unmount();
    sh_ok(&format!(
        "rm -f '{}'/*.kct",
        s.dir.join("lsu/c1/containers").display()
    ));
    let m = s.mount("");
    cp(&g, &m.p("msdp/c1/b"));

    s3.pause();
    let t = std::time::Instant::now();
    assert_eq!(sha256(&m.p("msdp/c1/b")), sha256(&g), "cached data is read");
    let (ok, _, err) = common::sh(&format!("cat '{}' > /dev/null", m.p("msdp/c1/a").display()));
    assert!(!ok);
    assert!(err.contains("timed out"), "{err}");
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("unreachable"))
        .unwrap_or_else(|| panic!("no error naming the store in the log:\n{log}"));
    assert!(
        line.contains(&s3.endpoint()) && line.contains("x/containers/"),
        "{line}"
    );
    assert!(!log.contains("integrity check failed"), "{log}");
    let (ok, _, _) = common::sh(&format!(
        "cp '{}' '{}'",
        h.display(),
        m.p("msdp/c1/c").display()
    ));
    assert!(!ok, "a backup into an unreachable bucket must fail");
    assert!(!m.p("msdp/c1/c").exists(), "a failed image keeps no name");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        t.elapsed()
    );
    // Everything else is served.
    cp(&h, &m.p("msdp/l1/x"));
    assert_eq!(sha256(&m.p("msdp/l1/x")), sha256(&h));

    s3.resume();
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f));
    cp(&h, &m.p("msdp/c1/c"));
    assert_eq!(sha256(&m.p("msdp/c1/c")), sha256(&h));
    m.unmount();
    s.ok(&["fsck"]);
}

/// A restore from a cold cache does not wait for each container's download
/// in turn: reading the start of an image fetches the containers that come
/// next in the background.
#[test]
fn a_restore_fetches_the_next_containers_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    let s = cloud_store(&s3, "backups-ahead");
    let f = s.path("f");
    // Two containers: a container ends past 64 MiB.
    random_file(&f, 80);
    let m = s.mount("");
    cp(&f, &m.p("msdp/c1/a"));
    m.unmount();
    let cache = s.dir.join("lsu/c1/containers");
    sh_ok(&format!("rm -f '{}'/*.kct", cache.display()));
    let m = s.mount("");
    sh_ok(&format!(
        "dd if='{}' of=/dev/null bs=1M count=1 status=none",
        m.p("msdp/c1/a").display()
    ));
    let cached = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".kct"))
            .count()
    };
    let t = std::time::Instant::now();
    while cached() < 2 && t.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(cached(), 2, "the second container is fetched ahead");
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f));
    m.unmount();
}

/// A cache smaller than one container (fetching ahead is off for it)
/// keeps the container being read: a restore downloads each container
/// about once, not once per read request.
#[test]
fn a_small_cache_downloads_each_container_once() {
    let (tmp, _s3, s, f) = small_cache_site("--kms", "backups-small", 80);
    let m = s.mount("");
    cp(&f, &m.p("msdp/c1/a"));
    m.unmount();
    let cache = s.dir.join("lsu/c1/containers");
    sh_ok(&format!("rm -f '{}'/*.kct", cache.display()));
    let gets = || {
        std::fs::read_to_string(tmp.path().join("moto.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"GET /backups-small/x/containers/"))
            .count()
    };
    let before = gets();
    let m = s.mount("");
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f));
    m.unmount();
    // Two containers; the kernel's reads around the boundary between them
    // may arrive out of order and bring the first back once. Fetching per
    // read request would make it ten or more.
    let n = gets() - before;
    assert!((2..=4).contains(&n), "{n} downloads of two containers");
}

/// A hung object store costs each reader of an uncached image its timeout
/// once, at the same time, not one after the other: the mount's other
/// files are served meanwhile, and a daemon started while the store hangs
/// reads everything it has cached.
#[test]
fn a_hung_bucket_costs_a_timeout_not_the_mount() {
    let (_tmp, s3, s) = outage_site("backups-hung");
    // More uncached images than the mount has FUSE threads.
    let files: Vec<PathBuf> = (0..12)
        .map(|i| {
            let f = s.path(&format!("f{i}"));
            random_file(&f, 1);
            f
        })
        .collect();
    let m = s.mount("");
    for (i, f) in files.iter().enumerate() {
        cp(f, &m.p(&format!("msdp/c1/a{i}")));
    }
    m.unmount();
    sh_ok(&format!(
        "rm -f '{}'/*.kct",
        s.dir.join("lsu/c1/containers").display()
    ));
    let (g, h) = (s.path("g"), s.path("h"));
    random_file(&g, 2);
    random_file(&h, 2);
    let m = s.mount("");
    cp(&g, &m.p("msdp/c1/b"));
    m.unmount();

    s3.pause();
    let m = s.mount("");
    assert_eq!(
        sha256(&m.p("msdp/c1/b")),
        sha256(&g),
        "a daemon started while the store hangs reads what it has cached"
    );
    let t = std::time::Instant::now();
    let cat = |name: &str| {
        let p = m.p(&format!("msdp/c1/{name}"));
        std::thread::spawn(move || {
            let r = common::sh(&format!("cat '{}' > /dev/null", p.display()));
            (r, t.elapsed())
        })
    };
    // Every image at once, and four more readers of the first.
    let readers: Vec<_> = (0..files.len())
        .map(|i| format!("a{i}"))
        .chain((0..4).map(|_| "a0".to_string()))
        .map(|name| cat(&name))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(1));
    cp(&h, &m.p("msdp/l1/x"));
    assert_eq!(sha256(&m.p("msdp/l1/x")), sha256(&h));
    assert_eq!(sha256(&m.p("msdp/c1/b")), sha256(&g));
    let served = t.elapsed();
    let mut took = Vec::new();
    for r in readers {
        let ((ok, _, err), at) = r.join().unwrap();
        assert!(!ok && err.contains("timed out"), "{err}");
        took.push(at);
    }
    let failed = t.elapsed();
    // One timeout is 2 s of silence, retried within 6 s: about 6 s in
    // all, and readers of one container share it. Sixteen one after the
    // other would take well over a minute.
    assert!(
        served < std::time::Duration::from_secs(20) && failed < std::time::Duration::from_secs(20),
        "served after {served:?}, all readers failed after {failed:?}: {took:?}"
    );
    // While one reader tries the store again, a reader of another
    // container does not wait a timeout of its own.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let probe = cat("a1");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t = std::time::Instant::now();
    let (ok, _, err) = common::sh(&format!(
        "cat '{}' > /dev/null",
        m.p("msdp/c1/a2").display()
    ));
    assert!(!ok && err.contains("timed out"), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    let ((ok, _, _), _) = probe.join().unwrap();
    assert!(!ok);

    s3.resume();
    // A container just left unanswered is not asked for again within
    // half a second.
    std::thread::sleep(std::time::Duration::from_secs(1));
    for (i, f) in files.iter().enumerate() {
        assert_eq!(sha256(&m.p(&format!("msdp/c1/a{i}"))), sha256(f));
    }
    cp(&h, &m.p("msdp/c1/c"));
    assert_eq!(sha256(&m.p("msdp/c1/c")), sha256(&h));
    m.unmount();
    s.ok(&["fsck"]);
}

/// Objects someone else put under the prefix (a name with a sign, a
/// nested folder, the largest id there is, an object longer than any
/// container) are not containers: a store recovered from that bucket
/// neither reuses an id nor wraps around, and new images land beside the
/// old ones.
#[test]
fn foreign_names_in_the_bucket_are_not_containers() {
    let (_tmp, s3, a, f1, f2) = site("backups-names", 2);
    let ma = a.mount("");
    cp(&f1, &ma.p("msdp/c1/a"));
    cp(&f2, &ma.p("msdp/c1/b"));
    ma.unmount();
    let keys = a.export_keys();
    let creds = S3Server::credentials_file(a.tmp.path());
    let foreign = [
        "ffffffffffffffff.kct",
        "+000ffffffffffff.kct",
        "sub/0000ffffffffffff.kct",
        "00000ffffffffffff.kct",
        "0000FFFFFFFFFFFF.kct",
    ];
    for name in foreign {
        s3.put(
            "backups-names",
            &format!("site1/containers/{name}"),
            b"not a container",
        );
    }
    // One of our names, longer than any container: skipped, not trusted.
    s3.put(
        "backups-names",
        "site1/containers/0000000000000020.kct",
        &vec![0u8; (128 << 20) + 1],
    );

    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    b.ok(&args(&recover_args(
        &s3,
        &creds,
        "s3://backups-names/site1",
    )));
    let mb = b.mount("");
    let (f3, f4) = (b.path("f3"), b.path("f4"));
    random_file(&f3, 3);
    random_file(&f4, 1);
    cp(&f3, &mb.p("msdp/c1/c"));
    cp(&f4, &mb.p("msdp/c1/d"));
    mb.unmount();
    sh_ok(&format!(
        "rm -f '{}'/*.kct",
        b.dir.join("lsu/c1/containers").display()
    ));
    let mb = b.mount("");
    assert_eq!(sha256(&mb.p("msdp/c1/a")), sha256(&f1));
    assert_eq!(sha256(&mb.p("msdp/c1/b")), sha256(&f2));
    assert_eq!(sha256(&mb.p("msdp/c1/c")), sha256(&f3));
    assert_eq!(sha256(&mb.p("msdp/c1/d")), sha256(&f4));
    mb.unmount();
    b.ok(&["lsu", "gc", "c1"]);
    b.ok(&["fsck"]);
    // New containers took the ids after the old ones; the foreign objects
    // are left as they were.
    let keys: Vec<String> = s3
        .list("backups-names", "site1/containers/")
        .into_iter()
        .map(|o| o.0)
        .collect();
    for name in foreign {
        assert!(
            keys.contains(&format!("site1/containers/{name}")),
            "{name}: {keys:?}"
        );
    }
    let ours: Vec<&String> = keys
        .iter()
        .filter(|k| !foreign.iter().any(|f| k.ends_with(f)))
        .collect();
    assert!(
        ours.len() >= 3
            && ours
                .iter()
                .all(|k| k.starts_with("site1/containers/00000000000000")),
        "{keys:?}"
    );
    assert!(
        ours.iter()
            .any(|k| k.as_str() > "site1/containers/0000000000000020.kct"),
        "new containers never take a listed id: {keys:?}"
    );
}

/// A prefix recovered into a new store while the old one still runs (a
/// DR rehearsal, or a server thought lost): the new store owns it. The old
/// one reads its images but no longer writes or deletes there, so neither
/// its gc nor its key dictionary undoes the new owner's work.
#[test]
fn a_recovered_prefix_belongs_to_the_store_that_recovered_it() {
    let (_tmp, s3, a, f1, f2) = site("backups-own", 2);
    let ma = a.mount("");
    cp(&f1, &ma.p("msdp/c1/a"));
    let keys = a.export_keys();
    let creds = S3Server::credentials_file(a.tmp.path());

    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    b.ok(&args(&recover_args(&s3, &creds, "s3://backups-own/site1")));
    let mb = b.mount("");
    cp(&f2, &mb.p("msdp/c1/b"));
    let objects = s3.list("backups-own", "site1/");

    // The old store: reads go on; writes, deletes and gc are refused.
    assert_eq!(sha256(&ma.p("msdp/c1/a")), sha256(&f1));
    let (ok, _, err) = common::sh(&format!(
        "cp '{}' '{}'",
        f2.display(),
        ma.p("msdp/c1/late").display()
    ));
    assert!(!ok && err.contains("not permitted"), "{err}");
    let err = a.fails(&["lsu", "rotate-kek", "c1"]);
    assert!(err.contains("another store"), "{err}");
    let err = a.fails(&["lsu", "rewrap", "c1"]);
    assert!(err.contains("another store"), "{err}");
    std::fs::remove_file(ma.p("msdp/c1/a")).unwrap_or(());
    let err = a.fails(&["lsu", "gc", "c1"]);
    assert!(err.contains("another store"), "{err}");
    ma.unmount();
    assert_eq!(
        s3.list("backups-own", "site1/"),
        objects,
        "the old store changed the prefix"
    );

    // The new owner's images are whole; its gc works.
    assert_eq!(sha256(&mb.p("msdp/c1/a")), sha256(&f1));
    assert_eq!(sha256(&mb.p("msdp/c1/b")), sha256(&f2));
    b.ok(&["lsu", "gc", "c1"]);
    // A cloud LSU's settings left behind in a folder (a recovery that
    // failed before its commit) are not adopted by a new local LSU.
    let objects = s3.list("backups-own", "site1/");
    std::fs::create_dir_all(b.dir.join("lsu/c2")).unwrap();
    std::fs::copy(
        b.dir.join("lsu/c1/cloud.json"),
        b.dir.join("lsu/c2/cloud.json"),
    )
    .unwrap();
    b.ok(&["lsu", "create", "c2", "--kms", "--key-group", "KG"]);
    cp(&f2, &mb.p("msdp/c2/x"));
    assert_eq!(
        s3.list("backups-own", "site1/"),
        objects,
        "a local LSU wrote to the bucket"
    );
    mb.unmount();
    b.ok(&["fsck"]);
}

/// The object that says which store writes a prefix, deleted (by hand, by
/// a lifecycle rule): no store writes there until one claims the prefix
/// again, since two stores could otherwise both write it. Reads go on; a
/// recovery from the same prefix claims it back.
#[test]
fn a_deleted_claim_stops_writes_until_the_prefix_is_claimed_again() {
    let (_tmp, s3, a, f1, f2) = site("backups-claim", 1);
    let creds = S3Server::credentials_file(a.tmp.path());
    let m = a.mount("");
    cp(&f1, &m.p("msdp/c1/a"));
    s3.delete("backups-claim", "site1/owner");
    let objects = s3.list("backups-claim", "site1/");
    let (ok, _, err) = common::sh(&format!(
        "cp '{}' '{}'",
        f2.display(),
        m.p("msdp/c1/b").display()
    ));
    assert!(!ok && err.contains("not permitted"), "{err}");
    assert!(!m.p("msdp/c1/b").exists());
    let log = std::fs::read_to_string(a.dir.join("kmsfs.log")).unwrap();
    assert!(
        log.contains("site1/owner"),
        "the log names the missing object"
    );
    assert_eq!(s3.list("backups-claim", "site1/"), objects);
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f1), "reads go on");

    a.ok(&args(&recover_args(
        &s3,
        &creds,
        "s3://backups-claim/site1",
    )));
    cp(&f2, &m.p("msdp/c1/b"));
    assert_eq!(sha256(&m.p("msdp/c1/b")), sha256(&f2));
    m.unmount();
    a.ok(&["fsck"]);
}

/// A moto server, a store with cloud LSU `c1` (`mode`) at
/// `s3://bucket/x` whose cache holds 1 MiB, and a random file of `mb` MiB.
fn small_cache_site(
    mode: &str,
    bucket: &str,
    mb: usize,
) -> (tempfile::TempDir, S3Server, TestStore, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    s3.make_bucket(bucket);
    let url = format!("s3://{bucket}/x");
    let s = store_with(mode, &s3, &url, &["--cache-size", "1M"]);
    let f = s.path("f");
    random_file(&f, mb);
    (tmp, s3, s, f)
}

/// A moto server and a store with a local LSU `l1` and a cloud LSU `c1`
/// at `s3://bucket/x` that waits at most 2 s for the store to answer.
fn outage_site(bucket: &str) -> (tempfile::TempDir, S3Server, TestStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    s3.make_bucket(bucket);
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&["lsu", "create", "l1", "--kms", "--key-group", "KG"]);
    s.ok(&args(&create_args(
        &s,
        &s3,
        "c1",
        "--kms",
        &format!("s3://{bucket}/x"),
        &["--timeout", "2"],
    )));
    (tmp, s3, s)
}

/// A moto server, a store with cloud LSU `c1` in `bucket`, and two random
/// files of `mb1` and 2 MiB.
fn site(bucket: &str, mb1: usize) -> (tempfile::TempDir, S3Server, TestStore, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    let a = cloud_store(&s3, bucket);
    let (f1, f2) = (a.path("f1"), a.path("f2"));
    random_file(&f1, mb1);
    random_file(&f2, 2);
    (tmp, s3, a, f1, f2)
}

/// `lsu recover c1 --from URL` on the server `s3`.
fn recover_args(s3: &S3Server, creds: &Path, url: &str) -> Vec<String> {
    let mut v: Vec<String> = ["lsu", "recover", "c1", "--from", url]
        .map(String::from)
        .to_vec();
    v.extend(bucket_args(s3, creds));
    v
}

/// A cloud LSU under a retention policy: each image's containers and
/// recipe object are retained by the object store (S3 Object Lock, the
/// policy's mode) until the image unlocks, extended with the lock; the
/// bucket's own credentials cannot delete them, and gc leaves them.
#[test]
fn a_locked_lsu_has_its_objects_retained_by_the_object_store() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(tmp.path());
    s3.make_locked_bucket("backups-worm");
    let s = store_with("--kms", &s3, "s3://backups-worm/w", &[]);
    s.ok(&[
        "worm",
        "set",
        "msdp/c1",
        "--mode",
        "compliance",
        "--min",
        "1d",
        "--max",
        "30d",
        "--default",
        "2d",
    ]);
    let f = s.path("f");
    random_file(&f, 3);
    let m = s.mount("");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    cp(&f, &m.p("msdp/c1/a"));
    let objects = s3.list("backups-worm", "w/");
    let retained: Vec<&(String, u64)> = objects
        .iter()
        .filter(|(k, _)| k.starts_with("w/containers/") || k.starts_with("w/recipes/"))
        .collect();
    assert!(retained.len() >= 2, "{objects:?}");
    let until = |key: &str| -> u64 {
        let r = s3.retention("backups-worm", key);
        let (mode, until) = r.split_once(' ').unwrap();
        assert_eq!(mode, "COMPLIANCE", "{key}: {r}");
        until.parse().unwrap()
    };
    for (k, _) in &retained {
        let u = until(k);
        assert!(
            u >= t0 + 2 * 86400 - 60 && u <= t0 + 2 * 86400 + 600,
            "{k}: {u}"
        );
    }
    // The bucket's credentials cannot delete them.
    let (k, _) = retained[0];
    assert!(
        s3.delete_version("backups-worm", k).starts_with("refused"),
        "{k}"
    );
    // The lock extended: the objects with it.
    s.ok(&["worm", "extend", "msdp/c1/a", "--by", "10d"]);
    for (k, _) in &retained {
        assert!(until(k) >= t0 + 10 * 86400 - 60, "{k}");
    }
    // gc leaves retained containers alone; the image reads back.
    let gc = s.ok(&["lsu", "gc", "c1", "--json"]);
    let gc: serde_json::Value = serde_json::from_str(&gc).unwrap();
    assert_eq!(gc["images_retained"], 1, "{gc}");
    assert_eq!(gc["containers_removed"], 0, "{gc}");
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f));
    m.unmount();
}

/// A new store with key group KG and a cloud LSU `c1` (`mode`) at `url`.
fn store_with(mode: &str, s3: &S3Server, url: &str, extra: &[&str]) -> TestStore {
    let s = TestStore::new(&[]);
    s.group_with_key("KG");
    s.ok(&args(&create_args(&s, s3, "c1", mode, url, extra)));
    s
}

/// A recovery from a bucket that misses an object recovers what it can,
/// reports the rest (exit 1), and keeps gc from removing what the missing
/// image still needs until a run brings it back.
#[test]
fn a_partial_recovery_from_a_bucket_keeps_gc_away() {
    let (_tmp, s3, a, f1, f2) = site("backups-part", 2);
    let m = a.mount("");
    cp(&f1, &m.p("msdp/c1/a"));
    cp(&f2, &m.p("msdp/c1/b"));
    m.unmount();
    let keys = a.export_keys();
    let creds = S3Server::credentials_file(a.tmp.path());
    let first = s3.list("backups-part", "site1/containers/")[0].0.clone();
    let kept = a.path("kept");
    std::fs::copy(
        a.dir
            .join("lsu/c1/containers")
            .join(first.rsplit('/').next().unwrap()),
        &kept,
    )
    .unwrap();
    s3.delete("backups-part", &first);
    std::fs::remove_dir_all(&a.dir).unwrap();

    let b = TestStore::new(&[]);
    b.import_keys(&keys);
    let err = b.fails(&args(&recover_args(&s3, &creds, "s3://backups-part/site1")));
    assert!(err.contains("could not be recovered"), "{err}");
    assert!(b.dir.join("lsu/c1/recovery-incomplete").exists());
    let err = b.fails(&["lsu", "gc", "c1"]);
    assert!(err.contains("left images behind"), "{err}");
    let m = b.mount("");
    assert_eq!(sha256(&m.p("msdp/c1/b")), sha256(&f2));
    m.unmount();
    // The object comes back (from a copy): the next run finishes the job.
    sh_ok(&format!(
        "'{}/bin/python' -c \"import boto3; boto3.client('s3', endpoint_url='{}', aws_access_key_id='t', aws_secret_access_key='t', region_name='us-east-1').upload_file('{}', 'backups-part', '{first}')\"",
        common::s3::venv().display(),
        s3.endpoint(),
        kept.display()
    ));
    b.ok(&args(&recover_args(&s3, &creds, "s3://backups-part/site1")));
    assert!(!b.dir.join("lsu/c1/recovery-incomplete").exists());
    b.ok(&["lsu", "gc", "c1"]);
    let m = b.mount("");
    assert_eq!(sha256(&m.p("msdp/c1/a")), sha256(&f1));
    m.unmount();
}
