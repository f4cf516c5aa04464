//! The KMIP backend against a real KMIP server (PyKMIP 0.11) through a real
//! mount: keys made with PyKMIP's own client, an ENCR_ pool and an encrypted
//! LSU written with cp and read back after a remount, root keys that never
//! reach kmsfs, outages with bounded errors and recovery, and rewrap after a
//! new root key is activated in the server.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use common::kmip::KmipServer;
use common::{TestStore, cp, random_file, read_fails, sh, sh_ok, sha256};

/// A store whose KMS is `server`.
fn kmip_store(server: &KmipServer) -> TestStore {
    let s = TestStore::new(&[]);
    let args = server.setbackend_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.ok(&args);
    assert!(out.contains("answered in"), "{out}");
    s
}

fn tag_of_uid(s: &TestStore, group: &str, uid: &str) -> String {
    let out = s.ok(&["kms", "listkeys", "--kg", group, "--json"]);
    let keys: serde_json::Value = serde_json::from_str(&out).unwrap();
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["uid"] == uid)
        .unwrap_or_else(|| panic!("key {uid} not listed: {out}"))["tag"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Whether the process's memory holds `needle` anywhere it can be read.
fn process_holds(pid: u32, needle: &[u8]) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

#[test]
fn pool_and_lsu_on_keys_made_by_pykmip_read_back_after_remount_and_root_keys_stay_in_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = KmipServer::start(&tmp.path().join("kmip"));
    let tape_uid = server.active_key("ENCR_kmip", "tape1");
    let root_bytes = [0x5Au8; 16]
        .iter()
        .chain(&[0xC3u8; 16])
        .copied()
        .collect::<Vec<u8>>();
    let root_uid = server.admin(&[
        "create",
        "lsu-kg",
        "root1",
        "--value",
        &hex::encode(&root_bytes),
    ]);
    server.admin(&["activate", &root_uid]);

    let s = kmip_store(&server);
    let status = s.ok(&["kms", "status"]);
    assert!(status.contains("backend: KMIP"), "{status}");
    assert!(status.contains(&format!(
        "server {} (priority 1): answered in",
        server.address()
    )));
    let tape_tag = tag_of_uid(&s, "ENCR_kmip", &tape_uid);
    let root_tag = tag_of_uid(&s, "lsu-kg", &root_uid);
    let refused = s.fails(&["kms", "createkey", "--kg", "x", "--name", "y"]);
    assert!(refused.contains(&server.address()), "{refused}");
    // A usage refusal, as before the keys handle: exit code 2.
    let o = s.cmd(&["kms", "createkg", "--name", "x"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // The listings keep their KMIP layout: the UID is the fifth column,
    // and the JSON status names the backend and its servers.
    let listed = s.ok(&["kms", "listkeys"]);
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .ends_with("STATE      KMIP UID"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(tape_uid.as_str())),
        "{listed}"
    );
    assert!(s.ok(&["kms", "listkgs"]).contains("NEWEST ACTIVE TAG"));
    let j: serde_json::Value = serde_json::from_str(&s.ok(&["kms", "status", "--json"])).unwrap();
    assert_eq!(j["backend"], "kmip", "{j}");
    assert!(j["servers"][0]["ok"].as_bool().unwrap(), "{j}");

    let src = s.path("src.bin");
    random_file(&src, 24);
    let want = sha256(&src);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_kmip")).unwrap();
    cp(&src, &m.p("pools/ENCR_kmip/full.img"));
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsu-kg"]);
    cp(&src, &m.p("msdp/L/full.img"));
    sh_ok(&format!(
        "tar -C /usr/share -cf '{}' common-licenses",
        m.p("msdp/L/lic.tar").display()
    ));
    assert_eq!(sha256(&m.p("pools/ENCR_kmip/full.img")), want);
    assert_eq!(sha256(&m.p("msdp/L/full.img")), want);
    let images = s.ok(&["image", "list"]);
    assert!(
        images
            .lines()
            .any(|l| l.contains("ENCR_kmip/full.img") && l.contains(&tape_tag)),
        "tape image carries the KMIP key's tag: {images}"
    );
    assert!(images.contains("msdp/L/full.img"), "{images}");
    let keydict = s.ok(&["lsu", "keydict", "L"]);
    assert!(
        keydict.contains(&root_tag),
        "KEK wrapped by the server's root key: {keydict}"
    );
    let pid = m.pid.unwrap();
    assert!(
        !process_holds(pid, &root_bytes),
        "root key bytes in the daemon's memory"
    );
    m.unmount();

    let m = s.mount("");
    assert_eq!(sha256(&m.p("pools/ENCR_kmip/full.img")), want);
    assert_eq!(sha256(&m.p("msdp/L/full.img")), want);
    let listed = sh_ok(&format!(
        "tar -tf '{}' | wc -l",
        m.p("msdp/L/lic.tar").display()
    ));
    assert!(listed.trim().parse::<u32>().unwrap() > 3);
    assert!(!process_holds(m.pid.unwrap(), &root_bytes));
    m.unmount();

    // The server gave out the tape key (a drive needs it in hand) and never
    // the root key: LSU KEKs went through Encrypt/Decrypt only.
    let log = server.log();
    let got = |uid: &str| log.contains(&format!("Getting a SymmetricKey with ID: {uid}\n"));
    assert!(got(&tape_uid), "tape key fetched with Get");
    assert!(!got(&root_uid), "root key fetched with Get");
    assert!(log.contains("Processing operation: Encrypt"));
    assert!(log.contains("Processing operation: Decrypt"));
    assert!(!common::tree_contains(&s.dir, &root_bytes));
}

#[test]
fn an_outage_gives_bounded_clear_errors_fails_over_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = KmipServer::start(&tmp.path().join("kmip"));
    server.active_key("ENCR_a", "k1");
    server.active_key("ENCR_b", "k1");
    server.active_key("lsu-kg", "root1");
    let s = kmip_store(&server);
    // A dead first server: every call fails over to the second.
    let dead = format!("127.0.0.1:{}", common::kmip::free_port());
    let f = |n: &str| server.dir.join(n).display().to_string();
    s.ok(&[
        "kms",
        "setbackend",
        "kmip",
        "--server",
        &dead,
        "--server",
        &server.address(),
        "--ca",
        &f("ca.pem"),
        "--cert",
        &f("kmsfs.pem"),
        "--key",
        &f("kmsfs.key"),
    ]);
    let src = s.path("src.bin");
    random_file(&src, 8);
    let want = sha256(&src);
    let m = s.mount("");
    let status = s.ok(&["kms", "status"]);
    assert!(
        status.contains(&format!("server {dead} (priority 1): NOT ANSWERING")),
        "{status}"
    );
    assert!(status.contains(&format!(
        "server {} (priority 2): answered",
        server.address()
    )));
    std::fs::create_dir(m.p("pools/ENCR_a")).unwrap();
    std::fs::create_dir(m.p("pools/ENCR_b")).unwrap();
    cp(&src, &m.p("pools/ENCR_a/one.img"));
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsu-kg"]);
    cp(&src, &m.p("msdp/L/one.img"));
    m.unmount();
    // A fresh daemon: it holds only the keys it uses from here on.
    let m = s.mount("");
    assert_eq!(sha256(&m.p("pools/ENCR_a/one.img")), want);
    assert_eq!(sha256(&m.p("msdp/L/one.img")), want);
    cp(&src, &m.p("pools/ENCR_a/two.img"));

    server.stop();
    // What needs no new key goes on: cached tape key, cached KEK, the tree.
    assert_eq!(sha256(&m.p("pools/ENCR_a/one.img")), want);
    assert_eq!(sha256(&m.p("msdp/L/one.img")), want);
    assert!(sh_ok(&format!("ls -l '{}'", m.p("pools/ENCR_a").display())).contains("one.img"));
    // A write in the same group reuses the cached active key.
    cp(&src, &m.p("pools/ENCR_a/three.img"));
    // What needs the server fails within bounds and says which servers and operation.
    let t = Instant::now();
    let (ok, _, err) = sh(&format!(
        "cp '{}' '{}'",
        src.display(),
        m.p("pools/ENCR_b/x.img").display()
    ));
    assert!(!ok && err.contains("Input/output error"), "{err}");
    let err = s.fails(&["lsu", "rotate-kek", "L"]);
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "bounded: {:?}",
        t.elapsed()
    );
    assert!(
        err.contains(&server.address()) && err.contains(&dead),
        "{err}"
    );
    assert!(err.contains("KMIP Locate failed on every server"), "{err}");
    let status = s.ok(&["kms", "status"]);
    assert!(status.contains(&format!(
        "server {} (priority 2): NOT ANSWERING",
        server.address()
    )));

    server.resume();
    let t = Instant::now();
    loop {
        let (ok, _, err) = sh(&format!(
            "cp '{}' '{}'",
            src.display(),
            m.p("pools/ENCR_b/x.img").display()
        ));
        if ok {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "did not recover: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    s.ok(&["lsu", "rotate-kek", "L"]);
    cp(&src, &m.p("msdp/L/two.img"));
    m.unmount();
    let m = s.mount("");
    for f in [
        "pools/ENCR_a/one.img",
        "pools/ENCR_a/two.img",
        "pools/ENCR_a/three.img",
        "pools/ENCR_b/x.img",
        "msdp/L/one.img",
        "msdp/L/two.img",
    ] {
        assert_eq!(sha256(&m.p(f)), want, "{f}");
    }
    m.unmount();
}

#[test]
fn rewrap_after_a_new_root_key_and_enokey_for_keys_the_server_withholds() {
    let tmp = tempfile::tempdir().unwrap();
    let server = KmipServer::start(&tmp.path().join("kmip"));
    let tape_uid = server.active_key("ENCR_r", "k1");
    let root1 = server.active_key("lsu-kg", "root1");
    let s = kmip_store(&server);
    let src = s.path("src.bin");
    random_file(&src, 8);
    let want = sha256(&src);
    let m = s.mount("key_cache=1");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsu-kg"]);
    cp(&src, &m.p("msdp/L/a.img"));
    std::fs::create_dir(m.p("pools/ENCR_r")).unwrap();
    cp(&src, &m.p("pools/ENCR_r/a.img"));
    let tag1 = tag_of_uid(&s, "lsu-kg", &root1);

    // A new root key activated in the server; both are active, the newest wraps.
    let root2 = server.active_key("lsu-kg", "root2");
    let tag2 = tag_of_uid(&s, "lsu-kg", &root2);
    let out = s.ok(&["lsu", "rewrap", "L"]);
    assert!(out.contains(&tag2), "{out}");
    let keydict = s.ok(&["lsu", "keydict", "L"]);
    assert!(
        keydict.contains(&tag2) && !keydict.contains(&tag1),
        "{keydict}"
    );
    // The old root key can now be retired in the server.
    server.admin(&["deactivate", &root1]);
    m.unmount();
    let m = s.mount("key_cache=1");
    assert_eq!(sha256(&m.p("msdp/L/a.img")), want);
    cp(&src, &m.p("msdp/L/b.img"));

    // A group with no key in the server, and one whose only key is not yet active.
    let (ok, _, err) = sh(&format!("mkdir '{}'", m.p("pools/ENCR_none").display()));
    assert!(!ok && err.contains("Required key not available"), "{err}");
    server.admin(&["create", "ENCR_pre", "k1"]);
    let (ok, _, err) = sh(&format!("mkdir '{}'", m.p("pools/ENCR_pre").display()));
    assert!(!ok && err.contains("Required key not available"), "{err}");
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(
        log.contains("key group 'ENCR_pre' has no active key"),
        "{log}"
    );
    // The root key compromised in the server: the next open gets ENOKEY.
    server.admin(&["compromise", &root2]);
    let err = read_fails(&m, "msdp/L/a.img");
    assert!(err.contains("Required key not available"), "{err}");
    // The tape key revoked and destroyed: ENOKEY once the cached copy expires.
    server.admin(&["deactivate", &tape_uid]);
    server.admin(&["destroy", &tape_uid]);
    std::thread::sleep(Duration::from_millis(1200));
    let err = read_fails(&m, "pools/ENCR_r/a.img");
    assert!(err.contains("Required key not available"), "{err}");
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(log.contains(&tag2), "the log names the missing root key");
    m.unmount();
}

#[test]
fn certificates_the_peer_refuses_are_named_and_mount_options_override_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let server = KmipServer::start(&tmp.path().join("kmip"));
    server.active_key("ENCR_x", "k1");
    let s = kmip_store(&server);
    let other = tmp.path().join("other-ca");
    std::fs::create_dir(&other).unwrap();
    sh_ok(&format!(
        "'{}/tests/kmip/make-certs.sh' '{}'",
        env!("CARGO_MANIFEST_DIR"),
        other.display()
    ));
    let good = |n: &str| server.dir.join(n).display().to_string();
    let bad = |n: &str| other.join(n).display().to_string();
    let addr = server.address();
    let set = |ca: &str, cert: &str, key: &str| {
        s.ok(&[
            "kms",
            "setbackend",
            "kmip",
            "--server",
            &addr,
            "--ca",
            ca,
            "--cert",
            cert,
            "--key",
            key,
        ])
    };
    // Our certificate is from a CA the server does not trust.
    let out = set(&good("ca.pem"), &bad("kmsfs.pem"), &bad("kmsfs.key"));
    assert!(out.contains("not answering now"), "{out}");
    let err = s.fails(&["kms", "listkeys"]);
    assert!(
        err.contains(&addr) && err.contains("KMIP Locate failed"),
        "{err}"
    );
    // The server's certificate is not signed by the CA we trust.
    set(&bad("ca.pem"), &good("kmsfs.pem"), &good("kmsfs.key"));
    let err = s.fails(&["kms", "listkeys"]);
    assert!(err.contains(&addr) && err.contains("certificate"), "{err}");
    // Mount options put the right files in place for this mount only.
    let m = s.mount(&format!(
        "drives=3,kmip_ca={},kmip_cert={},kmip_key={}",
        good("ca.pem"),
        good("kmsfs.pem"),
        good("kmsfs.key")
    ));
    std::fs::create_dir(m.p("pools/ENCR_x")).unwrap();
    let src = s.path("src.bin");
    random_file(&src, 2);
    cp(&src, &m.p("pools/ENCR_x/a.img"));
    assert_eq!(sha256(&m.p("pools/ENCR_x/a.img")), sha256(&src));
    // setbackend while mounted (run by the daemon) keeps the mount's -o out of the config.
    set(&good("ca.pem"), &good("kmsfs.pem"), &good("kmsfs.key"));
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.dir.join("kmsfs.conf")).unwrap()).unwrap();
    assert_eq!(conf["drives"], 2, "{conf}");
    assert_eq!(conf["kms"]["servers"][0]["cert"], good("kmsfs.pem"));
    m.unmount();
    let o = std::process::Command::new(common::bin())
        .args([
            "mount",
            s.dir.to_str().unwrap(),
            "/mnt",
            "-o",
            "kmip_server=",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("kmip_server"));
}

