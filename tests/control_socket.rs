//! The daemon's control socket as an attacker and a careless client meet
//! it: a client that sends nothing, one that sends too much, a user who is
//! not root; and the daemon's own state (its working directory) untouched
//! by the commands it runs for the CLI.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

/// `kmsfs ARGS…` with a deadline; returns (success, stdout + stderr).
fn cmd_within(s: &TestStore, args: &[&str], secs: u64) -> (bool, String) {
    let mut all = vec![
        "timeout".to_string(),
        secs.to_string(),
        bin().to_string(),
        "--store".into(),
        s.dir.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let o = std::process::Command::new(&all[0])
        .args(&all[1..])
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A request of the current protocol for the typed command `cmd`.
fn op(cmd: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"protocol": 2, "op": {"cmd": cmd, "bytes": false}})
}

/// Sends one request line and reads every frame until the socket closes.
fn exchange(sock: &std::path::Path, req: &str) -> Vec<serde_json::Value> {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    all.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The socket speaks typed, versioned requests: a long fsck streams its
/// progress before its answer; a request of another protocol version (an
/// older CLI's argv) and a relative file argument are refused in words.
#[test]
fn typed_requests_stream_progress_and_other_versions_are_refused_in_words() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/P")).unwrap();
    random_file(&m.p("pools/P/a"), 16);
    let sock = s.dir.join("control.sock");
    let frames = exchange(
        &sock,
        &op(serde_json::json!({"Fsck": {"json": false}})).to_string(),
    );
    let (last, before) = frames.split_last().unwrap();
    assert_eq!(last["done"]["code"], 0, "{frames:?}");
    assert!(
        last["done"]["stdout"]
            .as_str()
            .unwrap()
            .contains("checked 1 image"),
        "{last}"
    );
    assert!(!before.is_empty(), "progress frames came first: {frames:?}");
    let p = &before.last().unwrap()["progress"];
    assert_eq!(p["task"], "checking images");
    assert_eq!(p["total"], 16u64 << 20);
    assert_eq!(p["unit"], "bytes");
    let old = serde_json::json!({"argv": ["kmsfs", "kms", "listkgs"], "cwd": "/"}).to_string();
    let frames = exchange(&sock, &old);
    let err = frames[0]["done"]["stderr"].as_str().unwrap();
    assert!(err.contains("control protocol 2"), "{err}");
    let relative =
        op(serde_json::json!({"Image": {"Verify": {"image": "pools/P/a", "file": "a"}}}));
    let frames = exchange(&sock, &relative.to_string());
    let err = frames[0]["done"]["stderr"].as_str().unwrap();
    assert!(err.contains("file argument a is not absolute"), "{err}");
    // The CLI draws nothing where stderr is not a terminal, and says the same.
    let o = s.cmd(&["fsck"]);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(s.ok(&["--quiet", "fsck"]).contains("checked 1 image"));
    drop(m);
}

#[test]
fn a_silent_or_flooding_client_blocks_nobody_and_is_cut_off() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    let sock = s.dir.join("control.sock");
    // A client that connects and says nothing.
    let mut silent = UnixStream::connect(&sock).unwrap();
    let (ok, out) = cmd_within(&s, &["kms", "createkg", "G1"], 10);
    assert!(ok, "a command waits for no silent client: {out}");
    // A client that sends megabytes without a newline is cut off.
    let mut flood = UnixStream::connect(&sock).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..64 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 64, "the daemon stopped reading a 64 MiB request");
    let (ok, out) = cmd_within(&s, &["kms", "listkgs"], 10);
    assert!(ok && out.contains("G1"), "{out}");
    // The silent client is dropped after a while, not kept forever.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert!(
        t.elapsed() < Duration::from_secs(29) && n < buf.len(),
        "a silent client is disconnected"
    );
    drop(m);
}

