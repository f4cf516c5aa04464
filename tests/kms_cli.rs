//! The KMS through the operator CLI, as a user runs it: every rule's
//! user-facing error, pass-phrase keystores, export/import, recoverkey, and
//! a scan proving no key byte reaches a file, a log line or any output.

mod common;

use std::process::Command;

use common::*;
use kmsfs::kms::Unlock;
use kmsfs::store::Store;

fn write_file(s: &TestStore, name: &str, text: &str) -> String {
    let p = s.path(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn rules_and_bad_inputs_give_clear_errors() {
    let s = TestStore::new(&[]);
    assert!(
        s.fails(&["kms", "createkey", "--kg", "Nope", "--name", "k"])
            .contains("key group 'Nope' does not exist")
    );
    s.ok(&["kms", "createkg", "G", "--description", "finance"]);
    assert!(
        s.fails(&["kms", "createkg", "G"])
            .contains("already exists")
    );
    assert!(
        s.fails(&["kms", "createkg", "bad/name"])
            .contains("invalid name")
    );
    s.ok(&["kms", "createkey", "--kg", "G", "--name", "k1"]);
    assert!(
        s.fails(&["kms", "createkey", "--kg", "G", "--name", "k1"])
            .contains("already exists")
    );
    let e = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "G",
        "--name",
        "k1",
        "--state",
        "inactive",
    ]);
    assert!(e.contains("cannot go from prelive to inactive"), "{e}");
    let e = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "G",
        "--name",
        "k1",
        "--state",
        "sleepy",
    ]);
    assert!(e.contains("unknown key state 'sleepy'"), "{e}");
    s.set_state("G", "k1", "active");
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "G",
        "--name",
        "k2",
        "--activate",
    ]);
    let keys: serde_json::Value =
        serde_json::from_str(&s.ok(&["kms", "listkeys", "--kg", "G", "--json"])).unwrap();
    let states: Vec<(&str, &str)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("k1", "inactive"), ("k2", "active")],
        "one active key per group"
    );
    assert!(
        s.fails(&[
            "kms",
            "modifykey",
            "--kg",
            "G",
            "--name",
            "k2",
            "--state",
            "prelive"
        ])
        .contains("cannot go from active to prelive")
    );
    assert!(s.fails(&["kms", "deletekg", "G"]).contains("not empty"));
    s.ok(&[
        "kms",
        "modifykey",
        "--kg",
        "G",
        "--name",
        "k1",
        "--rename",
        "old",
        "--description",
        "retired",
    ]);
    let text = s.ok(&["kms", "listkeys"]);
    assert!(
        text.contains("old") && text.contains("retired") && text.contains("TAG"),
        "{text}"
    );
    let groups: serde_json::Value =
        serde_json::from_str(&s.ok(&["kms", "listkgs", "--json"])).unwrap();
    assert_eq!(groups[0]["keys"], 2);
    assert_eq!(groups[0]["description"], "finance");
}