/// Keys wrapped by a KMIP server are encrypt-then-MAC: any altered byte
/// fails the MAC before the server is asked to decrypt anything, and every
/// way of failing gives the same error (no padding oracle).
#[test]
fn kmip_wrapped_keys_are_encrypt_then_mac_and_fail_one_way() {
    use kmsfs::crypto::SecretKey;
    use kmsfs::kms::{Unlock, WrappedKey};
    let tmp = tempfile::tempdir().unwrap();
    let server = KmipServer::start(&tmp.path().join("kmip"));
    server.active_key("lsu-kg", "root1");
    let s = kmip_store(&server);
    let store = kmsfs::store::Store::open(&s.dir, Unlock::default()).unwrap();
    let key = SecretKey::random().unwrap();
    let w = store.keys.client().wrap("lsu-kg", &key).unwrap();
    assert_eq!(&w.sealed[..3], b"KW\x02", "format 2 wrapping");
    assert!(store.keys.client().unwrap(&w).unwrap().ct_eq(&key));
    let decrypts = || {
        server
            .log()
            .matches("Processing operation: Decrypt")
            .count()
    };
    let before = decrypts();
    let n = w.sealed.len();
    let mut errors = std::collections::BTreeSet::new();
    for (what, at) in [
        ("iv", 5),
        ("first block", 20),
        ("padding", n - 33),
        ("mac", n - 1),
    ] {
        let mut bad = w.sealed.clone();
        bad[at] ^= 0x01;
        let e = store
            .keys
            .client()
            .unwrap(&WrappedKey {
                root_tag: w.root_tag.clone(),
                sealed: bad,
            })
            .err()
            .unwrap_or_else(|| panic!("altered {what} unwrapped"));
        errors.insert(e.to_string());
    }
    let e = store
        .keys
        .client()
        .unwrap(&WrappedKey {
            root_tag: w.root_tag.clone(),
            sealed: w.sealed[..n - 16].to_vec(),
        })
        .err()
        .unwrap();
    errors.insert(e.to_string());
    assert_eq!(errors.len(), 1, "one error for every failure: {errors:?}");
    assert_eq!(
        decrypts(),
        before,
        "nothing altered reached the server's Decrypt"
    );
}