/// A long command (fsck reading a GiB of encrypted images) over the
/// control socket does not hold up another client's `kms listkeys`: it is
/// answered while the fsck still runs.
#[test]
fn a_long_fsck_does_not_delay_listkeys_from_another_client() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_Big");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_Big")).unwrap();
    for i in 0..4 {
        sh_ok(&format!(
            "dd if=/dev/zero of='{}' bs=1M count=256 status=none",
            m.p(&format!("pools/ENCR_Big/img{i}")).display()
        ));
    }
    let mut fsck = std::process::Command::new(bin())
        .arg("--store")
        .arg(&s.dir)
        .arg("fsck")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (ok, out) = cmd_within(&s, &["kms", "listkeys"], 20);
    let listed_in = t.elapsed();
    let fsck_running = fsck.try_wait().unwrap().is_none();
    let fsck_ok = fsck.wait().unwrap().success();
    let fsck_took = t.elapsed();
    eprintln!("listkeys {listed_in:?}, fsck ended {fsck_took:?} after it began");
    assert!(ok && out.contains("ENCR_Big"), "{out}");
    assert!(fsck_ok, "fsck of the store succeeds");
    assert!(
        fsck_running,
        "listkeys answered in {listed_in:?}, after the fsck ended ({fsck_took:?} from then): \
         it waited for it"
    );
    drop(m);
}

/// A client that trickles its request a byte at a time, each byte inside
/// the per-read timeout, is still cut off when the whole request's
/// deadline passes: it cannot hold a serving thread for hours.
#[test]
fn a_trickling_client_is_cut_off_at_the_request_deadline() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    let mut slow = UnixStream::connect(s.dir.join("control.sock")).unwrap();
    slow.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut cut = false;
    while t.elapsed() < Duration::from_secs(25) {
        if slow.write_all(b"x").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(cut, "still sending after {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(16),
        "cut off after {:?}",
        t.elapsed()
    );
    drop(m);
}

#[test]
fn only_root_or_the_store_owner_is_served() {
    let s = TestStore::new(&[]);
    s.ok(&["kms", "createkg", "Secret"]);
    let m = s.mount("");
    let sock = s.dir.join("control.sock");
    // Even if the socket's mode were opened up, another user is refused.
    sh_ok(&format!(
        "chmod 755 '{}' '{}' && chmod 666 '{}'",
        s.tmp.path().display(),
        s.dir.display(),
        sock.display()
    ));
    let req = op(serde_json::json!({"Kms": {"Listkgs": {"json": false}}})).to_string();
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.sendall({:?}.encode()+b'\\n')\nprint(s.makefile().read())",
        sock.display().to_string(),
        req
    );
    let (_, out, err) = sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c '{}'",
        py.replace('\'', "'\\''")
    ));
    assert!(
        !out.contains("Secret"),
        "another user was served: {out}{err}"
    );
    assert!(out.contains("refused"), "{out}{err}");
    let (ok, out) = cmd_within(&s, &["kms", "listkgs"], 10);
    assert!(ok && out.contains("Secret"), "root is served: {out}");
    drop(m);
}

#[test]
fn commands_run_for_the_cli_leave_the_daemons_working_directory_alone() {
    let s = TestStore::new(&[]);
    s.ok(&["kms", "createkg", "G"]);
    let m = s.mount("");
    let pid = m.pid.unwrap();
    let cwd = || std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    let before = cwd();
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("pp"), "export pass").unwrap();
    let o = std::process::Command::new(bin())
        .current_dir(&work)
        .args(["--store", s.dir.to_str().unwrap()])
        .args([
            "kms",
            "export",
            "--out",
            "keys.kex",
            "--pass-phrase-file",
            "pp",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        work.join("keys.kex").exists(),
        "relative paths are the caller's"
    );
    assert_eq!(cwd(), before, "the daemon's working directory did not move");
    drop(m);
}

