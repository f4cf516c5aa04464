//! `kmsfs lsu …`: creating LSUs and looking after their keys and space.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::util::progress::{Progress, Unit};

use super::CliError;
use super::args::{JsonArg, LsuCmd};
use super::out::{Out, iso_time};
use crate::catalog::{FileAttrs, KekPolicy, LsuMode};
use crate::control;
use crate::kms::Unlock;
use crate::msdp::CreateLsu;
use crate::msdp::convert::ConvertProgress;
use crate::store::Store;

pub fn run(store: &Store, cmd: &LsuCmd, out: &mut Out) -> Result<(), CliError> {
    let m = &store.msdp;
    match cmd {
        LsuCmd::Create { .. } => create(store, cmd, out)?,
        LsuCmd::List(JsonArg { json }) => list(store, *json, out)?,
        LsuCmd::Getmode { name, json } => {
            let r = m.getmode(name)?;
            if *json {
                out.json(&r);
            } else {
                let mode = match r.mode.as_str() {
                    "kms" if r.converting => "KMS mode (converting legacy segments)",
                    "kms" => "KMS mode",
                    "legacy-kms" => "legacy KMS mode",
                    _ => "no encryption",
                };
                out.line(format!("LSU {}: {mode}", r.lsu));
                if let Some(g) = &r.key_group {
                    out.line(format!("key group: {g}"));
                }
                if let Some(k) = r.active_kek {
                    out.line(format!("active KEK: {k}"));
                }
                for t in &r.root_keys {
                    out.line(format!("root key: {t}"));
                }
                for t in &r.legacy_keys {
                    out.line(format!("legacy key: {t}"));
                }
            }
        }
        LsuCmd::Keydict { name, json } => {
            let d = m.keydict(name)?;
            if *json {
                out.json(&d);
            } else {
                out.line(format!(
                    "{:<6} {:<9} {:<33} {:<21} {:>9}",
                    "KEK", "STATE", "ROOT KEY TAG", "CREATED", "SEGMENTS"
                ));
                for k in d {
                    out.line(format!(
                        "{:<6} {:<9} {:<33} {:<21} {:>9}",
                        k.kek_id,
                        k.state,
                        k.root_key_tag,
                        iso_time((k.created_ns.max(0) / 1_000_000_000) as u64),
                        k.segments
                    ));
                }
            }
        }
        LsuCmd::RotateKek { name } => {
            let k = m.rotate_kek(name)?;
            out.line(format!(
                "LSU {name}: KEK {} is now active (wrapped by root key {}); older KEKs are inactive",
                k.id, k.wrapped.root_tag
            ));
        }
        LsuCmd::Rewrap { name } => {
            let r = m.rewrap(name)?;
            out.line(format!(
                "LSU {name}: {} and {} rewrapped; every key of the LSU is now wrapped by root key {}",
                super::out::count(r.keks, "KEK"),
                super::out::count(r.fingerprint_keys, "fingerprint key"),
                r.root
            ));
        }
        LsuCmd::Convert { name, .. } => out.json(&m.convert_step(name)?),
        LsuCmd::Setmode { name, mode } => {
            let mode = parse_mode(mode)?;
            m.set_mode(name, mode)?;
            out.line(format!("LSU {name} is in {} mode", mode.as_str()));
        }
        LsuCmd::Recover {
            name,
            from,
            bucket,
            json,
        } => recover(store, name, &recover_from(from, bucket)?, *json, out)?,
        LsuCmd::Gc { name, json } => {
            let task = format!("reclaiming LSU {name}");
            let r = m.reclaim(name, |done, total| {
                out.progress(Progress {
                    task: task.clone(),
                    done,
                    total,
                    unit: Unit::Containers,
                })
            })?;
            if *json {
                out.json(&r);
            } else {
                out.line(format!(
                    "LSU {name}: {} unused segments dropped, {} containers removed, {} compacted, {} orphan files removed, {} recipe files removed, {} written; {} -> {} bytes",
                    r.dead_segments,
                    r.containers_removed,
                    r.containers_compacted,
                    r.orphans_removed,
                    r.recipes_removed,
                    r.recipes_written,
                    r.bytes_before,
                    r.bytes_after
                ));
            }
        }
    }
    Ok(())
}

