//! `kmsfs worm …`: retention policies of pools and LSUs, legal holds,
//! governance release and the compliance clock. The rules live in the
//! catalog ([`crate::catalog::WormPolicy`]); this is their command line.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::CliError;
use super::args::{AuditCmd, JsonArg, WormCmd};
use super::out::{Out, iso_time};
use super::store_cmd::find_image;
use crate::catalog::{POOLS_INO, WormMode, WormPolicy};
use crate::store::Store;

pub fn run(store: &Store, cmd: &WormCmd, out: &mut Out) -> Result<(), CliError> {
    let c = &store.catalog;
    match cmd {
        WormCmd::Set { .. } => set(store, cmd, out)?,
        WormCmd::Show(JsonArg { json }) => show(store, *json, out)?,
        WormCmd::Hold { image, reason } => {
            c.hold(find_image(store, image)?, reason)?;
            tracing::warn!(image, reason, "legal hold set");
            out.line(format!("{image}: on legal hold ({reason})"));
        }
        WormCmd::Unhold { image } => {
            c.unhold(find_image(store, image)?)?;
            tracing::warn!(image, "legal hold lifted");
            out.line(format!("{image}: legal hold lifted"));
        }
        WormCmd::Extend { image, by } => {
            let until = c
                .clock()
                .now_ns()
                .saturating_add(crate::catalog::secs_ns(*by));
            let id = find_image(store, image)?;
            c.extend(id, until)?;
            // A cloud LSU's objects: retained as long by the object store.
            if let Some(img) = c.image(id)? {
                store.msdp.retain_image(&img)?;
            }
            out.line(format!("{image}: retained at least until {}", when(until)));
        }
        WormCmd::Release {
            image,
            governance_bypass,
        } => {
            let proof = digest_of(governance_bypass)?;
            let id = find_image(store, image)?;
            match c.release(id, &proof) {
                Ok(()) => {
                    tracing::warn!(image, "governance lock released with the bypass credential");
                    out.line(format!("{image}: governance lock released"));
                }
                Err(e) => {
                    tracing::warn!(image, "governance release refused: {e}");
                    return Err(e.into());
                }
            }
        }
        WormCmd::Clock { confirm, skew } => {
            if let Some(secs) = skew {
                c.set_clock_skew(*secs)?;
                tracing::warn!(skew_secs = secs, "compliance clock skew set by an operator");
            }
            if *confirm {
                let to = c.confirm_clock()?;
                tracing::warn!(to = %when(to), "compliance clock set to the system clock by an operator");
            }
            let ahead = c.clock().refused_ns() / 1_000_000_000 * 1_000_000_000;
            out.line(format!("compliance clock: {}", when(c.clock().now_ns())));
            out.line(format!(
                "believed after a reboot: up to {} s ahead of the store's last time",
                c.clock_skew()? / 1_000_000_000
            ));
            if ahead > 0 {
                out.line(format!(
                    "the system clock is {} s ahead and not believed (kmsfs worm clock --confirm)",
                    ahead / 1_000_000_000
                ));
            }
        }
    }
    Ok(())
}

fn when(ns: i64) -> String {
    iso_time((ns.max(0) / 1_000_000_000) as u64)
}

/// SHA-256 of a credential file's content.
fn digest_of(path: &std::path::Path) -> Result<[u8; 32], CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    if bytes.len() < 16 {
        return Err(CliError::Usage(format!(
            "{}: a bypass credential holds at least 16 bytes",
            path.display()
        )));
    }
    Ok(Sha256::digest(&bytes).into())
}

/// The catalog's pool name of `pools/POOL` or `msdp/LSU`, which must exist.
fn target_pool(store: &Store, target: &str) -> Result<String, CliError> {
    let t = target.trim_matches('/');
    if let Some(lsu) = t.strip_prefix("msdp/") {
        if store.catalog.lsu(lsu)?.is_some() {
            return Ok(crate::catalog::lsu_pool(lsu));
        }
    } else if let Some(pool) = t.strip_prefix("pools/")
        && store.catalog.lookup(POOLS_INO, pool)?.is_some()
    {
        return Ok(pool.to_string());
    }
    Err(CliError::Usage(format!(
        "'{target}' is neither pools/POOL nor msdp/LSU of this store"
    )))
}

