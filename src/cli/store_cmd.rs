//! `kmsfs init`, `status`, `volume list`, `image list`.

use std::path::Path;

use serde::Serialize;

use super::args::{ImageCmd, InitArgs, JsonArg, VolumeCmd};
use super::out::{Out, printable};
use super::{CliError, Global, read_secret};
use crate::store::{InitOptions, KmsStatus, Store};
use crate::util::progress::{Progress, Unit};

pub fn init(g: &Global, a: &InitArgs, out: &mut Out) -> Result<(), CliError> {
    if a.if_absent && a.dir.join(crate::store::CONFIG_FILE).exists() {
        out.line(format!("store {} exists", a.dir.display()));
        return Ok(());
    }
    let opts = InitOptions {
        passphrase: g.passphrase_file.as_deref().map(read_secret).transpose()?,
        hmk_file: g.hmk_file.clone(),
        drives: a.drives,
        volume_capacity: a.volume_capacity,
        drive_wait_secs: a.drive_wait,
        max_volumes: a.max_volumes,
    };
    if a.volume_capacity.is_some_and(|c| c < 1 << 20) {
        return Err(CliError::Usage(
            "--volume-capacity must be at least 1M".into(),
        ));
    }
    let cfg = Store::init(&a.dir, opts)?;
    out.line(format!(
        "created store {} ({} drives, volumes of {} MiB, host master key from {})",
        a.dir.display(),
        cfg.drives,
        cfg.volume_capacity >> 20,
        if g.passphrase_file.is_some() {
            "a pass phrase"
        } else {
            "a key file"
        }
    ));
    Ok(())
}

#[derive(Serialize)]
struct VolumeRow {
    barcode: String,
    pool: String,
    state: String,
    used: u64,
    capacity: u64,
    images: u32,
    file: String,
}

pub fn volumes(store: &Store, cmd: &VolumeCmd, out: &mut Out) -> Result<(), CliError> {
    let VolumeCmd::List(j) = cmd;
    let rows: Vec<VolumeRow> = store
        .catalog
        .volumes()?
        .into_iter()
        .map(|v| VolumeRow {
            file: store
                .library
                .volume_path(&v.barcode)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| e.to_string()),
            state: format!("{:?}", v.state).to_lowercase(),
            barcode: v.barcode,
            pool: v.pool,
            used: v.used,
            capacity: v.capacity,
            images: v.images,
        })
        .collect();
    if j.json {
        out.json(&rows);
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                r.barcode,
                r.pool,
                r.state,
                out.size(r.used),
                out.size(r.capacity),
                r.images.to_string(),
                r.file,
            ]
        })
        .collect();
    out.table(
        &[
            "BARCODE", "POOL", "STATE", "USED", "CAPACITY", "IMAGES", "FILE",
        ],
        &[3, 4, 5],
        &cells,
    );
    Ok(())
}

/// One image of `image list --json`. LSU images have no volumes or
/// fragments (their data is segments in containers): those fields are left
/// out rather than shown empty.
#[derive(Serialize)]
struct ImageRow {
    id: String,
    path: String,
    pool: String,
    size: u64,
    key_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fragments: Option<usize>,
    created_ns: i64,
    /// Whether `kmsfs image verify` can check a restore of it (a keyed
    /// digest was recorded when it was written).
    verifiable: bool,
}

