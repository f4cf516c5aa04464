//! `kmsfs import`: the two phases of importing encrypted images
//! (NetBackup Security and Encryption Guide, "About importing KMS encrypted images").

use super::CliError;
use super::args::ImportArgs;
use super::out::Out;
use crate::import::{Survey, restore, survey};
use crate::store::Store;
use crate::util::progress::{Progress, Unit};

pub fn run(store: &Store, a: &ImportArgs, out: &mut Out) -> Result<(), CliError> {
    if a.phase.is_some_and(|p| !(1..=2).contains(&p)) {
        return Err(CliError::Usage("--phase is 1 or 2".into()));
    }
    let volumes = a.volumes.len() as u64;
    let s = survey(store.keys.client().as_ref(), &a.volumes, |n| {
        out.progress(Progress {
            task: "reading volume headers".into(),
            done: n as u64,
            total: volumes,
            unit: Unit::Volumes,
        })
    });
    if a.phase != Some(2) {
        print_survey(&s, a.json, out);
    }
    if a.phase == Some(1) {
        return Ok(());
    }
    let total: u64 = s
        .images
        .iter()
        .filter(|i| i.complete())
        .filter_map(|i| i.size)
        .sum();
    let mut done = 0;
    let r = restore(store, &s, |n| {
        done += n;
        out.progress(Progress {
            task: "importing images".into(),
            done,
            total,
            unit: Unit::Bytes,
        })
    });
    if a.json {
        out.json(&r);
    } else {
        for i in &r.imported {
            out.line(format!("imported {i}"));
        }
        for i in &r.already {
            out.line(format!("already in the catalog: {i}"));
        }
        for (label, list) in [
            ("KEY MISSING", &r.missing_keys),
            ("DAMAGED", &r.damaged),
            ("INCOMPLETE", &r.incomplete),
            ("REFUSED", &r.refused),
        ] {
            for i in list {
                out.line(format!("{label} {i}"));
            }
        }
    }
    if r.failed() {
        return Err(CliError::Damaged(format!(
            "{} not imported ({} need a key, {} damaged, {} incomplete, {} refused); run phase 2 again once fixed",
            r.missing_keys.len() + r.damaged.len() + r.incomplete.len() + r.refused.len(),
            r.missing_keys.len(),
            r.damaged.len(),
            r.incomplete.len(),
            r.refused.len()
        )));
    }
    Ok(())
}

fn print_survey(s: &Survey, json: bool, out: &mut Out) {
    if json {
        out.json(s);
        return;
    }
    out.line(format!(
        "{:<10} {:<20} {:>9}  FILE",
        "VOLUME", "POOL", "FRAGMENTS"
    ));
    for v in &s.volumes {
        out.line(format!(
            "{:<10} {:<20} {:>9}  {}",
            v.barcode,
            v.pool,
            v.fragments,
            v.path.display()
        ));
        if let Some(p) = &v.problem {
            out.line(format!("  problem: {p}"));
        }
        if let Some(p) = &v.refused {
            out.line(format!("  refused: {p}"));
        }
    }
    out.line(format!(
        "{:<40} {:>12} {:<32} {:<8} VOLUMES",
        "IMAGE", "SIZE", "KEY TAG", "KEY HERE"
    ));
    for i in &s.images {
        let size = i.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
        let have = if i.key_tag.is_none() {
            "-"
        } else if i.have_key {
            "yes"
        } else {
            "NO"
        };
        out.line(format!(
            "{:<40} {:>12} {:<32} {:<8} {}",
            i.name(),
            size,
            i.key_tag.as_deref().unwrap_or("(clear)"),
            have,
            i.volumes.join(",")
        ));
        if !i.missing.is_empty() {
            out.line(format!("  missing: {}", i.missing.join(", ")));
        }
        for p in &i.problems {
            out.line(format!("  refused: {p}"));
        }
    }
}
