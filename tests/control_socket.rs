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
