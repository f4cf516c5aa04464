//! The control socket: how CLI commands reach a store that a daemon holds.
//!
//! A mounted store is locked by its daemon, so a CLI command first tries
//! `STORE/control.sock` (mode 0600, root only). If a daemon answers, the
//! command's arguments are sent there and run inside the daemon against its
//! open store, so KMS changes take effect for the next operation; otherwise
//! the CLI opens the store itself. One JSON line each way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::store::Store;

/// A forwarded command.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    /// The caller's working directory, for relative paths in arguments.
    pub cwd: PathBuf,
}

/// Its outcome.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The daemon's end; removes the socket when dropped.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(store: Arc<Store>) -> std::io::Result<Self> {
        let path = Store::control_socket(&store.dir);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn
                    && let Err(e) = serve(&store, c)
                {
                    tracing::warn!("control socket: {e}");
                }
            }
        });
        Ok(Self { path, stop })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(store: &Store, mut conn: UnixStream) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let req: Request = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    tracing::info!(command = %req.argv.get(1..).map(|a| a.join(" ")).unwrap_or_default(), "control command");
    let resp = crate::cli::run_in_daemon(store, &req.argv, &req.cwd);
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    conn.write_all(&out)
}

/// Sends a command to the daemon serving `store`, if one answers.
pub fn forward(store: &Path, argv: &[String]) -> Option<Response> {
    let mut conn = UnixStream::connect(Store::control_socket(store)).ok()?;
    let cwd = std::env::current_dir().ok()?;
    let mut req = serde_json::to_vec(&Request {
        argv: argv.to_vec(),
        cwd,
    })
    .ok()?;
    req.push(b'\n');
    conn.write_all(&req).ok()?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}