/// `--from DIR` or `--from s3://…` with the bucket's settings.
fn recover_from(
    from: &Path,
    b: &super::args::BucketArgs,
) -> Result<crate::msdp::recover::RecoverFrom, CliError> {
    use crate::msdp::recover::RecoverFrom;
    if !super::args::is_bucket_url(from) {
        if b.endpoint.is_some()
            || b.credentials_file.is_some()
            || b.cache_size.is_some()
            || b.timeout.is_some()
        {
            return Err(CliError::Usage(format!(
                "--endpoint, --credentials-file, --cache-size and --timeout go with --from s3://BUCKET/PREFIX, not a directory ({})",
                from.display()
            )));
        }
        return Ok(RecoverFrom::Dir(from.into()));
    }
    let from = from.to_str().expect("an s3:// URL is UTF-8");
    let c = bucket_config(from, b)?;
    c.bucket_prefix()?;
    Ok(RecoverFrom::Bucket(c))
}

fn recover(
    store: &Store,
    name: &str,
    from: &crate::msdp::recover::RecoverFrom,
    json: bool,
    out: &mut Out,
) -> Result<(), CliError> {
    let attrs = dir_attrs();
    let task = format!("recovering LSU {name}");
    let r = store.msdp.recover(name, from, attrs, &mut |done, total| {
        out.progress(Progress {
            task: task.clone(),
            done,
            total,
            unit: Unit::Bytes,
        })
    })?;
    if json {
        out.json(&r);
    } else {
        out.line(format!(
            "LSU {name}: {} images ({} bytes) recovered{}; {} segments in {} containers",
            r.images,
            r.bytes,
            if r.already > 0 {
                format!(", {} were back already", r.already)
            } else {
                String::new()
            },
            r.segments,
            r.containers
        ));
        if r.older > 0 {
            out.line(format!(
                "{} images found beside a newer one at the same name came back as NAME.~ID",
                r.older
            ));
        }
        for s in &r.skipped {
            out.line(format!("not recovered: {s}"));
        }
    }
    if r.skipped.is_empty() {
        Ok(())
    } else {
        Err(CliError::Damaged(format!(
            "LSU {name}: {} images could not be recovered (listed above)",
            r.skipped.len()
        )))
    }
}

/// The settings of `--cloud …`, if given.
fn cloud_config(
    a: &super::args::CloudArgs,
) -> Result<Option<crate::msdp::backend::CloudConfig>, CliError> {
    a.cloud
        .as_deref()
        .map(|url| bucket_config(url, &a.bucket))
        .transpose()
}

/// A cloud LSU's settings: the bucket at `url` reached as `b` says.
fn bucket_config(
    url: &str,
    b: &super::args::BucketArgs,
) -> Result<crate::msdp::backend::CloudConfig, CliError> {
    use crate::msdp::backend as be;
    let (Some(endpoint), Some(credentials_file)) = (&b.endpoint, &b.credentials_file) else {
        return Err(CliError::Usage(format!(
            "{url} needs --endpoint URL and --credentials-file FILE"
        )));
    };
    Ok(be::CloudConfig {
        url: url.to_string(),
        endpoint: endpoint.clone(),
        region: b.region.clone(),
        credentials_file: std::path::absolute(credentials_file).map_err(|e| CliError::Io {
            path: credentials_file.display().to_string(),
            source: e,
        })?,
        cache_bytes: b.cache_size.unwrap_or(be::DEFAULT_CACHE_BYTES),
        timeout_secs: b.timeout.unwrap_or(be::DEFAULT_TIMEOUT_SECS),
        owner: None,
    })
}

/// A folder an LSU command makes (`msdp/NAME`, and the folders of
/// recovered images): root's, mode 0755, made now.
fn dir_attrs() -> FileAttrs {
    let now = crate::util::clock::now_ns();
    FileAttrs {
        mode: libc::S_IFDIR | 0o755,
        uid: 0,
        gid: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
    }
}

fn parse_mode(s: &str) -> Result<LsuMode, CliError> {
    match s {
        "none" => Ok(LsuMode::None),
        "legacy-kms" | "legacy" => Ok(LsuMode::Legacy),
        "kms" => Ok(LsuMode::Kms),
        _ => Err(CliError::Usage(format!(
            "unknown LSU mode '{s}' (none, legacy-kms, kms)"
        ))),
    }
}