/// A root key is used only if it is an AES-256 key whose usage mask
/// allows Encrypt and Decrypt; the refusal names the key.
#[test]
fn root_keys_must_be_aes_256_for_encrypt_and_decrypt() {
    let tmp = tempfile::tempdir().unwrap();
    let server = KmipServer::start(&tmp.path().join("kmip"));
    let weak = server.admin(&["create", "weak-kg", "aes128", "--value", &"11".repeat(16)]);
    server.admin(&["activate", &weak]);
    let enc_only = server.admin(&["create", "encrypt-kg", "enc", "--usage", "encrypt"]);
    server.admin(&["activate", &enc_only]);
    let s = kmip_store(&server);
    let err = s.fails(&["lsu", "create", "W", "--kms", "--key-group", "weak-kg"]);
    assert!(err.contains("AES-256") && err.contains(&weak), "{err}");
    let err = s.fails(&["lsu", "create", "E", "--kms", "--key-group", "encrypt-kg"]);
    assert!(err.contains("Decrypt") && err.contains(&enc_only), "{err}");
}

/// The names of `/tmp/pymp-*` directories (Python multiprocessing's
/// temporary directories) there now.
fn pymp_dirs() -> std::collections::BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pymp-"))
        .collect()
}

/// A PyKMIP server the harness starts and stops leaves nothing in /tmp:
/// its processes' temporary directories live in its own test directory,
/// removed with it.
#[test]
fn a_test_kmip_server_leaves_no_temporary_directories_behind() {
    let before = pymp_dirs();
    let t = tempfile::tempdir().unwrap();
    let mut server = KmipServer::start(t.path());
    server.active_key("G", "k");
    server.stop();
    drop(server);
    let new: Vec<String> = pymp_dirs().difference(&before).cloned().collect();
    assert!(new.is_empty(), "left in /tmp: {new:?}");
}
