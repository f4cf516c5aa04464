//! The control socket: how CLI commands reach a store that a daemon holds.
//!
//! A mounted store is locked by its daemon, so a CLI command first tries
//! `STORE/control.sock` (mode 0600, root only). If a daemon answers, the
//! command's arguments are sent there and run inside the daemon against its
//! open store, so KMS changes take effect for the next operation; otherwise
//! the CLI opens the store itself. One JSON line each way.
//!
//! Each client is served on its own thread (a long fsck does not hold up
//! `kms modifykey`), only if the peer is root or the store's owner
//! (SO_PEERCRED, whatever the socket's mode), with a deadline and a size
//! limit on the request.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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

/// What the daemon does with a request (the CLI's commands, run against
/// its open store): given by the door that starts the server, so this
/// module needs nothing above the store.
pub type Handler = Arc<dyn Fn(&Store, &Request) -> Response + Send + Sync>;

/// The daemon's end; removes the socket when dropped.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

/// Largest request accepted (a command line is a few hundred bytes).
const MAX_REQUEST: u64 = 1 << 20;
/// How long a client may take to send its whole request, or to take each
/// piece of the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once; more are told to come back.
const MAX_CLIENTS: usize = 32;

impl Server {
    pub fn start(store: Arc<Store>, handler: Handler) -> std::io::Result<Self> {
        let path = Store::control_socket(&store.dir);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let _ = answer(
                        &c,
                        &refusal("the daemon is serving too many commands; try again"),
                    );
                    continue;
                }
                let (store, active, handler) = (store.clone(), active.clone(), handler.clone());
                let spawned = std::thread::Builder::new()
                    .name("control".into())
                    .spawn(move || {
                        if let Err(e) = serve(&store, &handler, c) {
                            tracing::warn!("control socket: {e}");
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::warn!("control socket: no thread for a client: {e}");
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

/// Reads from a socket until one deadline for the whole request: each
/// read may wait only for what is left of it, so a client sending a byte
/// at a time cannot stretch the request past the deadline.
struct Deadline<'a> {
    conn: &'a UnixStream,
    until: std::time::Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .until
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.read(buf)
    }
}

fn serve(store: &Store, handler: &Handler, conn: UnixStream) -> std::io::Result<()> {
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    let request = Deadline {
        conn: &conn,
        until: std::time::Instant::now() + IO_TIMEOUT,
    };
    BufReader::new(request.take(MAX_REQUEST)).read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(std::io::Error::other(format!(
            "request not ended within {MAX_REQUEST} bytes or {}s: dropped",
            IO_TIMEOUT.as_secs()
        )));
    }
    // Read first, refuse after: a refusal sent over an unread request
    // would reach the client as a reset connection, not as words.
    let uid = peer_uid(&conn)?;
    let owner = std::fs::metadata(&store.dir)?.uid();
    if uid != 0 && uid != owner {
        tracing::warn!(
            uid,
            "control socket: refused a user who is neither root nor the store's owner"
        );
        return answer(
            &conn,
            &refusal(&format!(
                "refused: uid {uid} is neither root nor the owner of store {}",
                store.dir.display()
            )),
        );
    }
    let req: Request = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    if !req.cwd.is_absolute() {
        return answer(
            &conn,
            &refusal("refused: the caller's directory is not absolute"),
        );
    }
    tracing::info!(command = %req.argv.get(1..).map(|a| a.join(" ")).unwrap_or_default(), "control command");
    let resp = handler(store, &req);
    answer(&conn, &resp)
}

/// Sends one response line.
fn answer(mut conn: &UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    conn.write_all(&out)
}

fn refusal(why: &str) -> Response {
    Response {
        code: 1,
        stdout: String::new(),
        stderr: format!("kmsfs: control socket: {why}\n"),
    }
}

/// The uid of the process at the other end of a Unix socket.
#[allow(unsafe_code)]
fn peer_uid(conn: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid
    // ucred, for an open socket descriptor owned by `conn`.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
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
