//! Immutable backups through a real mount and the CLI (run through the
//! mounted daemon): retention locks refuse rm, mv over, truncate, cp over
//! and chmod until they expire; gc keeps what locked images need; keys a
//! locked image needs stay; governance locks yield to the bypass
//! credential only; compliance locks to no one; legal holds; a clock wound
//! ten years forward expires nothing.

mod common;

use common::*;

/// `sh -c` as the mount's user; returns (ok, stderr).
fn try_sh(cmd: &str) -> (bool, String) {
    let (ok, _, err) = sh(cmd);
    (ok, err)
}

fn refused(cmd: &str) {
    let (ok, err) = try_sh(cmd);
    assert!(!ok, "{cmd} succeeded on a locked image");
    assert!(err.contains("Operation not permitted"), "{cmd}: {err}");
}

/// The arguments of `worm set TARGET --mode MODE --min --max --default`.
fn worm_args<'a>(target: &'a str, mode: &'a str, t: [&'a str; 3]) -> Vec<&'a str> {
    let mut a = vec!["worm", "set", target, "--mode", mode];
    a.extend(["--min", t[0], "--max", t[1], "--default", t[2]]);
    a
}

/// `worm set`, which must succeed (with a governance bypass file).
fn worm_set(s: &TestStore, target: &str, mode: &str, t: [&str; 3], bypass: Option<&str>) {
    let mut a = worm_args(target, mode, t);
    if let Some(b) = bypass {
        a.extend(["--bypass-key-file", b]);
    }
    s.ok(&a);
}

/// `worm set`, which must fail; returns what it said.
fn worm_set_fails(s: &TestStore, target: &str, mode: &str, t: [&str; 3]) -> String {
    s.fails(&worm_args(target, mode, t))
}

fn bypass_file(s: &TestStore) -> String {
    let f = s.path("bypass.key");
    std::fs::write(&f, b"a governance bypass credential, kept off the store").unwrap();
    f.display().to_string()
}

#[test]
fn a_locked_image_refuses_every_change_until_it_expires() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/Vault")).unwrap();
    let by = bypass_file(&s);
    worm_set(
        &s,
        "pools/Vault",
        "governance",
        ["1s", "1d", "4s"],
        Some(&by),
    );
    let src = s.path("src");
    random_file(&src, 2);
    let a = m.p("pools/Vault/a").display().to_string();
    cp(&src, std::path::Path::new(&a));
    std::fs::write(m.p("pools/Vault/other"), b"other").unwrap();
    refused(&format!("rm '{a}'"));
    refused(&format!(
        "mv '{}' '{a}'",
        m.p("pools/Vault/other").display()
    ));
    refused(&format!("truncate -s 0 '{a}'"));
    refused(&format!(
        "cp '{}' '{a}'",
        m.p("pools/Vault/other").display()
    ));
    refused(&format!("chmod 600 '{a}'"));
    refused(&format!("touch '{a}'"));
    assert_eq!(
        sha256(std::path::Path::new(&a)),
        sha256(&src),
        "image intact"
    );
    let shown = s.ok(&["worm", "show"]);
    assert!(
        shown.contains("Vault/a") && shown.contains("locked"),
        "{shown}"
    );
    let log = std::fs::read_to_string(s.dir.join("kmsfs.log")).unwrap();
    assert!(
        log.contains("image Vault/a is locked until"),
        "the refusal is logged with the image and its unlock time"
    );
    std::thread::sleep(std::time::Duration::from_millis(4500));
    sh_ok(&format!("chmod 600 '{a}' && rm '{a}'"));
    m.unmount();
}

#[test]
fn gc_keeps_every_segment_a_locked_lsu_image_needs() {
    let s = TestStore::new(&[]);
    s.group_with_key("lsukg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsukg"]);
    let m = s.mount("");
    let src = s.path("src");
    random_file(&src, 3);
    // Written before the policy: not locked.
    cp(&src, &m.p("msdp/L/unlocked"));
    worm_set(&s, "msdp/L", "compliance", ["1h", "10y", "1h"], None);
    cp(&src, &m.p("msdp/L/locked"));
    std::fs::remove_file(m.p("msdp/L/unlocked")).unwrap();
    s.ok(&["lsu", "gc", "L"]);
    assert_eq!(sha256(&m.p("msdp/L/locked")), sha256(&src));
    refused(&format!("rm '{}'", m.p("msdp/L/locked").display()));
    // The LSU's root key is needed: no state change, not even forced.
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "lsukg",
        "--name",
        "k2",
        "--activate",
    ]);
    let e = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "lsukg",
        "--name",
        "k1",
        "--state",
        "deprecated",
        "--force",
    ]);
    assert!(e.contains("msdp/L/locked is locked until"), "{e}");
    m.unmount();
}

