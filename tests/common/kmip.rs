//! A real KMIP server for the tests: PyKMIP 0.11 in a virtualenv the
//! harness makes once (under `target/`), certificates from openssl, the
//! server on a free 127.0.0.1 port, stopped by PID when the guard drops.
//! Keys are administered with PyKMIP's own client (`tests/kmip/kmip_admin.py`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn kmip_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kmip")
}

/// The virtualenv with PyKMIP, made on first use (pinned versions).
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| super::venv_at("kmip-venv", &kmip_dir().join("requirements.txt")))
}

/// A port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running PyKMIP server and its certificates.
pub struct KmipServer {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl KmipServer {
    /// Certificates, config and policy in `dir`, and the server started.
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        super::run_ok(Command::new(kmip_dir().join("make-certs.sh")).arg(dir));
        std::fs::copy(
            kmip_dir().join("policy.json"),
            dir.join("policies/kmsfs.json"),
        )
        .unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={d}/server.pem\n\
             key_path={d}/server.key\nca_path={d}/ca.pem\nauth_suite=TLS1.2\n\
             policy_path={d}/policies\nenable_tls_client_auth=True\nlogging_level=DEBUG\n\
             database_path={d}/kmip.db\n"
        );
        std::fs::write(dir.join("server.conf"), conf).unwrap();
        let admin = serde_json::json!({
            "host": "127.0.0.1", "port": port, "cert": dir.join("admin.pem"),
            "key": dir.join("admin.key"), "ca": dir.join("ca.pem"), "policy": "kmsfs",
        });
        std::fs::write(dir.join("admin.json"), admin.to_string()).unwrap();
        let mut s = Self {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        s.resume();
        s
    }

    /// The temporary directory of the server's processes (Python's
    /// multiprocessing makes `pymp-*` there): inside the test directory,
    /// so nothing is left in /tmp.
    fn tmp(&self) -> PathBuf {
        let t = self.dir.join("tmp");
        std::fs::create_dir_all(&t).unwrap();
        t
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server again (same port, same database).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let child = Command::new(venv().join("bin/pykmip-server"))
            .env("TMPDIR", self.tmp())
            .arg("-f")
            .arg(self.dir.join("server.conf"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .stdout(std::fs::File::create(self.dir.join("server.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.join("server.err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        // Listening, and the operation policy loaded (a separate monitor
        // process loads it; keys with an unknown policy are unusable).
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || !self.log().contains("Loading policy: kmsfs")
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "PyKMIP server did not start: {}",
                std::fs::read_to_string(self.dir.join("server.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL: an abrupt outage) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // PyKMIP's policy monitor runs in child processes of its own.
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(format!(
                "pykmip-server -f {}",
                self.dir.join("server.conf").display()
            ))
            .status();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `kmip_admin.py OP ARGS…` with PyKMIP's client; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let o = super::run_ok(
            Command::new(venv().join("bin/python"))
                .env("TMPDIR", self.tmp())
                .arg(kmip_dir().join("kmip_admin.py"))
                .arg(self.dir.join("admin.json"))
                .args(args),
        );
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    /// Creates an AES-256 key in `group` and activates it; returns its UID.
    pub fn active_key(&self, group: &str, name: &str) -> String {
        let uid = self.admin(&["create", group, name]);
        self.admin(&["activate", &uid]);
        uid
    }

    /// The kmsfs options that point at this server.
    pub fn setbackend_args(&self) -> Vec<String> {
        let f = |n: &str| self.dir.join(n).display().to_string();
        vec![
            "kms".into(),
            "setbackend".into(),
            "kmip".into(),
            "--server".into(),
            self.address(),
            "--ca".into(),
            f("ca.pem"),
            "--cert".into(),
            f("kmsfs.pem"),
            "--key".into(),
            f("kmsfs.key"),
        ]
    }

    /// The server's log (every operation, with the UID for Get).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for KmipServer {
    fn drop(&mut self) {
        self.stop();
    }
}