#[test]
fn missing_store_half_made_store_and_future_version() {
    let t = tempfile::tempdir().unwrap();
    let listkgs = |store: &str| {
        let o = Command::new(bin())
            .args(["--store", t.path().join(store).to_str().unwrap()])
            .args(["kms", "listkgs"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(listkgs("none").contains("no kmsfs store at"));
    std::fs::create_dir(t.path().join("half")).unwrap();
    std::fs::create_dir(t.path().join("half/kms")).unwrap();
    // A directory init never touched is not called a store (nor advised
    // for removal); one holding init's marker is a half-made store.
    let e = listkgs("half");
    assert!(e.contains("is not a kmsfs store"), "{e}");
    std::fs::write(t.path().join("half/.kmsfs-store"), "kmsfs store\n").unwrap();
    let e = listkgs("half");
    assert!(e.contains("init was interrupted"), "{e}");
    let s = TestStore::new(&[]);
    let conf = s.dir.join("kmsfs.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 7");
    std::fs::write(&conf, text).unwrap();
    assert!(s.fails(&["kms", "listkgs"]).contains("format version 7"));
    let o = Command::new(bin())
        .args(["--store", "/x", "kms", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn passphrase_keystore_wrong_pass_phrase_damage_and_missing_key_file() {
    let t = tempfile::tempdir().unwrap();
    let pp = t.path().join("pp");
    std::fs::write(&pp, "correct horse battery\n").unwrap();
    let dir = t.path().join("s");
    run_ok(Command::new(bin()).args([
        "init",
        dir.to_str().unwrap(),
        "--passphrase-file",
        pp.to_str().unwrap(),
    ]));
    let kms = |extra: &[&str], args: &[&str]| {
        Command::new(bin())
            .arg("--store")
            .arg(&dir)
            .args(extra)
            .args(args)
            .output()
            .unwrap()
    };
    let o = kms(&[], &["kms", "listkgs"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unlocked by a pass phrase"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let wrong = t.path().join("wrong");
    std::fs::write(&wrong, "incorrect").unwrap();
    let o = kms(
        &["--passphrase-file", wrong.to_str().unwrap()],
        &["kms", "listkgs"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong pass phrase or host master key"));
    let o = kms(
        &["--passphrase-file", pp.to_str().unwrap()],
        &["kms", "createkg", "G"],
    );
    assert!(o.status.success());
    let ks = dir.join("kms/keystore.kks");
    let good = std::fs::read(&ks).unwrap();
    let mut bad = good.clone();
    let n = bad.len() - 10;
    bad[n] ^= 4;
    std::fs::write(&ks, &bad).unwrap();
    let o = kms(
        &["--passphrase-file", pp.to_str().unwrap()],
        &["kms", "listkgs"],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is damaged"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&ks, &good[..good.len() / 2]).unwrap();
    let o = kms(
        &["--passphrase-file", pp.to_str().unwrap()],
        &["kms", "listkgs"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"));
    std::fs::write(&ks, &good).unwrap();
    assert!(
        kms(
            &["--passphrase-file", pp.to_str().unwrap()],
            &["kms", "listkgs"]
        )
        .status
        .success(),
        "nothing was harmed"
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "kms/keystore.kks",
        "kms/kpk.key",
        "kms/hmk.params",
        "kmsfs.conf",
    ] {
        assert_eq!(
            std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o077,
            0,
            "{f} is not readable by others"
        );
    }
    let s = TestStore::new(&[]);
    std::fs::remove_file(s.dir.join("kms/hmk.key")).unwrap();
    assert!(
        s.fails(&["kms", "listkgs"]).contains("key file")
            && s.fails(&["kms", "listkgs"]).contains("hmk.key")
    );
}

#[test]
fn recoverkey_recreates_a_pass_phrase_key_and_rejects_the_wrong_phrase() {
    let a = TestStore::new(&[]);
    let pp = write_file(&a, "pp", "the quick brown fox");
    a.ok(&["kms", "createkg", "ENCR_Finance"]);
    let out = a.ok(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_Finance",
        "--name",
        "pp1",
        "--pass-phrase-file",
        &pp,
        "--activate",
    ]);
    let tag = out
        .split_whitespace()
        .skip_while(|w| *w != "tag")
        .nth(1)
        .unwrap()
        .to_string();
    let m = a.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Finance")).unwrap();
    std::fs::write(m.p("pools/ENCR_Finance/x"), b"secret").unwrap();
    m.unmount();
    // The same store, key lost: recreate it (the catalog knows its check value).
    a.set_state("ENCR_Finance", "pp1", "inactive");
    let wrong = write_file(&a, "wrong", "the quick brown cat");
    let e = a.fails(&[
        "kms",
        "recoverkey",
        "--kg",
        "ENCR_Finance",
        "--name",
        "again",
        "--tag",
        &tag,
        "--pass-phrase-file",
        &wrong,
    ]);
    assert!(
        e.contains("does not recreate key") && e.contains(&tag),
        "{e}"
    );
    // Into a fresh store, with the right phrase: same bits (it decrypts A's data below).
    let b = TestStore::new(&[]);
    b.ok(&["kms", "createkg", "ENCR_Finance"]);
    b.ok(&[
        "kms",
        "recoverkey",
        "--kg",
        "ENCR_Finance",
        "--name",
        "pp1",
        "--tag",
        &tag,
        "--pass-phrase-file",
        &pp,
    ]);
    let listed = b.ok(&["kms", "listkeys", "--json"]);
    assert!(listed.contains(&tag) && listed.contains("\"inactive\""));
    let ka = Store::open(&a.dir, Unlock::default())
        .unwrap()
        .keys
        .keystore()
        .read(|ks| ks.key_for_decrypt(&tag))
        .ok()
        .unwrap();
    let kb = Store::open(&b.dir, Unlock::default())
        .unwrap()
        .keys
        .keystore()
        .read(|ks| ks.key_for_decrypt(&tag))
        .ok()
        .unwrap();
    assert!(ka.ct_eq(&kb), "bit for bit");
}

#[test]
fn export_import_moves_groups_and_wrong_pass_phrase_is_refused() {
    let a = TestStore::new(&[]);
    let tag = a.group_with_key("ENCR_Finance");
    a.ok(&["kms", "createkg", "Other"]);
    let pp = write_file(&a, "pp", "dr site phrase");
    let file = a.path("keys.kex");
    a.ok(&[
        "kms",
        "export",
        "--out",
        file.to_str().unwrap(),
        "--pass-phrase-file",
        &pp,
        "--kg",
        "ENCR_Finance",
    ]);
    let b = TestStore::new(&[]);
    let wrong = write_file(&b, "wrong", "not it");
    let e = b.fails(&[
        "kms",
        "import",
        "--in",
        file.to_str().unwrap(),
        "--pass-phrase-file",
        &wrong,
    ]);
    assert!(e.contains("wrong pass phrase"), "{e}");
    let preview = b.ok(&[
        "kms",
        "import",
        "--in",
        file.to_str().unwrap(),
        "--pass-phrase-file",
        &pp,
        "--preview",
    ]);
    assert!(preview.contains("would import 1 key,"), "{preview}");
    assert!(
        !b.ok(&["kms", "listkeys"]).contains(&tag),
        "preview changes nothing"
    );
    let r: serde_json::Value = serde_json::from_str(&b.ok(&[
        "kms",
        "import",
        "--in",
        file.to_str().unwrap(),
        "--pass-phrase-file",
        &pp,
        "--json",
    ]))
    .unwrap();
    assert_eq!(r["groups_created"], serde_json::json!(["ENCR_Finance"]));
    assert!(b.ok(&["kms", "listkeys"]).contains(&tag));
    assert!(
        !b.ok(&["kms", "listkgs"]).contains("Other"),
        "only the named group"
    );
    let again = b.ok(&[
        "kms",
        "import",
        "--in",
        file.to_str().unwrap(),
        "--pass-phrase-file",
        &pp,
    ]);
    assert!(again.contains("skipped 1 whose tag exists"), "{again}");
}

#[test]
fn kms_commands_work_while_mounted_and_reach_the_daemon() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    s.ok(&["kms", "createkg", "ENCR_Live"]);
    let e = std::fs::create_dir(m.p("pools/ENCR_Live")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOKEY));
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_Live",
        "--name",
        "k",
        "--activate",
    ]);
    std::fs::create_dir(m.p("pools/ENCR_Live")).unwrap();
    std::fs::write(m.p("pools/ENCR_Live/f"), b"live").unwrap();
    assert!(s.ok(&["image", "list"]).contains("ENCR_Live/f"));
    assert!(s.ok(&["status"]).contains("images: 1"));
    assert!(s.ok(&["volume", "list"]).contains("K00001L9"));
    let e = s.fails(&["kms", "createkg", "ENCR_Live"]);
    assert!(e.contains("already exists"));
}

/// Creates keys, runs every command, then looks for every key's bytes (raw
/// and hex) in every file of the store and in everything printed.
#[test]
fn no_key_byte_in_files_logs_or_output() {
    let s = TestStore::new(&[]);
    let pp = write_file(&s, "pp", "scan phrase");
    let mut printed = String::new();
    let mut run = |args: &[&str]| {
        let o = s.cmd(args);
        printed.push_str(&String::from_utf8_lossy(&o.stdout));
        printed.push_str(&String::from_utf8_lossy(&o.stderr));
    };
    run(&["kms", "createkg", "ENCR_A"]);
    run(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_A",
        "--name",
        "r",
        "--activate",
    ]);
    run(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_A",
        "--name",
        "p",
        "--pass-phrase-file",
        &pp,
    ]);
    for args in [
        &["kms", "listkgs"][..],
        &["kms", "listkgs", "--json"],
        &["kms", "listkeys"],
        &["kms", "listkeys", "--json"],
        &["kms", "status", "--json"],
        &["status", "--json"],
        &["image", "list", "--json"],
        &["volume", "list", "--json"],
        &[
            "kms",
            "export",
            "--out",
            s.path("x.kex").to_str().unwrap(),
            "--pass-phrase-file",
            &pp,
        ],
        &[
            "kms",
            "import",
            "--in",
            s.path("x.kex").to_str().unwrap(),
            "--pass-phrase-file",
            &pp,
            "--json",
        ],
    ] {
        run(args);
    }
    let m = s.mount("log=trace");
    std::fs::create_dir(m.p("pools/ENCR_A")).unwrap();
    std::fs::write(m.p("pools/ENCR_A/f"), vec![0u8; 100_000]).unwrap();
    let _ = std::fs::read(m.p("pools/ENCR_A/f")).unwrap();
    run(&["kms", "listkeys", "--json"]);
    m.unmount();
    let store = Store::open(&s.dir, Unlock::default()).unwrap();
    let tags: Vec<String> = store
        .keys
        .keystore()
        .read(|ks| ks.list_keys(None))
        .unwrap()
        .into_iter()
        .map(|k| k.tag)
        .collect();
    assert_eq!(tags.len(), 2);
    let keys: Vec<Vec<u8>> = tags
        .iter()
        .map(|t| {
            store
                .keys
                .keystore()
                .read(|ks| ks.key_for_decrypt(t).map(|k| k.expose_secret().to_vec()))
        })
        .filter_map(Result::ok)
        .collect();
    let active = store
        .keys
        .keystore()
        .read(|ks| ks.active_key("ENCR_A"))
        .ok()
        .unwrap()
        .1
        .expose_secret()
        .to_vec();
    drop(store);
    for key in keys.iter().chain(std::iter::once(&active)) {
        assert!(
            !tree_contains(&s.dir, key),
            "raw key bytes found in the store"
        );
        assert!(
            !tree_contains(&s.dir, hex::encode(key).as_bytes()),
            "hex key found in the store"
        );
        assert!(!printed.contains(&hex::encode(key)), "hex key printed");
        assert!(
            !printed.as_bytes().windows(32).any(|w| w == key.as_slice()),
            "raw key printed"
        );
    }
}

/// A keystore save that fails (the disk under the keystore is full) leaves
/// the daemon on the old keystore: the key made active by the failed
/// `createkey --activate` is not used, a failed deprecation is not live,
/// and after a restart the keys are what the daemon used.
#[test]
fn a_failed_keystore_save_changes_nothing_in_the_running_daemon() {
    let s = TestStore::new(&[]);
    let t1 = s.group_with_key("ENCR_A");
    let full = common::FullDisk::over(&s.dir.join("kms"), 1024);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_A")).unwrap();
    std::fs::write(m.p("pools/ENCR_A/before"), b"one").unwrap();
    full.fill();
    let err = s.fails(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_A",
        "--name",
        "k2",
        "--activate",
    ]);
    assert!(err.contains("No space left on device"), "{err}");
    let err = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "ENCR_A",
        "--name",
        "k1",
        "--state",
        "inactive",
    ]);
    assert!(err.contains("No space left on device"), "{err}");
    let keys = s.ok(&["kms", "listkeys", "--json"]);
    assert!(!keys.contains("\"k2\""), "{keys}");
    std::fs::write(m.p("pools/ENCR_A/after"), b"two").unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "list", "--json"])).unwrap();
    for img in list.as_array().unwrap() {
        assert_eq!(img["key_tag"], t1.as_str(), "{img}");
    }
    full.free();
    m.unmount();
    let m = s.mount("");
    assert_eq!(std::fs::read(m.p("pools/ENCR_A/after")).unwrap(), b"two");
    let keys = s.ok(&["kms", "listkeys", "--json"]);
    assert!(!keys.contains("\"k2\""), "{keys}");
    assert!(keys.contains("\"active\""), "{keys}");
    m.unmount();
    drop(full);
}