#[test]
fn keys_a_locked_tape_image_needs_cannot_be_deprecated_or_deleted() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    s.group_with_key("ENCR_V");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_V")).unwrap();
    worm_set(&s, "pools/ENCR_V", "compliance", ["1h", "1y", "1h"], None);
    std::fs::write(m.p("pools/ENCR_V/img"), b"locked data").unwrap();
    // A new active key makes k1 inactive; the image still needs it.
    s.ok(&[
        "kms",
        "createkey",
        "--kg",
        "ENCR_V",
        "--name",
        "k2",
        "--activate",
    ]);
    let e = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "ENCR_V",
        "--name",
        "k1",
        "--state",
        "deprecated",
    ]);
    assert!(e.contains("ENCR_V/img is locked until"), "{e}");
    let e = s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "ENCR_V",
        "--name",
        "k1",
        "--state",
        "deprecated",
        "--force",
    ]);
    assert!(e.contains("compliance"), "--force: {e}");
    let e = s.fails(&["kms", "deletekey", "--kg", "ENCR_V", "--name", "k1"]);
    assert!(!e.is_empty());
    assert_eq!(
        std::fs::read(m.p("pools/ENCR_V/img")).unwrap(),
        b"locked data"
    );
    m.unmount();
}

#[test]
fn governance_yields_to_the_bypass_credential_and_compliance_to_no_one() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/G")).unwrap();
    let by = bypass_file(&s);
    worm_set(&s, "pools/G", "governance", ["1h", "1y", "1h"], Some(&by));
    std::fs::write(m.p("pools/G/a"), b"a").unwrap();
    let wrong = s.path("wrong.key");
    std::fs::write(&wrong, b"not the credential, but long enough").unwrap();
    let e = s.fails(&[
        "worm",
        "release",
        "pools/G/a",
        "--governance-bypass",
        &wrong.display().to_string(),
    ]);
    assert!(e.contains("does not match"), "{e}");
    refused(&format!("rm '{}'", m.p("pools/G/a").display()));
    s.ok(&["worm", "release", "pools/G/a", "--governance-bypass", &by]);
    std::fs::remove_file(m.p("pools/G/a")).unwrap();
    // Neither a new credential nor a looser policy without the current one.
    let mine = wrong.display().to_string();
    let mut a = worm_args("pools/G", "governance", ["1h", "1y", "1h"]);
    a.extend(["--bypass-key-file", &mine]);
    assert!(s.fails(&a).contains("needs the current one"));
    let e = worm_set_fails(&s, "pools/G", "governance", ["0s", "1y", "1s"]);
    assert!(e.contains("needs the current one"), "{e}");
    // No retention so long that its unlock time wraps into the past.
    let e = worm_set_fails(
        &s,
        "pools/G",
        "compliance",
        ["1h", "18446744073709551615", "1h"],
    );
    assert!(e.contains("thousand years"), "{e}");
    // Stricter only: compliance, then never back, never shorter.
    worm_set(&s, "pools/G", "compliance", ["1h", "1y", "1h"], None);
    let e = worm_set_fails(&s, "pools/G", "governance", ["1h", "1y", "1h"]);
    assert!(e.contains("cannot go back"), "{e}");
    let e = worm_set_fails(&s, "pools/G", "compliance", ["1s", "1y", "1h"]);
    assert!(e.contains("only grow"), "{e}");
    std::fs::write(m.p("pools/G/b"), b"b").unwrap();
    let e = s.fails(&["worm", "release", "pools/G/b", "--governance-bypass", &by]);
    assert!(e.contains("never released"), "{e}");
    refused(&format!("rm '{}'", m.p("pools/G/b").display()));
    m.unmount();
}

