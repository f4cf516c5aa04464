//! A real S3 server for the tests: moto 5 (`moto_server`) in a virtualenv
//! the harness makes once (under `target/`), on a free 127.0.0.1 port,
//! stopped by PID when the guard drops. Buckets are made, and objects
//! listed and read, with boto3 (`tests/s3/s3_admin.py`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn s3_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3")
}

/// The virtualenv with moto, made on first use (pinned version).
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| super::venv_at("moto-venv", &s3_dir().join("requirements.txt")))
}

/// A running moto server.
pub struct S3Server {
    pub port: u16,
    child: Option<Child>,
}

impl S3Server {
    pub fn start(log_dir: &Path) -> Self {
        let port = super::kmip::free_port();
        let log = std::fs::File::create(log_dir.join("moto.log")).unwrap();
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Self {
            port,
            child: Some(child),
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(60), "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn admin(&self, args: &[&str]) -> String {
        let o = super::run_ok(
            Command::new(venv().join("bin/python"))
                .arg(s3_dir().join("s3_admin.py"))
                .arg(self.port.to_string())
                .args(args),
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn make_bucket(&self, bucket: &str) {
        self.admin(&["mkbucket", bucket]);
    }

    /// A bucket with Object Lock enabled (versioned).
    pub fn make_locked_bucket(&self, bucket: &str) {
        self.admin(&["mkbucket-locked", bucket]);
    }

    /// `MODE UNTIL_SECS` of an object's retention (HeadObject), or `none`.
    pub fn retention(&self, bucket: &str, key: &str) -> String {
        self.admin(&["retention", bucket, key]).trim().to_string()
    }

    /// Tries to delete the newest version of `key`: `deleted` or
    /// `refused CODE`.
    pub fn delete_version(&self, bucket: &str, key: &str) -> String {
        self.admin(&["delete-version", bucket, key])
            .trim()
            .to_string()
    }

    /// Writes an object with `bytes` (as anyone holding the bucket's
    /// credentials could).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        self.admin(&["put", bucket, key, f.path().to_str().unwrap()]);
    }

    /// Deletes an object (as a lifecycle rule or an operator would).
    pub fn delete(&self, bucket: &str, key: &str) {
        self.admin(&["delete", bucket, key]);
    }

    /// (key, size) of every object under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        self.admin(&["list", bucket, prefix])
            .lines()
            .map(|l| {
                let (k, n) = l.rsplit_once(' ').unwrap();
                (k.to_string(), n.parse().unwrap())
            })
            .collect()
    }

    /// Every object of `bucket` written as a file into `dir`.
    pub fn dump(&self, bucket: &str, dir: &Path) {
        self.admin(&["dump", bucket, dir.to_str().unwrap()]);
    }

    /// The credentials file the server takes (moto takes any).
    pub fn credentials_file(dir: &Path) -> PathBuf {
        let p = dir.join("s3.credentials");
        std::fs::write(
            &p,
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n",
        )
        .unwrap();
        p
    }

    /// The server stops answering (SIGSTOP): connections are accepted by
    /// the kernel and hang, as behind a dead link or an overloaded store.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// The server answers again (SIGCONT), with everything it held.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        super::sh_ok(&format!("kill -{sig} {pid}"));
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
