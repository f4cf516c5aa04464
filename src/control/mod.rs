//! The control socket: how CLI commands reach a store that a daemon holds.
//!
//! A mounted store is locked by its daemon, so a CLI command first tries
//! `STORE/control.sock` (mode 0600, root only). If a daemon answers, the
//! command is sent there as a typed request and run inside the daemon
//! against its open store, so KMS changes take effect for the next
//! operation; otherwise the CLI opens the store itself and runs the same
//! typed request. The daemon never parses a command line and never changes
//! its working directory: paths in a request are absolute.
//!
//! The protocol is JSON lines, versioned ([`PROTOCOL`]): one [`Request`]
//! from the client; [`Frame::Progress`] lines while a long operation runs
//! (so the CLI draws its progress bar), then one [`Frame::Done`].
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
use crate::util::progress::Progress;

/// The version of requests and frames. A daemon and a CLI that disagree
/// say so instead of misreading each other.
pub const PROTOCOL: u32 = 2;

/// A command for the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    /// The typed operation, as the door that sends it defines it (the CLI's
    /// command tree, every path absolute).
    pub op: serde_json::Value,
}

/// What the daemon sends back: progress while the operation runs, then
/// its outcome.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    Progress(Progress),
    Done(Response),
}

/// Its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What the daemon does with a request's operation (the CLI's commands,
/// run against its open store), reporting progress as it goes: given by
/// the door that starts the server, so this module needs nothing above the
/// store.
pub type Handler = Arc<
    dyn Fn(&Store, &serde_json::Value, Peer, &mut dyn FnMut(&Progress)) -> Response + Send + Sync,
>;

/// Who sent a request (SO_PEERCRED): the handler decides what a peer that
/// is not the daemon's own user may do.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
}

/// Least time between two progress frames.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

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
    let req = match parse_request(&line) {
        Ok(r) => r,
        Err(why) => return answer(&conn, &refusal(&why)),
    };
    tracing::info!(op = %summary(&req.op), "control command");
    // Frames go out from their own thread: a client that stops reading
    // (suspended, a stuck terminal) drops progress frames, never slows the
    // operation, and a frame is never cut in two before the answer.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Frame>(1);
    let out = conn.try_clone()?;
    let pump = std::thread::Builder::new()
        .name("control-out".into())
        .spawn(move || {
            let mut ok = true;
            for frame in rx {
                let last = matches!(frame, Frame::Done(_));
                if ok || last {
                    ok = ok && send(&out, &frame).is_ok();
                }
            }
            ok
        })?;
    let mut last: Option<std::time::Instant> = None;
    let mut progress = |p: &Progress| {
        let due = last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || p.done >= p.total;
        if due {
            last = Some(std::time::Instant::now());
            let _ = tx.try_send(Frame::Progress(p.clone()));
        }
    };
    let resp = handler(store, &req.op, Peer { uid }, &mut progress);
    let delivered = tx.send(Frame::Done(resp)).is_ok();
    drop(tx);
    let sent = pump.join().unwrap_or(false);
    if delivered && sent {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "the client stopped reading; its answer was not delivered",
        ))
    }
}

/// A request of this protocol version, or why not.
fn parse_request(line: &str) -> Result<Request, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("refused: not a JSON request: {e}"))?;
    let version = v.get("protocol").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(PROTOCOL)) {
        return Err(format!(
            "refused: this daemon speaks control protocol {PROTOCOL}, the client {}: \
             run the kmsfs that serves the mount, or remount with this one",
            version.map_or("an older one".to_string(), |n| n.to_string())
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("refused: a malformed request: {e}"))
}

/// The operation's first words, for the log (never its arguments, which
/// may name pass phrase files).
fn summary(op: &serde_json::Value) -> String {
    let mut words = Vec::new();
    let mut v = op.get("cmd").unwrap_or(op);
    while let Some(obj) = v.as_object() {
        let Some((k, inner)) = obj.iter().next().filter(|_| obj.len() == 1) else {
            break;
        };
        words.push(k.to_lowercase());
        v = inner;
    }
    if words.is_empty() {
        words.extend(v.as_str().map(str::to_lowercase));
    }
    words.join(" ")
}

/// Sends one frame line.
fn send(mut conn: &UnixStream, frame: &Frame) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
    out.push(b'\n');
    conn.write_all(&out)
}

/// Sends the last frame: the outcome.
fn answer(conn: &UnixStream, resp: &Response) -> std::io::Result<()> {
    send(conn, &Frame::Done(resp.clone()))
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

/// Sends an operation to the daemon serving `store`, if one listens;
/// `progress` sees its progress frames. `None`: no daemon serves the store.
pub fn forward(
    store: &Path,
    op: serde_json::Value,
    progress: &mut dyn FnMut(&Progress),
) -> Option<Response> {
    let mut conn = UnixStream::connect(Store::control_socket(store)).ok()?;
    let lost = |why: String| Response {
        code: 1,
        stdout: String::new(),
        stderr: format!(
            "kmsfs: the daemon serving {} {why}; its log says more\n",
            store.display()
        ),
    };
    let mut req = match serde_json::to_vec(&Request {
        protocol: PROTOCOL,
        op,
    }) {
        Ok(r) => r,
        Err(e) => return Some(lost(format!("was not sent the command: {e}"))),
    };
    req.push(b'\n');
    if let Err(e) = conn.write_all(&req) {
        return Some(lost(format!("did not take the command: {e}")));
    }
    let mut reader = BufReader::new(&conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Some(lost(
                "closed the connection without an answer (an older kmsfs? remount with this one)"
                    .into(),
            )),
            Err(e) => return Some(lost(format!("stopped answering: {e}"))),
            Ok(_) => {}
        }
        match serde_json::from_str::<Frame>(&line) {
            Ok(Frame::Progress(p)) => progress(&p),
            Ok(Frame::Done(r)) => return Some(r),
            Err(e) => {
                return Some(lost(format!(
                    "answered something this kmsfs cannot read: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that stops reading while a long operation reports progress
    /// neither slows the operation nor loses its answer.
    #[test]
    fn a_client_that_stops_reading_slows_nothing_and_still_gets_its_answer() {
        let (_t, store) = crate::testing::store();
        let store = Arc::new(store);
        let took = Arc::new(parking_lot::Mutex::new(None));
        let took2 = took.clone();
        let handler: Handler = Arc::new(move |_, _, _, progress| {
            let start = std::time::Instant::now();
            for done in 0..20_000u64 {
                // done == total: every frame is due, none is rate-limited.
                progress(&Progress {
                    task: "a long task with a long name to fill the socket quickly".into(),
                    done,
                    total: done,
                    unit: crate::util::progress::Unit::Bytes,
                });
            }
            *took2.lock() = Some(start.elapsed());
            Response {
                code: 0,
                stdout: "finished\n".into(),
                stderr: String::new(),
            }
        });
        let _server = Server::start(store.clone(), handler).unwrap();
        let mut c = UnixStream::connect(Store::control_socket(&store.dir)).unwrap();
        let req = serde_json::json!({"protocol": PROTOCOL, "op": {}});
        c.write_all(format!("{req}\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let took = took
            .lock()
            .expect("the operation finished while nobody read");
        assert!(
            took < Duration::from_secs(2),
            "progress slowed it to {took:?}"
        );
        let mut all = String::new();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.read_to_string(&mut all).unwrap();
        let last: Frame = serde_json::from_str(all.lines().last().unwrap()).unwrap();
        assert!(matches!(last, Frame::Done(r) if r.stdout == "finished\n"));
    }
}
