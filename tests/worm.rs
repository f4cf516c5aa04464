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
        ["1s", "1d", "8s"],
        Some(&by),
    );
    let src = s.path("src");
    random_file(&src, 2);
    let a = m.p("pools/Vault/a").display().to_string();
    cp(&src, std::path::Path::new(&a));
    let committed = std::time::Instant::now();
    std::fs::write(m.p("pools/Vault/other"), b"other").unwrap();
    // Its attributes may be set for a while after the commit (tar and
    // rsync set them after they close a file); not by a later mount.
    sh_ok(&format!("chmod 640 '{a}' && touch '{a}'"));
    m.unmount();
    let m = s.mount("");
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
    // 8 s of retention, rounded up to a whole second.
    std::thread::sleep(std::time::Duration::from_millis(9100).saturating_sub(committed.elapsed()));
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
    let written = std::time::Instant::now();
    s.ok(&["worm", "hold", "pools/H/a", "--reason", "case 42"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    refused(&format!("rm '{}'", m.p("pools/H/a").display()));
    assert!(s.ok(&["worm", "show"]).contains("case 42"));
    s.ok(&["worm", "unhold", "pools/H/a"]);
    // Unlock times are whole seconds, rounded up: 1 s of retention ends
    // within 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2100).saturating_sub(written.elapsed()));
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
    // The skew after a reboot is a day at most, less if set so.
    assert!(
        s.fails(&["worm", "clock", "--skew", "2d"])
            .contains("at most 86400 s")
    );
    let clock = s.ok(&["worm", "clock", "--skew", "1h"]);
    assert!(clock.contains("up to 3600 s ahead"), "{clock}");
    // Once lowered, never raised again.
    assert!(
        s.fails(&["worm", "clock", "--skew", "2h"])
            .contains("only lowered")
    );
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

/// `date -u` of Unix seconds, as kmsfs writes times.
fn iso(secs: u64) -> String {
    sh_ok(&format!("date -u -d @{secs} +%Y-%m-%dT%H:%M:%SZ"))
        .trim()
        .to_string()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A retention asked for one image through `user.kmsfs.retain_until`:
/// on a committed image it extends the lock at once (never shortens it,
/// never past the policy's maximum); written by `tar --xattrs` with the
/// file, it locks the image from its commit. tar and rsync into a locked
/// pool finish without an error (they set times and modes right after
/// writing).
#[test]
fn a_retention_asked_at_write_time_holds_within_the_policy() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/Vault")).unwrap();
    std::fs::create_dir(m.p("pools/Plain")).unwrap();
    worm_set(&s, "pools/Vault", "compliance", ["1s", "30d", "2s"], None);
    let day = now_secs() + 86400;
    let set = |v: &str, f: &std::path::Path| {
        try_sh(&format!(
            "setfattr -n user.kmsfs.retain_until -v '{v}' '{}'",
            f.display()
        ))
    };
    let src = s.path("src");
    random_file(&src, 1);
    let a = m.p("pools/Vault/a");
    cp(&src, &a);
    assert_eq!(set(&day.to_string(), &a), (true, String::new()));
    let shown = sh_ok(&format!(
        "getfattr --only-values -n user.kmsfs.retain_until '{}'",
        a.display()
    ));
    assert_eq!(shown.trim(), iso(day));
    let (ok, err) = set(&(day - 3600).to_string(), &a);
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    let (ok, err) = set(&iso(day + 40 * 86400), &a);
    assert!(
        !ok && err.contains("Invalid argument"),
        "past the maximum: {err}"
    );
    let (ok, err) = set("next tuesday", &a);
    assert!(!ok && err.contains("Invalid argument"), "{err}");
    std::fs::write(m.p("pools/Plain/p"), b"p").unwrap();
    let (ok, err) = set(&day.to_string(), &m.p("pools/Plain/p"));
    assert!(!ok && err.contains("Invalid argument"), "no policy: {err}");
    refused(&format!(
        "setfattr -x user.kmsfs.retain_until '{}'",
        a.display()
    ));

    // With the file, through tar: each member under its own retention.
    let t = s.path("tree");
    std::fs::create_dir(&t).unwrap();
    random_file(&t.join("kept"), 1);
    random_file(&t.join("plain"), 1);
    let kept_until = day + 7200;
    sh_ok(&format!(
        "setfattr -n user.kmsfs.retain_until -v {kept_until} '{}'",
        t.join("kept").display()
    ));
    std::fs::create_dir(m.p("pools/Vault/in")).unwrap();
    let into = m.p("pools/Vault/in");
    sh_ok(&format!(
        "tar --xattrs -C '{}' -cf - . | tar --xattrs -C '{}' -xf -",
        t.display(),
        into.display()
    ));
    // rsync writes a temporary name, sets its times and mode, renames it.
    let r = m.p("pools/Vault/r");
    std::fs::create_dir(&r).unwrap();
    sh_ok(&format!("rsync -a '{}/' '{}/'", t.display(), r.display()));
    assert_eq!(sha256(&r.join("kept")), sha256(&t.join("kept")));
    std::thread::sleep(std::time::Duration::from_millis(3000));
    std::fs::remove_file(into.join("plain")).unwrap();
    std::fs::remove_file(r.join("plain")).unwrap();
    refused(&format!("rm '{}'", into.join("kept").display()));
    refused(&format!("rm '{}'", a.display()));
    assert_eq!(sha256(&into.join("kept")), sha256(&t.join("kept")));
    let shown = s.ok(&["worm", "show"]);
    let line = shown.lines().find(|l| l.contains("in/kept")).unwrap_or("");
    assert!(line.contains(&iso(kept_until)), "{shown}");
    let audit = s.ok(&["audit", "show"]);
    assert!(
        audit.contains("retain") && audit.contains("Vault/in/kept"),
        "{audit}"
    );
    m.unmount();
}

/// fsck reports a damaged image under a lock as critical, an unlocked
/// one as damaged.
#[test]
fn fsck_reports_damage_to_a_locked_image_as_critical() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    s.group_with_key("lsukg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsukg"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/Open")).unwrap();
    let src = s.path("src");
    random_file(&src, 2);
    cp(&src, &m.p("pools/Open/loose"));
    worm_set(&s, "msdp/L", "compliance", ["1h", "1y", "1h"], None);
    cp(&src, &m.p("msdp/L/locked"));
    m.unmount();
    let c = sh_ok(&format!(
        "ls '{}'/*.kct",
        s.dir.join("lsu/L/containers").display()
    ));
    let c = c.lines().next().unwrap().to_string();
    let vol = sh_ok(&format!("ls '{}'/*.kvol", s.dir.join("volumes").display()));
    for f in [c.as_str(), vol.lines().next().unwrap()] {
        flip_byte(std::path::Path::new(f), 1_000_000);
    }
    let o = s.cmd(&["fsck"]);
    let (text, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("CRITICAL image msdp/L/locked") && text.contains("is locked until"),
        "{text}"
    );
    assert!(text.contains("DAMAGED image pools/Open/loose"), "{text}");
    assert!(err.contains("1 critical"), "{err}");
    let j = s.cmd(&["fsck", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let critical: Vec<_> = v["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("critical").is_some())
        .collect();
    assert_eq!(critical.len(), 1, "{v}");
}

/// The longest retention a policy takes locks for its whole length (a
/// longer one was taken, and its unlock time wrapped into the past).
#[test]
fn the_longest_retention_locks_for_its_full_length() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/Long")).unwrap();
    let e = worm_set_fails(&s, "pools/Long", "compliance", ["1d", "1000y", "1000y"]);
    assert!(e.contains("two hundred years"), "{e}");
    worm_set(&s, "pools/Long", "compliance", ["1d", "200y", "200y"], None);
    std::fs::write(m.p("pools/Long/a"), b"kept").unwrap();
    refused(&format!("rm '{}'", m.p("pools/Long/a").display()));
    let shown = s.ok(&["worm", "show"]);
    let year = &iso(now_secs() + 200 * 365 * 86400)[..4];
    let line = shown.lines().find(|l| l.contains("Long/a")).unwrap_or("");
    assert!(line.contains(&format!("{year}-")), "{shown}");
    m.unmount();
}

/// A retention request is used by the commit it was made for and reaches
/// the image committed now: a request left from an earlier version does
/// not cut the next one down to the minimum; one made between a
/// duplicate's close and the last close locks the committed image; the
/// time `getfattr` shows can be written back; errors and refusals are
/// audited under the image's name.
#[test]
fn a_retention_request_is_used_once_and_reaches_the_committed_image() {
    let s = TestStore::new(&["--volume-capacity", "64M"]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/Again")).unwrap();
    worm_set(&s, "pools/Again", "compliance", ["1s", "1d", "1h"], None);
    let f = m.p("pools/Again/f").display().to_string();
    let get = |f: &str| {
        sh_ok(&format!(
            "getfattr --only-values -n user.kmsfs.retain_until '{f}'"
        ))
        .trim()
        .to_string()
    };
    let set = |v: &str, f: &str| {
        try_sh(&format!(
            "setfattr -n user.kmsfs.retain_until -v '{v}' '{f}'"
        ))
    };
    sh_ok(&format!("touch '{f}'"));
    assert!(set(&(now_secs() + 2).to_string(), &f).0);
    sh_ok(&format!("printf data >> '{f}'"));
    std::thread::sleep(std::time::Duration::from_millis(3000));
    sh_ok(&format!("printf v2 > '{f}'"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    refused(&format!("rm '{f}'"));
    // What getfattr shows is the lock's time; writing it back is no change.
    let shown = get(&f);
    assert_eq!(set(&shown, &f), (true, String::new()));

    let day = now_secs() + 86400;
    let g = m.p("pools/Again/g").display().to_string();
    sh_ok(&format!(
        "python3 -c \"import os; fd=os.open('{g}', os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o644); \
         os.write(fd, b'x'*100000); os.close(os.dup(fd)); \
         os.setxattr('{g}', 'user.kmsfs.retain_until', b'{day}'); os.close(fd)\""
    ));
    assert_eq!(get(&g), iso(day));

    // A request made while a new version is written over an expired image
    // is for the new version: the old one is not locked again (its
    // replacement would be refused at close).
    std::fs::create_dir(m.p("pools/Short")).unwrap();
    worm_set(&s, "pools/Short", "compliance", ["1s", "1d", "1s"], None);
    let h = m.p("pools/Short/h").display().to_string();
    std::fs::write(&h, b"first").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    sh_ok(&format!(
        "python3 -c \"import os; fd=os.open('{h}', os.O_WRONLY|os.O_TRUNC); \
         os.write(fd, b'second'); os.setxattr('{h}', 'user.kmsfs.retain_until', b'{day}'); \
         os.close(fd)\""
    ));
    assert_eq!(std::fs::read(&h).unwrap(), b"second");
    assert_eq!(get(&h), iso(day));
    // A request shorter than the default holds through a checkpoint.
    let k = m.p("pools/Again/k").display().to_string();
    let soon = now_secs() + 2;
    sh_ok(&format!(
        "python3 -c \"import os; fd=os.open('{k}', os.O_WRONLY|os.O_CREAT|os.O_TRUNC, 0o644); \
         os.write(fd, b'x'*1000); os.setxattr('{k}', 'user.kmsfs.retain_until', b'{soon}'); \
         os.close(os.dup(fd)); os.write(fd, b'y'*1000); os.close(fd)\""
    ));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    std::fs::remove_file(&k).unwrap();

    assert!(!set("next tuesday", &g).0);
    let audit = s.ok(&["audit", "show"]);
    assert!(
        audit.contains("Again/g") && !audit.contains("Again/Again"),
        "{audit}"
    );
    assert!(audit.contains("not a time"), "{audit}");
    m.unmount();
}