/// Argon2id costs read from a file (an export container from elsewhere,
/// `hmk.params`) are bounded: a hostile file asking for terabytes of
/// memory or a million passes gets a clear error at once, not an abort
/// or a daemon that hangs.
#[test]
fn argon2_costs_from_files_are_bounded() {
    let s = TestStore::new(&[]);
    s.group_with_key("G");
    let (kex, pp) = s.export_keys();
    let good = std::fs::read(&kex).unwrap();
    for (at, value, what) in [
        (12usize, u32::MAX, "memory"),
        (16, 1_000_000, "passes"),
        (20, 255, "lanes"),
    ] {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        std::fs::write(&kex, &b).unwrap();
        let o = std::process::Command::new("timeout")
            .args(["20", bin(), "--store", s.dir.to_str().unwrap()])
            .args(["kms", "import", "--preview", "--in", kex.to_str().unwrap()])
            .args(["--pass-phrase-file", pp.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains("Argon2") && err.contains(what),
            "{what}: {err}"
        );
    }
    // The same for the pass-phrase HMK's parameters.
    let p = TestStore::new(&["--passphrase-file", pp.to_str().unwrap()]);
    let params = p.dir.join("kms/hmk.params");
    let mut b = std::fs::read(&params).unwrap();
    b[16..20].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(&params, &b).unwrap();
    let o = std::process::Command::new("timeout")
        .args(["20", bin(), "--store", p.dir.to_str().unwrap()])
        .args(["--passphrase-file", pp.to_str().unwrap(), "kms", "listkgs"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Argon2") && err.contains("passes") && err.contains("hmk.params"),
        "{err}"
    );
}

/// A deleted key leaves a tombstone (tag, group, name, check value; never
/// key bytes): recreating it later with the wrong pass phrase is refused,
/// with the right one it comes back.
#[test]
fn recoverkey_of_a_deleted_key_checks_the_pass_phrase_against_its_tombstone() {
    let s = TestStore::new(&[]);
    let pp = write_file(&s, "pp", "correct horse battery staple");
    let wrong = write_file(&s, "wrong", "correct horse battery stable");
    s.ok(&["kms", "createkg", "G"]);
    let out = s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "G",
        "--name",
        "k",
        "--pass-phrase-file",
        &pp,
    ]);
    let tag = out
        .split_whitespace()
        .skip_while(|w| *w != "tag")
        .nth(1)
        .unwrap()
        .to_string();
    s.ok(&["kms", "deletekey", "--kg", "G", "--name", "k"]);
    let recover = |file: &str| {
        s.cmd(&[
            "kms",
            "recoverkey",
            "--kg",
            "G",
            "--name",
            "k",
            "--tag",
            &tag,
            "--pass-phrase-file",
            file,
        ])
    };
    let o = recover(&wrong);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a wrong pass phrase was taken");
    assert!(
        err.contains("does not recreate key") && err.contains(&tag),
        "{err}"
    );
    let o = recover(&pp);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys = s.ok(&["kms", "listkeys", "--json"]);
    assert!(keys.contains(&tag), "{keys}");
}

