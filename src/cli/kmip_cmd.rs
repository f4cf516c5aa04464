//! `kmsfs kms …` on a store whose keys are in KMIP servers, and
//! `kms setbackend`: choosing the KMS. Keys of a KMIP store are created and
//! retired with the server's own tools; kmsfs shows what it sees.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CliError;
use super::args::KmsCmd;
use super::out::Out;
use crate::kmip::{KmipConfig, KmipKms, KmipServer, KmsBackend};
use crate::store::Store;

/// Runs a `kms` command against the store's KMIP servers.
pub fn run(store: &Store, kmip: &KmipKms, cmd: &KmsCmd, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        KmsCmd::Status(j) => status(store, kmip, j.json, out),
        KmsCmd::Listkeys { kg, json } => list_keys(kmip, kg.as_deref(), *json, out)?,
        KmsCmd::Listkgs(j) => list_groups(kmip, j.json, out)?,
        KmsCmd::Setbackend { .. } => set_backend(store, cmd, out)?,
        _ => {
            return Err(CliError::Usage(format!(
                "this store's keys are in KMIP servers ({}): create, activate and retire \
                 keys there; kmsfs kms listkeys shows what kmsfs sees",
                kmip_addresses(&store.config.kms)
            )));
        }
    }
    Ok(())
}

fn kmip_addresses(b: &KmsBackend) -> String {
    match b {
        KmsBackend::Kmip(k) => k
            .servers
            .iter()
            .map(|s| s.address.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        KmsBackend::Embedded => "none".into(),
    }
}

fn status(store: &Store, kmip: &KmipKms, json: bool, out: &mut Out) {
    let probes = kmip.probe();
    let last = kmip.last_answer();
    if json {
        out.json(&serde_json::json!({
            "backend": "kmip",
            "servers": probes,
            "last_answer": last,
            "config": store.config.kms,
        }));
        return;
    }
    out.line("backend: KMIP");
    for p in &probes {
        match (p.ok, p.millis) {
            (true, Some(ms)) => out.line(format!(
                "server {} (priority {}): answered in {ms:.1} ms",
                p.address, p.priority
            )),
            _ => out.line(format!(
                "server {} (priority {}): NOT ANSWERING: {}",
                p.address,
                p.priority,
                p.error.as_deref().unwrap_or("?")
            )),
        }
    }
    if let Some(a) = last {
        out.line(format!(
            "last answer: {} by {} in {:.1} ms",
            a.operation, a.server, a.millis
        ));
    }
}

fn list_keys(kmip: &KmipKms, kg: Option<&str>, json: bool, out: &mut Out) -> Result<(), CliError> {
    let keys = kmip.list(kg)?;
    if json {
        out.json(&keys);
        return Ok(());
    }
    out.line(format!(
        "{:<16} {:<16} {:<32} {:<10} KMIP UID",
        "KEY GROUP", "NAME", "TAG", "STATE"
    ));
    for k in keys {
        out.line(format!(
            "{:<16} {:<16} {:<32} {:<10} {}",
            k.group,
            k.name,
            k.tag,
            k.state.to_string(),
            k.uid
        ));
    }
    Ok(())
}

fn list_groups(kmip: &KmipKms, json: bool, out: &mut Out) -> Result<(), CliError> {
    let keys = kmip.list(None)?;
    let mut groups: Vec<(String, usize, Option<String>)> = Vec::new();
    for k in keys.iter().filter(|k| !k.group.is_empty()) {
        if groups.last().is_none_or(|g| g.0 != k.group) {
            groups.push((k.group.clone(), 0, None));
        }
        let g = groups.last_mut().expect("pushed");
        g.1 += 1;
        if k.state == crate::kms::KeyState::Active {
            g.2 = Some(k.tag.clone());
        }
    }
    if json {
        let v: Vec<_> = groups
            .iter()
            .map(|(n, c, a)| serde_json::json!({"name": n, "keys": c, "active_tag": a}))
            .collect();
        out.json(&v);
        return Ok(());
    }
    out.line(format!(
        "{:<24} {:>4}  NEWEST ACTIVE TAG",
        "KEY GROUP", "KEYS"
    ));
    for (n, c, a) in groups {
        out.line(format!("{n:<24} {c:>4}  {}", a.as_deref().unwrap_or("-")));
    }
    Ok(())
}

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
