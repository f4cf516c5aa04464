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

/// Opens (creating it 0600) a log file. A symlink is refused, not
/// followed, and an existing file must be a regular file of the daemon's
/// own user, that only its group may also read, with one link: a log
/// line never lands in a file someone else chose, can read or can forge.
fn open_log(p: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| format!("log_file {}: {why}", p.display());
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // Never blocks on a FIFO or takes a terminal before the checks below.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)
        .map_err(|e| {
            refuse(if e.raw_os_error() == Some(libc::ELOOP) {
                "is a symbolic link (refused: give the file itself)".to_string()
            } else {
                e.to_string()
            })
        })?;
    let m = f.metadata().map_err(|e| refuse(e.to_string()))?;
    let me = crate::util::process::euid();
    if !m.file_type().is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if m.uid() != me {
        return Err(refuse(format!(
            "belongs to uid {}, not to the daemon's uid {me}",
            m.uid()
        )));
    }
    // Group read is allowed (logrotate's `create 0640 root adm`): log
    // lines never carry secrets. Anyone else reading, or anyone but the
    // owner writing (forging lines), is not.
    if m.mode() & 0o026 != 0 {
        return Err(refuse(format!(
            "has mode {:o}: others can read or write it (chmod 600 it)",
            m.mode() & 0o777
        )));
    }
    if m.nlink() != 1 {
        return Err(refuse(format!(
            "has {} hard links (refused: it must have one)",
            m.nlink()
        )));
    }
    Ok(f)
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
            let f = open_log(&p)?;
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

#[cfg(test)]
mod tests {
    use super::open_log;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_log_file_someone_else_can_read_or_owns_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let fresh = d.path().join("new.log");
        open_log(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
        let shared = d.path().join("shared.log");
        std::fs::write(&shared, b"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = open_log(&shared).unwrap_err();
        assert!(e.contains("shared.log") && e.contains("mode 644"), "{e}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        open_log(&shared).unwrap();
        let fifo = d.path().join("fifo.log");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = open_log(&fifo).unwrap_err();
        assert!(
            e.contains("fifo.log"),
            "a FIFO is refused, not waited on: {e}"
        );
        let linked = d.path().join("linked.log");
        std::fs::hard_link(&fresh, &linked).unwrap();
        assert!(open_log(&linked).unwrap_err().contains("hard links"));
        std::fs::remove_file(&linked).unwrap();
        let other = d.path().join("other.log");
        open_log(&other).unwrap();
        if crate::util::process::euid() == 0 {
            std::os::unix::fs::chown(&other, Some(65534), None).unwrap();
            let e = open_log(&other).unwrap_err();
            assert!(e.contains("uid 65534"), "{e}");
        }
        let link = d.path().join("link.log");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(open_log(&link).unwrap_err().contains("symbolic link"));
        open_log(&fresh).unwrap();
    }
}
