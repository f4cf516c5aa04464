//! `kmsfs kms …`: key groups and keys.

use std::path::Path;

use zeroize::Zeroizing;

use super::args::KmsCmd;
use super::out::{Out, iso_time};
use super::{CliError, read_secret};
use crate::kms::{KeyState, NewKey, export_container, read_container};
use crate::store::{KmsStatus, Store};

pub fn run(store: &Store, cmd: &KmsCmd, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        KmsCmd::Listkgs(j) => list_groups(store, j.json, out)?,
        KmsCmd::Listkeys { kg, json } => list_keys(store, kg.as_deref(), *json, out)?,
        KmsCmd::Setbackend { .. } => super::kmip_cmd::set_backend(store, cmd, out)?,
        KmsCmd::Status(j) => status(store, j.json, out),
        _ => change(store, cmd, out)?,
    }
    Ok(())
}

/// The commands that change keys: only where kmsfs holds them.
fn change(store: &Store, cmd: &KmsCmd, out: &mut Out) -> Result<(), CliError> {
    let kms = store.keys.admin()?;
    match cmd {
        KmsCmd::Createkg { name, description } => {
            kms.write(|ks| ks.create_group(name, description))?;
            out.line(format!("created key group {name}"));
        }
        KmsCmd::Deletekg { name } => {
            kms.write(|ks| ks.delete_group(name))?;
            out.line(format!("deleted key group {name}"));
        }
        KmsCmd::Createkey {
            kg,
            name,
            pass_phrase_file,
            activate,
            description,
        } => {
            let pass = pass_phrase_file.as_deref().map(read_secret).transpose()?;
            let tag = kms.write(|ks| {
                ks.create_key(NewKey {
                    group: kg,
                    name,
                    description,
                    passphrase: pass.as_deref().map(|p| &p[..]),
                    activate: *activate,
                })
            })?;
            out.line(format!(
                "created key {kg}/{name} tag {tag}{}",
                if *activate { " (active)" } else { " (prelive)" }
            ));
        }
        KmsCmd::Modifykey {
            kg,
            name,
            state,
            rename,
            description,
            force,
        } => {
            let st = state.as_deref().map(|s| KeyState::parse(s).ok_or_else(|| CliError::Usage(format!("unknown key state '{s}' (prelive, active, inactive, deprecated, terminated)")))).transpose()?;
            if let (true, Some(s)) = (*force, st) {
                kms.write(|ks| ks.force_state(kg, name, s))?;
                store.msdp.forget_keys();
            }
            kms.write(|ks| ks.modify_key(kg, name, st, rename.as_deref(), description.as_deref()))?;
            out.line(format!("modified key {kg}/{name}"));
        }
        KmsCmd::Deletekey { kg, name } => {
            kms.write(|ks| ks.delete_key(kg, name))?;
            out.line(format!("deleted key {kg}/{name}"));
        }
        KmsCmd::Recoverkey {
            kg,
            name,
            tag,
            pass_phrase_file,
        } => recover(store, kg, name, tag, pass_phrase_file, out)?,
        KmsCmd::Export {
            out: file,
            pass_phrase_file,
            groups,
            force,
        } => {
            let pass = read_secret(pass_phrase_file)?;
            let n = kms.read(|ks| export_container(ks, groups, &pass, file, *force))?;
            out.line(format!("exported {n} keys to {}", file.display()));
        }
        KmsCmd::Import {
            input,
            pass_phrase_file,
            preview,
            preserve_kgname,
            json,
        } => {
            let pass = read_secret(pass_phrase_file)?;
            let body = read_container(input, &pass)?;
            let r = kms.write(|ks| ks.import_keys(&body, *preserve_kgname, *preview))?;
            if *json {
                out.json(&r);
            } else {
                let verb = if r.preview {
                    "would import"
                } else {
                    "imported"
                };
                out.line(format!(
                    "{verb} {}, skipped {} whose tag exists",
                    super::out::count(r.imported.len(), "key"),
                    r.skipped_existing_tag.len()
                ));
                let made = if r.preview { "would create" } else { "created" };
                for g in &r.groups_created {
                    out.line(format!("  {made} key group {g}"));
                }
                for k in &r.imported {
                    out.line(format!("  key: {k}"));
                }
                for t in &r.made_inactive {
                    out.line(format!(
                        "  made inactive (group already had an active key): {t}"
                    ));
                }
            }
        }
        KmsCmd::Listkgs(_)
        | KmsCmd::Listkeys { .. }
        | KmsCmd::Setbackend { .. }
        | KmsCmd::Status(_) => {
            unreachable!("answered without changing keys")
        }
    }
    Ok(())
}