/// Sends `req` as user `uid` (setpriv) to `sock`; returns what came back.
fn exchange_as(uid: u32, sock: &std::path::Path, req: &str) -> String {
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.sendall({:?}.encode()+b'\\n')\nprint(s.makefile().read())",
        sock.display().to_string(),
        req
    );
    let (_, out, err) = sh(&format!(
        "setpriv --reuid={uid} --regid={uid} --clear-groups /usr/bin/python3 -c '{}'",
        py.replace('\'', "'\\''")
    ));
    format!("{out}{err}")
}

/// A store owned by another user, mounted by root: its owner is served,
/// but never with the daemon's root identity on files (restore into
/// /etc, export over a file, read a file to compare): those are refused.
#[test]
fn the_store_owner_gets_no_root_file_access_through_the_daemon() {
    let s = TestStore::new(&[]);
    s.group_with_key("ENCR_O");
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_O")).unwrap();
    sh_ok(&format!(
        "tar -cf '{}' -C /etc hostname",
        m.p("pools/ENCR_O/t.tar").display()
    ));
    sh_ok(&format!(
        "chown 65534 '{}' && chmod 755 '{}' && chmod 666 '{}'",
        s.dir.display(),
        s.tmp.path().display(),
        s.dir.join("control.sock").display()
    ));
    let sock = s.dir.join("control.sock");
    let target = s.path("root-only");
    std::fs::create_dir(&target).unwrap();
    let restore = op(serde_json::json!({"Image": {"Restore": {
        "image": "pools/ENCR_O/t.tar", "members": ["hostname"], "to": target}}}));
    let out = exchange_as(65534, &sock, &restore.to_string());
    assert!(out.contains("refused"), "{out}");
    assert!(out.contains("root"), "{out}");
    assert!(!target.join("hostname").exists(), "nothing written as root");
    // Commands without files are served to the owner.
    let list = op(serde_json::json!({"Kms": {"Listkgs": {"json": false}}}));
    let out = exchange_as(65534, &sock, &list.to_string());
    assert!(out.contains("ENCR_O"), "{out}");
    drop(m);
}

/// A pass phrase "file" that is a device is refused at once, not read
/// until memory runs out.
#[test]
fn a_pass_phrase_file_must_be_a_small_regular_file() {
    let s = TestStore::new(&[]);
    s.ok(&["kms", "createkg", "G"]);
    let m = s.mount("");
    let (ok, out) = cmd_within(
        &s,
        &[
            "kms",
            "createkey",
            "--kg",
            "G",
            "--name",
            "k",
            "--pass-phrase-file",
            "/dev/zero",
        ],
        20,
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("/dev/zero") && out.contains("not a regular file"),
        "{out}"
    );
    drop(m);
}

/// A request with a field this daemon does not know (a newer CLI's option)
/// is refused, not run without it.
#[test]
fn an_unknown_field_in_a_request_is_refused() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    let req = op(
        serde_json::json!({"Kms": {"Createkg": {"name": "X", "description": "", "dry_run": true}}}),
    );
    let frames = exchange(&s.dir.join("control.sock"), &req.to_string());
    let err = frames[0]["done"]["stderr"].as_str().unwrap();
    assert!(err.contains("dry_run"), "{err}");
    assert!(!s.ok(&["kms", "listkgs"]).contains('X'));
    drop(m);
}

/// A command run from a directory that was removed still works when it
/// has no file arguments.
#[test]
fn a_removed_working_directory_does_not_stop_commands_without_files() {
    let s = TestStore::new(&[]);
    let m = s.mount("");
    let gone = s.path("gone");
    std::fs::create_dir(&gone).unwrap();
    let (ok, out, err) = sh(&format!(
        "cd '{}' && rmdir '{}' && '{}' --store '{}' status",
        gone.display(),
        gone.display(),
        bin(),
        s.dir.display()
    ));
    assert!(ok, "{out}{err}");
    assert!(out.contains("mounted: on"), "{out}");
    drop(m);
}