fn create(store: &Store, cmd: &LsuCmd, out: &mut Out) -> Result<(), CliError> {
    let LsuCmd::Create {
        name,
        kms,
        legacy_kms,
        key_group,
        kek_max_segments,
        kek_max_bytes,
        kek_max_age,
        cloud,
    } = cmd
    else {
        unreachable!("called for create")
    };
    let mode = match (kms, legacy_kms) {
        (true, _) => LsuMode::Kms,
        (_, true) => LsuMode::Legacy,
        _ => LsuMode::None,
    };
    if mode == LsuMode::None && key_group.is_some() {
        return Err(CliError::Usage(
            "--key-group needs --kms or --legacy-kms".into(),
        ));
    }
    let d = KekPolicy::default();
    let policy = KekPolicy {
        max_segments: kek_max_segments.unwrap_or(d.max_segments),
        max_bytes: kek_max_bytes.unwrap_or(d.max_bytes),
        max_age_secs: kek_max_age.unwrap_or(d.max_age_secs),
    };
    let attrs = dir_attrs();
    let rec = store.msdp.create(
        CreateLsu {
            name: name.clone(),
            mode,
            key_group: key_group.clone(),
            policy,
            cloud: cloud_config(cloud)?,
        },
        attrs,
    )?;
    out.line(format!(
        "created LSU {} ({} mode{}); images go in msdp/{}/",
        rec.name,
        rec.mode.as_str(),
        rec.key_group
            .as_deref()
            .map(|g| format!(", key group {g}"))
            .unwrap_or_default(),
        rec.name
    ));
    Ok(())
}

fn list(store: &Store, json: bool, out: &mut Out) -> Result<(), CliError> {
    let lsus = store.catalog.lsus()?;
    if json {
        let v: Vec<_> = lsus
            .iter()
            .map(|l| {
                let (location, endpoint) = match store.msdp.location(&l.name) {
                    Some((url, endpoint)) => (url, Some(endpoint)),
                    None => ("local".to_string(), None),
                };
                serde_json::json!({"name": l.name, "mode": l.mode.as_str(), "key_group": l.key_group, "converting": l.converting, "location": location, "endpoint": endpoint})
            })
            .collect();
        out.json(&v);
        return Ok(());
    }
    out.line(format!(
        "{:<24} {:<11} {:<24} {}",
        "LSU", "MODE", "KEY GROUP", "LOCATION"
    ));
    for l in lsus {
        let location = match store.msdp.location(&l.name) {
            Some((url, endpoint)) => format!("{url} at {endpoint}"),
            None => "local".to_string(),
        };
        out.line(format!(
            "{:<24} {:<11} {:<24} {location}",
            l.name,
            l.mode.as_str(),
            l.key_group.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}

/// `lsu convert NAME`: one container per step, in the daemon if one
/// serves the store (so reads keep working), with a progress bar here.
pub fn convert(
    dir: &Path,
    name: &str,
    unlock: impl Fn() -> Result<Unlock, CliError>,
) -> Result<i32, CliError> {
    let step = super::Op {
        cmd: super::Cmd::Lsu(LsuCmd::Convert {
            name: name.into(),
            step: true,
        }),
        bytes: false,
    }
    .to_value()?;
    let mut local: Option<Store> = None;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("converting LSU {name}"));
    let mut done = 0u64;
    loop {
        let p: ConvertProgress = match (&local, control::forward(dir, step.clone(), &mut |_| {})) {
            (None, Some(r)) if r.code != 0 => {
                bar.abandon();
                eprint!("{}", r.stderr);
                return Ok(r.code);
            }
            (None, Some(r)) => serde_json::from_str(&r.stdout)
                .map_err(|e| CliError::Usage(format!("daemon answered: {e}")))?,
            _ => {
                if local.is_none() {
                    local = Some(Store::open(dir, unlock()?)?);
                }
                local.as_ref().expect("opened").msdp.convert_step(name)?
            }
        };
        done += p.done_bytes;
        bar.set_length(done + p.remaining_bytes);
        bar.set_position(done);
        if p.finished {
            bar.finish_and_clear();
            println!(
                "LSU {name} is in KMS mode: {done} bytes of legacy segments re-encrypted under DEKs and KEKs"
            );
            return Ok(0);
        }
    }
}