fn list_keys(store: &Store, kg: Option<&str>, json: bool, out: &mut Out) -> Result<(), CliError> {
    let keys = store.keys.list_keys(kg)?;
    if json {
        out.json(&keys);
        return Ok(());
    }
    if store.keys.is_kmip() {
        // The server keeps the times and descriptions: its UID instead.
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
                k.uid.unwrap_or_default()
            ));
        }
        return Ok(());
    }
    let when = |t: Option<u64>| t.map(iso_time).unwrap_or_else(|| "-".into());
    out.line(format!(
        "{:<16} {:<16} {:<32} {:<10} {:<20} {:<20} {:<10} DESCRIPTION",
        "KEY GROUP", "NAME", "TAG", "STATE", "CREATED", "MODIFIED", "ORIGIN"
    ));
    for k in keys {
        out.line(format!(
            "{:<16} {:<16} {:<32} {:<10} {:<20} {:<20} {:<10} {}",
            k.group,
            k.name,
            k.tag,
            k.state.to_string(),
            when(k.created),
            when(k.modified),
            k.origin.unwrap_or_default(),
            k.description.unwrap_or_default()
        ));
    }
    Ok(())
}

fn list_groups(store: &Store, json: bool, out: &mut Out) -> Result<(), CliError> {
    let groups = store.keys.list_groups()?;
    if json {
        out.json(&groups);
        return Ok(());
    }
    if store.keys.is_kmip() {
        out.line(format!(
            "{:<24} {:>4}  NEWEST ACTIVE TAG",
            "KEY GROUP", "KEYS"
        ));
        for g in groups {
            out.line(format!(
                "{:<24} {:>4}  {}",
                g.name,
                g.keys,
                g.active_tag.as_deref().unwrap_or("-")
            ));
        }
        return Ok(());
    }
    out.line(format!(
        "{:<24} {:>4}  {:<32}  DESCRIPTION",
        "KEY GROUP", "KEYS", "ACTIVE TAG"
    ));
    for g in groups {
        out.line(format!(
            "{:<24} {:>4}  {:<32}  {}",
            g.name,
            g.keys,
            g.active_tag.as_deref().unwrap_or("-"),
            g.description.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}

/// `kms status`: which KMS serves the keys and how it answers now.
fn status(store: &Store, json: bool, out: &mut Out) {
    let status = store.keys.status();
    if json {
        out.json(&match &status {
            KmsStatus::Embedded { keystore } => serde_json::json!({
                "backend": store.keys.describe(),
                "keystore": keystore.display().to_string(),
                "hmk": store.config.hmk,
            }),
            KmsStatus::Kmip {
                servers,
                last_answer,
            } => serde_json::json!({
                "backend": "kmip",
                "servers": servers,
                "last_answer": last_answer,
                "config": store.config.kms,
            }),
        });
        return;
    }
    match status {
        KmsStatus::Embedded { keystore } => out.line(format!(
            "backend: {}\nkeystore: {}\nhost master key: {:?}",
            store.keys.describe(),
            keystore.display(),
            store.config.hmk
        )),
        KmsStatus::Kmip {
            servers,
            last_answer,
        } => {
            out.line("backend: KMIP");
            for p in &servers {
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
            if let Some(a) = last_answer {
                out.line(format!(
                    "last answer: {} by {} in {:.1} ms",
                    a.operation, a.server, a.millis
                ));
            }
        }
    }
}

/// Recovers a pass-phrase key; checks it against a check value the catalog
/// knows for the tag (from images written or imported), if any.
fn recover(
    store: &Store,
    kg: &str,
    name: &str,
    tag: &str,
    file: &Path,
    out: &mut Out,
) -> Result<(), CliError> {
    let pass: Zeroizing<Vec<u8>> = read_secret(file)?;
    let known = store
        .catalog
        .images()?
        .into_iter()
        .find(|i| i.key_tag.as_deref() == Some(tag))
        .and_then(|i| i.kcv);
    store
        .keys
        .admin()?
        .write(|ks| ks.recover_key(kg, name, tag, &pass, known.as_deref()))?;
    let checked = if known.is_some() {
        "verified against the catalog"
    } else {
        "no check value known for this tag: not verified"
    };
    out.line(format!(
        "recovered key {kg}/{name} tag {tag} (inactive; {checked})"
    ));
    Ok(())
}
