//! `kms setbackend`: choosing the KMS that serves a store's data keys, and
//! the KMIP settings given on the command line or as mount options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CliError;
use super::args::KmsCmd;
use super::out::Out;
use crate::kmip::{KmipConfig, KmipKms, KmipServer, KmsBackend};
use crate::store::Store;

/// `kms setbackend`: writes the store config; the next mount uses it.
pub fn set_backend(store: &Store, cmd: &KmsCmd, out: &mut Out) -> Result<(), CliError> {
    let KmsCmd::Setbackend {
        backend,
        servers,
        ca,
        cert,
        key,
        key_cache_secs,
    } = cmd
    else {
        unreachable!("called for setbackend only")
    };
    let new = match backend.as_str() {
        "embedded" => KmsBackend::Embedded,
        "kmip" => KmsBackend::Kmip(kmip_config(servers, ca, cert, key, *key_cache_secs)?),
        other => {
            return Err(CliError::Usage(format!(
                "unknown KMS backend '{other}' (embedded or kmip)"
            )));
        }
    };
    if let KmsBackend::Kmip(k) = &new {
        let probe = KmipKms::new(k, Duration::from_secs(store.config.kms_timeout_secs)).probe();
        for p in probe {
            out.line(match p.millis {
                Some(ms) => format!("server {}: answered in {ms:.1} ms", p.address),
                None => format!(
                    "server {}: not answering now: {}",
                    p.address,
                    p.error.unwrap_or_default()
                ),
            });
        }
    }
    // From disk: the running config holds this mount's -o overrides, which must not persist.
    let mut config = crate::store::Config::load(&store.dir)?;
    config.kms = new;
    config.save(&store.dir)?;
    out.line(format!(
        "KMS backend set to {backend}; it serves this store from the next mount"
    ));
    Ok(())
}

/// A KMIP config from command-line or mount-option values.
pub fn kmip_config(
    servers: &[String],
    ca: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    key_cache_secs: Option<u64>,
) -> Result<KmipConfig, CliError> {
    if servers.is_empty() {
        return Err(CliError::Usage(
            "a KMIP backend needs at least one --server HOST:PORT".into(),
        ));
    }
    let file = |p: &Option<PathBuf>, what: &str| -> Result<PathBuf, CliError> {
        let p = p
            .as_deref()
            .ok_or_else(|| CliError::Usage(format!("a KMIP backend needs --{what} FILE")))?;
        absolute(p)
    };
    let (ca, cert, key) = (file(ca, "ca")?, file(cert, "cert")?, file(key, "key")?);
    let list = servers
        .iter()
        .enumerate()
        .map(|(i, a)| KmipServer {
            address: a.clone(),
            priority: i as u32 + 1,
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            server_name: None,
        })
        .collect();
    let mut cfg = KmipConfig::new(list);
    cfg.key_cache_secs = key_cache_secs.unwrap_or(cfg.key_cache_secs);
    Ok(cfg)
}

fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    std::fs::canonicalize(p).map_err(|e| CliError::Io {
        path: p.display().to_string(),
        source: e,
    })
}