/// One spelling per option in help (`--key-group`, `--pass-phrase-file`,
/// `--keystore-pass-phrase-file`); the old spellings (`--kg`,
/// `--passphrase-file`) still work, hidden, so scripts keep working.
#[test]
fn options_have_one_spelling_and_the_old_ones_still_work() {
    let s = TestStore::new(&[]);
    s.ok(&["kms", "createkg", "G"]);
    s.ok(&[
        "kms",
        "createkey",
        "--key-group",
        "G",
        "--name",
        "new",
        "--activate",
    ]);
    s.ok(&["kms", "createkey", "--kg", "G", "--name", "old"]);
    let listed = s.ok(&["kms", "listkeys", "--key-group", "G"]);
    assert!(listed.contains("new") && listed.contains("old"), "{listed}");
    for args in [
        vec!["kms", "createkey", "--help"],
        vec!["kms", "listkeys", "--help"],
        vec!["kms", "export", "--help"],
        vec!["lsu", "create", "--help"],
        vec!["--help"],
    ] {
        let help = s.ok(&args);
        assert!(!help.contains("--kg"), "{args:?}: {help}");
        assert!(!help.contains("--passphrase-file"), "{args:?}: {help}");
    }
    assert!(
        s.ok(&["kms", "createkey", "--help"])
            .contains("--key-group")
    );
    assert!(s.ok(&["--help"]).contains("--keystore-pass-phrase-file"));
    // A pass-phrase keystore opened with the new spelling and the old one.
    let pp = s.path("pp");
    std::fs::write(&pp, "keystore pass").unwrap();
    let p = TestStore::new(&["--keystore-pass-phrase-file", pp.to_str().unwrap()]);
    for flag in ["--keystore-pass-phrase-file", "--passphrase-file"] {
        let o = p.cmd(&[flag, pp.to_str().unwrap(), "kms", "listkgs"]);
        assert!(
            o.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `kms status --json` of an embedded store keeps its shape for scripts:
/// the backend in words, the keystore directory, how the HMK is kept.
#[test]
fn kms_status_json_of_an_embedded_store_keeps_its_fields() {
    let s = TestStore::new(&[]);
    let j: serde_json::Value = serde_json::from_str(&s.ok(&["kms", "status", "--json"])).unwrap();
    assert_eq!(j["backend"], "embedded keystore", "{j}");
    assert!(j["keystore"].as_str().unwrap().ends_with("/kms"), "{j}");
    assert!(!j["hmk"].is_null(), "{j}");
}