#[test]
fn a_legal_hold_outlives_the_retention() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/H")).unwrap();
    worm_set(&s, "pools/H", "governance", ["1s", "1d", "1s"], None);
    std::fs::write(m.p("pools/H/a"), b"evidence").unwrap();
    s.ok(&["worm", "hold", "pools/H/a", "--reason", "case 42"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    refused(&format!("rm '{}'", m.p("pools/H/a").display()));
    assert!(s.ok(&["worm", "show"]).contains("case 42"));
    s.ok(&["worm", "unhold", "pools/H/a"]);
    std::fs::remove_file(m.p("pools/H/a")).unwrap();
    m.unmount();
}

#[test]
fn a_clock_wound_ten_years_forward_expires_nothing() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/C")).unwrap();
    worm_set(&s, "pools/C", "compliance", ["1h", "1y", "1h"], None);
    std::fs::write(m.p("pools/C/a"), b"kept").unwrap();
    m.unmount();
    let ten_years = (10 * 365 * 86400).to_string();
    let env = [("KMSFS_TEST_CLOCK_OFFSET_SECS", ten_years.as_str())];
    let m = s.try_mount("", &env).unwrap();
    refused(&format!("rm '{}'", m.p("pools/C/a").display()));
    let clock = s.ok(&["worm", "clock"]);
    assert!(clock.contains("not believed"), "{clock}");
    // Confirming the jump moves the clock and every lock with it.
    s.ok(&["worm", "clock", "--confirm"]);
    refused(&format!("rm '{}'", m.p("pools/C/a").display()));
    refused(&format!(
        "setfattr -n user.x -v 1 '{}'",
        m.p("pools/C/a").display()
    ));
    m.unmount();
    // Remounts a day at a time gain nothing within one boot.
    for day in 1..=3 {
        let ahead = (10 * 365 * 86400 + day * 86400 - 3600).to_string();
        let env = [("KMSFS_TEST_CLOCK_OFFSET_SECS", ahead.as_str())];
        let m = s.try_mount("", &env).unwrap();
        refused(&format!("rm '{}'", m.p("pools/C/a").display()));
        m.unmount();
    }
}

/// Every key, retention and lock operation and every refusal is in the
/// audit log; `audit verify` passes, and names the entry a flipped byte
/// breaks.
#[test]
fn the_audit_log_records_every_operation_and_names_a_tampered_entry() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    s.group_with_key("ENCR_A");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_A")).unwrap();
    worm_set(&s, "pools/ENCR_A", "governance", ["1h", "1y", "1h"], None);
    std::fs::write(m.p("pools/ENCR_A/a"), b"a").unwrap();
    refused(&format!("rm '{}'", m.p("pools/ENCR_A/a").display()));
    s.ok(&["worm", "hold", "pools/ENCR_A/a", "--reason", "audit"]);
    s.ok(&["worm", "unhold", "pools/ENCR_A/a"]);
    s.fails(&[
        "kms",
        "modifykey",
        "--kg",
        "ENCR_A",
        "--name",
        "k1",
        "--state",
        "deprecated",
    ]);
    let shown = s.ok(&["audit", "show"]);
    for want in [
        "kms createkg",
        "kms createkey",
        "worm set",
        "unlink",
        "worm hold",
        "worm unhold",
        "kms modifykey",
        "refused",
    ] {
        assert!(
            shown.contains(want),
            "{want} missing from the audit log:\n{shown}"
        );
    }
    assert!(s.ok(&["audit", "verify"]).contains("intact"));
    m.unmount();
    let path = s.dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let n = text.lines().count();
    assert!(n >= 7, "{text}");
    for line in [1, n / 2, n] {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let l = &mut lines[line - 1];
        // Flip one byte inside the entry's target.
        let at = l.find("\"target\":\"").unwrap() + 10;
        let mut b = l.clone().into_bytes();
        b[at] ^= 0x01;
        *l = String::from_utf8_lossy(&b).into_owned();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let e = s.fails(&["audit", "verify"]);
        assert!(e.contains(&format!("entry {line}:")), "line {line}: {e}");
    }
    std::fs::write(&path, text).unwrap();
    assert!(s.ok(&["audit", "verify"]).contains("intact"));
}
