//! The tamper-evident audit log: every key, retention and lock operation,
//! and every refused attempt, appended to `STORE/audit.jsonl` and fsynced
//! before the operation returns. Each entry carries the SHA-256 of the
//! line before it (a hash chain: an entry removed, reordered or changed
//! breaks the next one) and an HMAC under a key derived from the store's
//! key in the KMS (an entry forged without the key does not verify).
//! Each entry also goes to the daemon's log (the log file) and to syslog
//! (journald), as `kmsfs audit: OP TARGET: OUTCOME` under LOG_AUTHPRIV.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::SecretKey;

/// The file in the store.
pub const FILE: &str = "audit.jsonl";

/// One entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub time_ns: i64,
    /// What was asked: `kms createkey`, `worm set`, `unlink` …
    pub op: String,
    /// What it was asked of: a key, a pool, an image.
    pub target: String,
    /// `done`, or `refused: WHY`, or `failed: WHY`.
    pub outcome: String,
    /// SHA-256 of the previous line (zeros for the first), hex.
    pub prev: String,
    /// HMAC-SHA-256 of the fields above, hex.
    pub mac: String,
}

impl Entry {
    fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "kmsfs audit v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.seq, self.time_ns, self.op, self.target, self.outcome, self.prev
        )
        .into_bytes()
    }
}

/// Why the log fails verification.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit log entry {line}: {why}")]
    Broken { line: usize, why: String },
}

/// The audit log of one open store.
pub struct AuditLog {
    path: PathBuf,
    key: SecretKey,
    /// `(next seq, SHA-256 of the last line)`.
    tail: Mutex<(u64, [u8; 32])>,
}

impl AuditLog {
    /// Opens the log in `dir` under `key` (the store's audit MAC key).
    pub fn open(dir: &Path, key: SecretKey) -> Self {
        let path = dir.join(FILE);
        let tail = match std::fs::read(&path) {
            Ok(bytes) => bytes
                .split(|b| *b == b'\n')
                .rfind(|l| !l.is_empty())
                .map(|last| {
                    let seq = serde_json::from_slice::<Entry>(last)
                        .map(|e| e.seq + 1)
                        .unwrap_or(0);
                    (seq, Sha256::digest(last).into())
                })
                .unwrap_or((0, [0; 32])),
            Err(_) => (0, [0; 32]),
        };
        Self {
            path,
            key,
            tail: Mutex::new(tail),
        }
    }

    /// Appends an entry and fsyncs it; also logs it.
    pub fn record(&self, op: &str, target: &str, outcome: &str) -> Result<(), AuditError> {
        let mut tail = self.tail.lock();
        let time_ns = crate::util::clock::now_ns();
        let mut e = Entry {
            seq: tail.0,
            time: crate::util::clock::iso_time((time_ns.max(0) / 1_000_000_000) as u64),
            time_ns,
            op: op.into(),
            target: target.into(),
            outcome: outcome.into(),
            prev: hex::encode(tail.1),
            mac: String::new(),
        };
        e.mac = hex::encode(crate::crypto::mac(&self.key, &[&e.signed_bytes()]));
        let line = serde_json::to_string(&e).expect("entries serialize");
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)?;
        *tail = (tail.0 + 1, Sha256::digest(line.as_bytes()).into());
        drop(tail);
        tracing::info!(target: "kmsfs::audit", seq = e.seq, op, what = target, outcome, "audit");
        // After the lock: a stalled syslog holds up this caller only.
        to_syslog(&format!("kmsfs audit {}: {op} {target}: {outcome}", e.seq));
        Ok(())
    }

    /// Every entry, checked: the first that breaks the chain or its MAC
    /// is named by its line number (1-based).
    pub fn verify(&self) -> Result<Vec<Entry>, AuditError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AuditError::Io {
                    path: self.path.display().to_string(),
                    source,
                });
            }
        };
        let mut prev = [0u8; 32];
        let mut out = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let broken = |why: String| AuditError::Broken { line: i + 1, why };
            let e: Entry =
                serde_json::from_slice(line).map_err(|x| broken(format!("not an entry ({x})")))?;
            if e.seq != out.len() as u64 {
                return Err(broken(format!(
                    "sequence {} where {} was due",
                    e.seq,
                    out.len()
                )));
            }
            if e.prev != hex::encode(prev) {
                return Err(broken(
                    "the chain breaks: the entry before it was changed or removed".into(),
                ));
            }
            let want = crate::crypto::mac(&self.key, &[&e.signed_bytes()]);
            let ok = hex::decode(&e.mac)
                .is_ok_and(|m| bool::from(subtle::ConstantTimeEq::ct_eq(&m[..], &want[..])));
            if !ok {
                return Err(broken("its MAC does not verify: it was changed".into()));
            }
            prev = Sha256::digest(line).into();
            out.push(e);
        }
        Ok(out)
    }
}

/// Sends one line to syslog (dropped when no syslog daemon listens).
#[allow(unsafe_code)]
fn to_syslog(line: &str) {
    let Ok(c) = std::ffi::CString::new(crate::util::names::printable(line)) else {
        return;
    };
    // SAFETY: a constant "%s" format and one NUL-terminated argument.
    unsafe {
        libc::syslog(
            libc::LOG_AUTHPRIV | libc::LOG_NOTICE,
            c"%s".as_ptr(),
            c.as_ptr(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_reach_syslog_escaped() {
        let p = crate::util::names::printable("unlink pools/P/a\nFeb 30 host kmsfs: forged\0\t");
        assert!(!p.chars().any(|c| c.is_control()), "{p}");
        assert!(p.contains("a\\nFeb"), "{p}");
    }

    #[test]
    fn a_changed_or_removed_entry_is_named() {
        let d = tempfile::tempdir().unwrap();
        let key =
            || crate::crypto::derive_subkey(&SecretKey::from_slice(&[7; 32]).unwrap(), b"", b"t");
        let log = AuditLog::open(d.path(), key());
        for i in 0..4 {
            log.record("worm set", &format!("pools/P{i}"), "done")
                .unwrap();
        }
        assert_eq!(log.verify().unwrap().len(), 4);
        // Reopened, the chain continues.
        let log = AuditLog::open(d.path(), key());
        log.record("worm hold", "pools/P/a", "done").unwrap();
        assert_eq!(log.verify().unwrap().len(), 5);
        let path = d.path().join(FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        let changed = good.replacen("pools/P2", "pools/Q2", 1);
        std::fs::write(&path, &changed).unwrap();
        let e = log.verify().unwrap_err().to_string();
        assert!(e.contains("entry 3"), "{e}");
        let lines: Vec<&str> = good.lines().collect();
        let removed = [&lines[..1], &lines[2..]].concat().join("\n");
        std::fs::write(&path, removed).unwrap();
        let e = log.verify().unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
    }
}