fn set(store: &Store, cmd: &WormCmd, out: &mut Out) -> Result<(), CliError> {
    let WormCmd::Set {
        target,
        mode,
        min,
        max,
        default,
        bypass_key_file,
        governance_bypass,
    } = cmd
    else {
        unreachable!("set")
    };
    let mode = match mode.as_str() {
        "governance" => WormMode::Governance,
        "compliance" => WormMode::Compliance,
        m => {
            return Err(CliError::Usage(format!(
                "--mode {m}: governance or compliance"
            )));
        }
    };
    let bypass = bypass_key_file.as_deref().map(digest_of).transpose()?;
    let pool = target_pool(store, target)?;
    let p = WormPolicy {
        mode,
        min_secs: *min,
        max_secs: *max,
        default_secs: *default,
        bypass,
    };
    let proof = governance_bypass.as_deref().map(digest_of).transpose()?;
    let set = store.catalog.set_worm(&pool, p, proof.as_ref())?;
    tracing::warn!(target, mode = ?set.mode, default_secs = set.default_secs, "retention set");
    out.line(format!(
        "{target}: {:?} retention, default {} s (min {} s, max {} s)",
        set.mode, set.default_secs, set.min_secs, set.max_secs
    ));
    Ok(())
}

#[derive(Serialize)]
struct PolicyRow {
    target: String,
    mode: String,
    min_secs: u64,
    max_secs: u64,
    default_secs: u64,
}

#[derive(Serialize)]
struct LockRow {
    image: String,
    until: String,
    hold: Option<String>,
    active: bool,
}

fn show(store: &Store, json: bool, out: &mut Out) -> Result<(), CliError> {
    let c = &store.catalog;
    let policies: Vec<PolicyRow> = c
        .worms()?
        .into_iter()
        .map(|(pool, p)| PolicyRow {
            target: if pool.starts_with("msdp/") {
                pool
            } else {
                format!("pools/{pool}")
            },
            mode: format!("{:?}", p.mode).to_lowercase(),
            min_secs: p.min_secs,
            max_secs: p.max_secs,
            default_secs: p.default_secs,
        })
        .collect();
    let now = c.clock().now_ns();
    let mut locks = Vec::new();
    for (id, l) in c.locks()? {
        let Some(img) = c.image(id)? else { continue };
        locks.push(LockRow {
            image: format!("{}/{}", img.pool, img.path),
            until: when(l.until_ns),
            active: l.active(now),
            hold: l.hold,
        });
    }
    if json {
        out.json(&serde_json::json!({ "clock": when(now), "policies": policies, "locks": locks }));
        return Ok(());
    }
    out.line(format!("compliance clock: {}", when(now)));
    let rows: Vec<Vec<String>> = policies
        .into_iter()
        .map(|p| {
            vec![
                p.target,
                p.mode,
                p.default_secs.to_string(),
                p.min_secs.to_string(),
                p.max_secs.to_string(),
            ]
        })
        .collect();
    out.table(
        &["TARGET", "MODE", "DEFAULT_S", "MIN_S", "MAX_S"],
        &[2, 3, 4],
        &rows,
    );
    let rows: Vec<Vec<String>> = locks
        .into_iter()
        .map(|l| {
            vec![
                l.image,
                l.until,
                l.hold.unwrap_or_else(|| "-".into()),
                if l.active { "locked" } else { "expired" }.into(),
            ]
        })
        .collect();
    out.table(&["IMAGE", "UNTIL", "HOLD", "STATE"], &[], &rows);
    Ok(())
}

/// `kmsfs audit show|verify`.
pub fn audit(store: &Store, cmd: &AuditCmd, out: &mut Out) -> Result<(), CliError> {
    let entries = store.audit.verify();
    match cmd {
        AuditCmd::Verify => {
            let n = entries.map_err(|e| CliError::Usage(e.to_string()))?.len();
            out.line(format!(
                "audit log intact: {n} entries, chain and MACs verified"
            ));
        }
        AuditCmd::Show { json, since } => {
            let entries = entries.map_err(|e| CliError::Usage(e.to_string()))?;
            let since = since.as_deref().unwrap_or("");
            let shown: Vec<_> = entries
                .into_iter()
                .filter(|e| e.time.as_str() >= since)
                .collect();
            if *json {
                out.json(&shown);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = shown
                .into_iter()
                .map(|e| vec![e.seq.to_string(), e.time, e.op, e.target, e.outcome])
                .collect();
            out.table(
                &["SEQ", "TIME", "OPERATION", "TARGET", "OUTCOME"],
                &[0],
                &rows,
            );
        }
    }
    Ok(())
}
