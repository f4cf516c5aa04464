//! tracing setup: stderr in the foreground, a file for a daemon.

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(level: Option<&str>, file: Option<&Path>) {
    let filter = match level {
        Some(l) => EnvFilter::new(format!("kmsfs={l},fuser=warn")),
        None => EnvFilter::try_from_env("KMSFS_LOG")
            .unwrap_or_else(|_| EnvFilter::new("kmsfs=info,fuser=warn")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    }) {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
