//! tracing setup: stderr in the foreground; a file or syslog for a daemon.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

/// Where log lines go.
pub enum Target {
    Stderr,
    File(PathBuf),
    /// `/dev/log` (syslog, or journald behind it), facility daemon.
    Syslog,
}

/// Writes each formatted line as one syslog datagram.
struct Syslog(UnixDatagram);

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        let pri = if line.contains("ERROR") {
            27
        } else if line.contains("WARN") {
            28
        } else {
            30
        };
        let msg = format!("<{pri}>kmsfs[{}]: {}", std::process::id(), line.trim_end());
        let _ = self.0.send(msg.as_bytes());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens (creating it 0600) a log file; a symlink is refused, not
/// followed, so a log line never lands in a file someone else chose.
fn open_log(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// Installs the global subscriber (once; later calls do nothing). A log
/// file that cannot be opened is an error naming it.
pub fn init(level: Option<&str>, target: Target) -> Result<(), String> {
    let filter = match level {
        Some(l) => EnvFilter::new(format!("kmsfs={l},fuser=warn")),
        None => EnvFilter::try_from_env("KMSFS_LOG")
            .unwrap_or_else(|_| EnvFilter::new("kmsfs=info,fuser=warn")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let syslog = || {
        UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .ok()
    };
    let _ = match target {
        Target::File(p) => {
            let f = open_log(&p).map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::ELOOP) {
                    "is a symbolic link (refused: give the file itself)".to_string()
                } else {
                    e.to_string()
                };
                format!("log_file {}: {why}", p.display())
            })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
        }
        Target::Syslog => match syslog() {
            Some(s) => builder
                .with_ansi(false)
                .without_time()
                .with_writer(std::sync::Mutex::new(Syslog(s)))
                .try_init(),
            None => builder.with_writer(std::io::stderr).try_init(),
        },
        Target::Stderr => builder.with_writer(std::io::stderr).try_init(),
    };
    Ok(())
}