pub fn images(store: &Store, cmd: &ImageCmd, out: &mut Out) -> Result<(), CliError> {
    let j = match cmd {
        ImageCmd::List(j) => j,
        ImageCmd::Files { image, json } => return image_files(store, image, *json, out),
        ImageCmd::Verify { image, file } => return image_verify(store, image, file, out),
        ImageCmd::Restore { image, members, to } => {
            return image_restore(store, image, members, to, out);
        }
    };
    let mut rows = Vec::new();
    for (ino, id) in store.catalog.image_inodes()? {
        let Some(img) = store.catalog.image(id)? else {
            continue;
        };
        let tape = crate::engine::PoolKind::of(&img.pool).is_tape();
        let mut volumes: Vec<String> = img.fragments.iter().map(|f| f.volume.clone()).collect();
        volumes.dedup();
        rows.push(ImageRow {
            id: format!("{id:032x}"),
            path: format!("{}/{}", top_dir(&img.pool), store.catalog.path_of(ino)?),
            pool: img.pool,
            size: img.size,
            key_tag: img.key_tag,
            fragments: tape.then_some(img.fragments.len()),
            volumes: tape.then_some(volumes),
            created_ns: img.created_ns,
            verifiable: img.digest.is_some(),
        });
    }
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    if j.json {
        out.json(&rows);
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                r.path,
                out.size(r.size),
                r.key_tag.unwrap_or_else(|| "-".into()),
                match r.volumes {
                    Some(v) if !v.is_empty() => v.join(","),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    out.table(&["IMAGE", "SIZE", "KEY TAG", "VOLUMES"], &[1], &cells);
    Ok(())
}

/// One pool or LSU in `status`.
#[derive(Serialize)]
struct PoolUse {
    name: String,
    kind: String,
    images: usize,
    /// Bytes of the images (what a restore returns).
    bytes: u64,
    /// Bytes the pool takes: its volumes' used bytes, or an LSU's containers.
    stored_bytes: u64,
    volumes: Option<usize>,
}

/// Which KMS answered `status`.
#[derive(Serialize)]
struct KmsAnswer {
    backend: String,
    answered: bool,
    detail: String,
}

fn kms_answer(store: &Store) -> KmsAnswer {
    let probes = match store.keys.status() {
        KmsStatus::Embedded { keystore } => {
            return KmsAnswer {
                backend: "embedded".into(),
                answered: true,
                detail: format!("embedded keystore in {}", keystore.display()),
            };
        }
        KmsStatus::Kmip { servers, .. } => servers,
    };
    let first = probes.iter().find(|p| p.ok);
    KmsAnswer {
        backend: "kmip".into(),
        answered: first.is_some(),
        detail: match first {
            Some(p) => format!(
                "KMIP server {} answered in {:.1} ms",
                p.address,
                p.millis.unwrap_or_default()
            ),
            None => format!(
                "no KMIP server answered ({})",
                probes
                    .iter()
                    .map(|p| format!("{}: {}", p.address, p.error.as_deref().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    }
}

fn pool_use(store: &Store) -> Result<Vec<PoolUse>, CliError> {
    use crate::engine::PoolKind;
    let mut pools: Vec<PoolUse> = Vec::new();
    for p in store.catalog.children(crate::catalog::POOLS_INO)? {
        let kind = match PoolKind::of(&p.name) {
            PoolKind::Encrypted { .. } => "encrypted",
            _ => "clear",
        };
        pools.push(PoolUse {
            kind: kind.into(),
            name: p.name,
            images: 0,
            bytes: 0,
            stored_bytes: 0,
            volumes: Some(0),
        });
    }
    for l in store.catalog.lsus()? {
        pools.push(PoolUse {
            name: crate::catalog::lsu_pool(&l.name),
            kind: match &l.key_group {
                Some(g) => format!("LSU, {} mode, key group {g}", l.mode.as_str()),
                None => "LSU, not encrypted".into(),
            },
            images: 0,
            bytes: 0,
            stored_bytes: store.msdp.stored_bytes(&l.name)?,
            volumes: None,
        });
    }
    for img in store.catalog.images()? {
        if let Some(p) = pools.iter_mut().find(|p| p.name == img.pool) {
            p.images += 1;
            p.bytes += img.size;
        }
    }
    for v in store.catalog.volumes()? {
        if let Some(p) = pools.iter_mut().find(|p| p.name == v.pool) {
            p.stored_bytes += v.used;
            p.volumes = p.volumes.map(|n| n + 1);
        }
    }
    Ok(pools)
}

/// Where the store is mounted and by which daemon, if it is; `alive`:
/// the PID in `kmsfs.pid` is a running kmsfs (after a SIGKILL the dead
/// FUSE mount stays in the mount table and the file names a gone PID).
fn mounted(store: &Store) -> Option<serde_json::Value> {
    let on = super::mount_cmd::mounted_on(&store.dir)?;
    let pid = std::fs::read_to_string(store.dir.join("kmsfs.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let alive = pid.is_some_and(daemon_alive);
    Some(serde_json::json!({"on": on.display().to_string(), "pid": pid, "alive": alive}))
}

/// Whether `pid` is a running kmsfs: its name is kmsfs and it is not a
/// zombie (a killed daemon not yet reaped keeps its /proc entry).
fn daemon_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `PID (COMM) STATE ...`; COMM may hold spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    &stat[open + 1..close] == "kmsfs" && !matches!(state, "Z" | "X")
}

pub fn status(store: &Store, j: &JsonArg, out: &mut Out) -> Result<(), CliError> {
    let images = store.catalog.image_inodes()?.len();
    let volumes = store.catalog.volumes()?.len();
    let drives: Vec<String> = (0..store.library.drives.count())
        .filter_map(|i| store.library.drives.status(i))
        .collect();
    let mount = mounted(store);
    let kms = kms_answer(store);
    let pools = pool_use(store)?;
    if j.json {
        out.json(&serde_json::json!({
            "store": store.dir.display().to_string(),
            "mounted": mount,
            "kms": kms,
            "images": images,
            "volumes": volumes,
            "pools": pools,
            "drives": store.config.drives,
            "volume_capacity": store.config.volume_capacity,
        }));
        return Ok(());
    }
    out.line(format!("store: {}", store.dir.display()));
    out.line(match &mount {
        Some(m) if m["alive"] == true => format!(
            "mounted: on {} by kmsfs{}",
            m["on"].as_str().unwrap_or("?"),
            m["pid"]
                .as_u64()
                .map(|p| format!(" (PID {p})"))
                .unwrap_or_default()
        ),
        Some(m) => {
            let on = m["on"].as_str().unwrap_or("?");
            format!(
                "mounted: on {on}, but its daemon is gone: the mount is dead; run `umount {on}` and mount again"
            )
        }
        None => "mounted: no".into(),
    });
    out.line(format!(
        "kms: {}{}",
        kms.detail,
        if kms.answered { "" } else { ": NOT ANSWERING" }
    ));
    out.line(format!("images: {images}"));
    out.line(format!("volumes: {volumes}"));
    for d in drives {
        out.line(d.trim_end().replace('\n', "  "));
    }
    if !pools.is_empty() {
        out.line("");
        let rows: Vec<Vec<String>> = pools
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.kind.clone(),
                    p.images.to_string(),
                    out.size(p.bytes),
                    out.size(p.stored_bytes),
                    p.volumes.map_or("-".into(), |v| v.to_string()),
                ]
            })
            .collect();
        out.table(
            &["POOL", "KIND", "IMAGES", "SIZE", "STORED", "VOLUMES"],
            &[2, 3, 4, 5],
            &rows,
        );
    }
    Ok(())
}

pub fn fsck(store: &Store, j: &JsonArg, out: &mut Out) -> Result<(), CliError> {
    let total: u64 = store
        .catalog
        .images()?
        .iter()
        .filter(|i| crate::engine::PoolKind::of(&i.pool).is_tape())
        .map(|i| i.size)
        .sum();
    let mut done = 0;
    let mut r = crate::tape::check::check_library(&store.library, |n| {
        done += n;
        out.progress(Progress {
            task: "checking images".into(),
            done,
            total,
            unit: Unit::Bytes,
        });
    })?;
    store.msdp.check_into(&mut r)?;
    mark_locked(store, &mut r)?;
    if j.json {
        out.json(&r);
    } else {
        out.line(format!(
            "checked {} ({}) and {}",
            super::out::count(r.images, "image"),
            out.size(r.bytes),
            super::out::count(r.volumes, "volume")
        ));
        for p in &r.damaged {
            match &p.critical {
                Some(why) => out.line(format!("CRITICAL {}: {} ({why})", p.subject, p.what)),
                None => out.line(format!("DAMAGED {}: {}", p.subject, p.what)),
            }
        }
        for p in &r.unverified {
            match &p.critical {
                Some(why) => out.line(format!(
                    "CRITICAL not verified {}: {} ({why})",
                    p.subject, p.what
                )),
                None => out.line(format!("not verified {}: {}", p.subject, p.what)),
            }
        }
    }
    let unverified_critical = r.unverified.iter().filter(|p| p.critical.is_some());
    let n = r.damaged.len() + unverified_critical.count();
    match (n, r.critical()) {
        (0, _) => Ok(()),
        (n, 0) => Err(CliError::Damaged(format!("{n} problems found"))),
        (n, c) => Err(CliError::Damaged(format!(
            "{n} problems found, {c} critical: images under a retention lock or legal hold \
             are damaged, missing or unreadable"
        ))),
    }
}

/// Marks critical each problem of an image that is locked or held now,
/// and of a volume that holds one.
fn mark_locked(store: &Store, r: &mut crate::util::report::CheckReport) -> Result<(), CliError> {
    let c = &store.catalog;
    let now = c.clock().now_ns();
    let all = c.locks()?;
    // Unlock times before 1970: written by a kmsfs whose retentions over
    // 292 years wrapped around; such an image looks unlocked.
    for (id, _) in all.iter().filter(|(_, l)| l.until_ns < 0) {
        let mut p = crate::util::report::Problem::of_image(
            *id,
            format!("image {id:032x}"),
            "its unlock time wrapped into the past (a retention over 292 years, set before \
             kmsfs capped them at 200): lock it again with kmsfs worm extend"
                .into(),
        );
        p.critical = Some("its retention lock does not hold".into());
        r.damaged.push(p);
    }
    let locks: std::collections::HashMap<u128, crate::catalog::ImageLock> =
        all.into_iter().filter(|(_, l)| l.active(now)).collect();
    if locks.is_empty() {
        return Ok(());
    }
    let images: Vec<crate::catalog::ImageRec> = c
        .images()?
        .into_iter()
        .filter(|i| locks.contains_key(&i.id))
        .collect();
    // A lock in force whose image is gone: a locked image was removed.
    for (id, l) in &locks {
        if c.image(*id)?.is_none() {
            let mut p = crate::util::report::Problem::of_image(
                *id,
                format!("image {id:032x}"),
                "its lock is in the catalog, the image is not: a locked image was removed".into(),
            );
            p.critical = Some(match &l.hold {
                Some(r) => format!("on legal hold ({r})"),
                None => format!(
                    "locked until {}",
                    super::out::iso_time((l.until_ns.max(0) / 1_000_000_000) as u64)
                ),
            });
            r.damaged.push(p);
        }
    }
    r.mark_critical(|p| {
        if p.critical.is_some() {
            return p.critical.clone();
        }
        let barcode = p.subject.strip_prefix("volume ");
        images
            .iter()
            .filter(|i| match (p.image, barcode) {
                (Some(id), _) => i.id == id,
                (None, Some(b)) => i.fragments.iter().any(|f| f.volume == b),
                (None, None) => false,
            })
            .find_map(|i| Some(crate::catalog::describe(i, locks.get(&i.id)?)))
    });
    Ok(())
}

/// The directory of the mount an image of `pool` is under.
fn top_dir(pool: &str) -> &'static str {
    if crate::catalog::lsu_of_pool(pool).is_some() {
        "msdp"
    } else {
        "pools"
    }
}

/// Finds an image by `pools/POOL/PATH`, `msdp/LSU/PATH`, `POOL/PATH` or id.
pub(super) fn find_image(store: &Store, what: &str) -> Result<u128, CliError> {
    // `pools/…` names a tape image and `msdp/…` an LSU image: a pool and
    // an LSU may share a name. A bare `POOL/PATH` is a tape image.
    let (lsu, want) = match what.strip_prefix("msdp/") {
        Some(rest) => (true, rest),
        None => (false, what.strip_prefix("pools/").unwrap_or(what)),
    };
    let want = want.trim_matches('/');
    for (ino, id) in store.catalog.image_inodes()? {
        if format!("{id:032x}") == want {
            return Ok(id);
        }
        if store.catalog.path_of(ino)? != want {
            continue;
        }
        let is_lsu = store
            .catalog
            .image(id)?
            .is_some_and(|i| !crate::engine::PoolKind::of(&i.pool).is_tape());
        if is_lsu == lsu {
            return Ok(id);
        }
    }
    Err(CliError::Usage(format!(
        "no image '{what}' in the catalog (see kmsfs image list)"
    )))
}

/// `image verify`: the keyed digest of `file` against the one recorded
/// when the image was written.
fn image_verify(store: &Store, what: &str, file: &Path, out: &mut Out) -> Result<(), CliError> {
    let id = find_image(store, what)?;
    let img = store
        .catalog
        .image(id)?
        .ok_or_else(|| CliError::Usage(format!("no image '{what}' in the catalog")))?;
    let want = img.digest.ok_or_else(|| {
        CliError::Usage(format!(
            "image '{what}' has no digest (written before catalog format 3): compare it with cmp through the mount"
        ))
    })?;
    let mut d = crate::crypto::ImageDigest::new(&store.library.digest_key);
    let mut f = std::fs::File::open(file).map_err(|e| CliError::io(file, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| CliError::io(file, e))?;
        if n == 0 {
            break;
        }
        d.update(&buf[..n]);
        len += n as u64;
    }
    let same =
        len == img.size && bool::from(subtle::ConstantTimeEq::ct_eq(&d.finalize()[..], &want[..]));
    if same {
        out.line(format!(
            "{}: matches image {what} ({len} bytes)",
            file.display()
        ));
        Ok(())
    } else {
        out.line(format!(
            "{}: DIFFERS from image {what} ({len} bytes; the image has {})",
            file.display(),
            img.size
        ));
        Err(CliError::Damaged(format!(
            "{} is not image {what}",
            file.display()
        )))
    }
}

/// The file list of image `id` (named `what`), or why there is none.
fn file_list(
    store: &Store,
    what: &str,
    id: u128,
) -> Result<Vec<crate::catalog::FileEntry>, CliError> {
    store.catalog.files(id)?.ok_or_else(|| {
        CliError::Usage(format!(
            "image '{what}' has no file list: it is not a tar archive (ustar, GNU or PAX) that kmsfs could list when it was written"
        ))
    })
}

/// `image restore IMAGE MEMBER... --to DIR`.
fn image_restore(
    store: &Store,
    what: &str,
    members: &[String],
    to: &Path,
    out: &mut Out,
) -> Result<(), CliError> {
    let id = find_image(store, what)?;
    let files = file_list(store, what, id)?;
    let img = store
        .catalog
        .image(id)?
        .ok_or_else(|| CliError::Usage(format!("no image '{what}' in the catalog")))?;
    let size = img.size;
    let task = format!("restoring from {what}");
    let r =
        crate::engine::restore_members(store, what, img, &files, members, to, |done, total| {
            out.progress(Progress {
                task: task.clone(),
                done,
                total,
                unit: Unit::Bytes,
            })
        })?;
    for p in &r.restored {
        out.line(format!("restored {}", printable(p)));
    }
    for (p, why) in &r.skipped {
        out.line(format!("NOT RESTORED {}: {}", printable(p), printable(why)));
    }
    out.line(format!(
        "{} ({}) of the {} image {what} restored into {}",
        super::out::count(r.restored.len(), "member"),
        out.size(r.bytes),
        out.size(size),
        to.display()
    ));
    if r.skipped.is_empty() {
        Ok(())
    } else {
        Err(CliError::Damaged(format!(
            "{} not restored (listed above)",
            super::out::count(r.skipped.len(), "member")
        )))
    }
}

fn image_files(store: &Store, what: &str, json: bool, out: &mut Out) -> Result<(), CliError> {
    let id = find_image(store, what)?;
    let files = file_list(store, what, id)?;
    if json {
        out.json(&files);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            let link = f
                .link
                .as_deref()
                .map(|l| format!(" -> {}", printable(l)))
                .unwrap_or_default();
            vec![
                printable(&(f.kind as char).to_string()),
                out.size(f.size),
                super::out::iso_time(f.mtime),
                format!("{}{link}", printable(&f.path)),
            ]
        })
        .collect();
    out.table(&["T", "SIZE", "MODIFIED", "PATH"], &[1], &rows);
    Ok(())
}
