//! The concurrency torture run: writers and readers on tape pools and LSUs
//! of one mount, while one operator thread rotates KEKs (an LSU whose KEK
//! limit is one segment rotates on every segment anyway), creates root
//! keys and rewraps, converts a legacy LSU, reclaims space, takes the tape
//! key group's key out of service and back, deletes images, runs fsck,
//! remounts cleanly and SIGKILLs the daemon. Every image is checked against
//! a reference copy whenever it is read, after every restart, and at the
//! end after a cold remount (a new daemon, no key cached).
//!
//! Seeded: a failure prints the seed, and the same seed makes the same
//! choices (the interleaving is the machine's). `KMSFS_TORTURE_SECS` and
//! `KMSFS_TORTURE_SEED` set the run; `scripts/torture.sh --minutes N
//! --seed S` runs it long. The default is a short run for the test command.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A small xorshift generator: the same seed, the same choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Where images go: two tape pools and two LSUs (one starts in legacy mode).
const TARGETS: &[&str] = &["pools/ENCR_T", "pools/Clear", "msdp/T", "msdp/O"];

/// What the run knows is committed: path -> content digest.
#[derive(Default)]
struct Reference {
    images: BTreeMap<String, String>,
    /// Being written when the daemon died: absent, or what a commit made
    /// of it (all of it, or the prefix an earlier close committed: a
    /// descriptor closed by any process, even a forked child's
    /// close-on-exec, commits what was written so far).
    maybe: BTreeMap<String, Vec<u8>>,
}

struct Run {
    seed: u64,
    /// Before `store`: dropped (unmounted) before the store's directory.
    mount: Mutex<Option<Mounted>>,
    store: TestStore,
    reference: Mutex<Reference>,
    /// Bumped before the daemon goes away and after it is back: an error
    /// in an operation that saw it change is the fault's, not a bug.
    epoch: AtomicU64,
    /// Set while the tape key group has no active key.
    key_out: AtomicBool,
    stop: AtomicBool,
    /// Held (shared) by each read and write; a clean unmount takes it
    /// whole, as an operator's `umount` waits for a quiet mount. A SIGKILL
    /// does not wait.
    gate: parking_lot::RwLock<()>,
    mp: PathBuf,
    stats: Mutex<BTreeMap<&'static str, u64>>,
    /// Volumes of another store, each holding `pools/VaultK/farK`, and the
    /// image's digest; the operator imports them one by one.
    foreign: Vec<(PathBuf, String, String)>,
}

impl Run {
    fn count(&self, what: &'static str) {
        *self.stats.lock().unwrap().entry(what).or_default() += 1;
    }

    fn fail(&self, what: String) -> ! {
        if !self.stop.swap(true, Ordering::SeqCst) {
            let log = std::fs::read_to_string(self.store.dir.join("kmsfs.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "daemon log, last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        panic!("torture seed {}: {what}", self.seed);
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    /// The epoch: odd while the daemon is down.
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether an operation that began at epoch `e0` may have met the
    /// daemon down (then its error is the fault's, not a bug).
    fn disturbed(&self, e0: u64) -> bool {
        e0 % 2 == 1 || self.epoch() != e0
    }
}

/// A digest of content (in process: a child process would inherit, and
/// by closing them flush, the writers' open images).
fn sha(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn writer(run: &Run, id: u64) {
    let mut rng = Rng::new(run.seed ^ (id << 32));
    // Content shared between writers' images, so LSUs deduplicate.
    let shared = Rng::new(run.seed).bytes(1 << 20);
    let mut n = 0;
    let mut mine = std::collections::VecDeque::new();
    while !run.stop.load(Ordering::SeqCst) {
        n += 1;
        let target = TARGETS[rng.below(TARGETS.len() as u64) as usize];
        let rel = format!("{target}/w{id}-{n}");
        let len = 4096 + rng.below(3 << 20) as usize;
        let mut data = rng.bytes(len);
        if rng.below(2) == 0 {
            let k = len.min(shared.len());
            data[..k].copy_from_slice(&shared[..k]);
        }
        let digest = sha(&data);
        let key0 = run.key_out.load(Ordering::SeqCst);
        let (written, e0) = {
            let _quiet = run.gate.read();
            // Read inside the gate: an operation that waited out a clean
            // remount runs wholly on the new daemon and is not excused.
            let e0 = run.epoch();
            // fsync, not only close: a close error is dropped by Rust's
            // File, and fsync of an image commits it (durable on return).
            let w = std::fs::File::create(run.path(&rel)).and_then(|mut f| {
                std::io::Write::write_all(&mut f, &data)?;
                f.sync_all()
            });
            (w, e0)
        };
        match written {
            Ok(()) => {
                run.reference
                    .lock()
                    .unwrap()
                    .images
                    .insert(rel.clone(), digest);
                run.count("images written");
                mine.push_back(rel);
                if mine.len() > KEEP {
                    forget(run, mine.pop_front().unwrap());
                }
            }
            Err(e) => {
                let keyless =
                    target == "pools/ENCR_T" && (key0 || run.key_out.load(Ordering::SeqCst));
                if run.disturbed(e0) {
                    run.reference.lock().unwrap().maybe.insert(rel, data);
                    run.count("writes cut off by a restart");
                } else if keyless {
                    run.count("writes refused for want of a key");
                } else {
                    run.fail(format!(
                        "writing {rel} ({len} bytes) failed: {e} (epoch {e0}, now {})",
                        run.epoch()
                    ));
                }
            }
        }
    }
}

/// Images a writer keeps; older ones it deletes (the store stays small
/// however long the run).
const KEEP: usize = 60;

/// Deletes an image the reference holds (it leaves the reference first, so
/// no reader expects it).
fn forget(run: &Run, rel: String) {
    if run.reference.lock().unwrap().images.remove(&rel).is_none() {
        return;
    }
    let (removed, e0) = {
        let _quiet = run.gate.read();
        (std::fs::remove_file(run.path(&rel)), run.epoch())
    };
    match removed {
        Ok(()) => run.count("images deleted"),
        Err(_) if run.disturbed(e0) => {
            // Maybe gone, maybe not: try again on the daemon now serving.
            let _quiet = run.gate.read();
            let _ = std::fs::remove_file(run.path(&rel));
        }
        Err(e) => run.fail(format!("deleting {rel}: {e}")),
    }
}

fn reader(run: &Run, id: u64) {
    let mut rng = Rng::new(run.seed ^ (id << 40) ^ 0xAAAA);
    while !run.stop.load(Ordering::SeqCst) {
        let pick = {
            let r = run.reference.lock().unwrap();
            if r.images.is_empty() {
                None
            } else {
                let i = rng.below(r.images.len() as u64) as usize;
                r.images.iter().nth(i).map(|(p, d)| (p.clone(), d.clone()))
            }
        };
        let Some((rel, want)) = pick else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let (read, e0) = {
            let _quiet = run.gate.read();
            let e0 = run.epoch();
            (std::fs::read(run.path(&rel)), e0)
        };
        match read {
            Ok(data) => {
                if sha(&data) != want {
                    // Names are never reused and a crash gives an error,
                    // never other bytes: a mismatch is always a failure.
                    run.fail(format!(
                        "{rel} read back different from what was written ({} bytes)",
                        data.len()
                    ));
                } else {
                    run.count("images read and verified");
                }
            }
            Err(e) => {
                let gone = !run.reference.lock().unwrap().images.contains_key(&rel);
                if !gone && !run.disturbed(e0) {
                    run.fail(format!("reading {rel} failed: {e}"));
                }
            }
        }
    }
}

/// Every reference image reads back identical; a maybe-image is whole if
/// it is there (then it becomes a reference image).
fn verify_all(run: &Run, when: &str) {
    let mut r = run.reference.lock().unwrap();
    for (rel, want) in &r.images {
        match std::fs::read(run.path(rel)) {
            Ok(d) if sha(&d) == *want => {}
            Ok(_) => run.fail(format!("{when}: {rel} differs from what was written")),
            Err(e) => {
                let name = rel.rsplit('/').next().unwrap();
                let log =
                    std::fs::read_to_string(run.store.dir.join("kmsfs.log")).unwrap_or_default();
                let about: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains(&format!("\"{name}\""))
                            || l.contains(&format!("/{name} "))
                            || l.contains("starting")
                            || l.contains("mounted")
                    })
                    .collect();
                run.fail(format!(
                    "{when}: {rel} is lost: {e}\nlog lines about it:\n{}",
                    about.join("\n")
                ))
            }
        }
    }
    let maybe = std::mem::take(&mut r.maybe);
    for (rel, meant) in maybe {
        match std::fs::read(run.path(&rel)) {
            Ok(d) if meant.starts_with(&d) => {
                r.images.insert(rel, sha(&d));
            }
            Ok(d) => run.fail(format!(
                "{when}: {rel}, cut off by a crash, holds {} bytes that are not what was written",
                d.len()
            )),
            Err(_) => {}
        }
    }
}

fn cli(run: &Run, args: &str) -> Result<String, String> {
    let o = run.store.cmd(
        &args
            .split(' ')
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>(),
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    if o.status.success() {
        Ok(out)
    } else {
        Err(format!("{out}{}", String::from_utf8_lossy(&o.stderr)))
    }
}

fn must(run: &Run, args: &str) -> String {
    cli(run, args).unwrap_or_else(|e| run.fail(format!("kmsfs {args}: {e}")))
}

fn remount(run: &Run, kill: bool) {
    let _quiet = (!kill).then(|| run.gate.write());
    run.epoch.fetch_add(1, Ordering::SeqCst);
    let old = run.mount.lock().unwrap().take().expect("mounted");
    if kill {
        old.kill();
    } else {
        old.unmount();
    }
    let m = run.store.try_mount("", &[]).unwrap_or_else(|e| {
        run.fail(format!(
            "remount after {}: {e}",
            if kill { "SIGKILL" } else { "unmount" }
        ))
    });
    *run.mount.lock().unwrap() = Some(m);
    run.epoch.fetch_add(1, Ordering::SeqCst);
}

fn operator(run: &Run, deadline: Instant) {
    let mut rng = Rng::new(run.seed ^ 0x0BE7);
    let mut roots = 0;
    while Instant::now() < deadline && !run.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        let pick = rng.below(11);
        match pick {
            10 => import_next(run),
            0 => {
                must(run, "lsu rotate-kek T");
                run.count("KEK rotations");
            }
            1 => {
                roots += 1;
                must(
                    run,
                    &format!("kms createkey --kg tkg --name r{roots} --activate"),
                );
                must(run, "lsu rewrap T");
                must(run, "lsu rewrap O");
                run.count("root keys made and LSUs rewrapped");
            }
            2 => {
                must(run, "lsu convert O");
                run.count("conversion steps");
            }
            3 => {
                must(run, "lsu gc T");
                must(run, "lsu gc O");
                run.count("gc runs");
            }
            4 => {
                run.key_out.store(true, Ordering::SeqCst);
                must(run, "kms modifykey --kg ENCR_T --name k1 --state inactive");
                std::thread::sleep(Duration::from_millis(200));
                must(run, "kms modifykey --kg ENCR_T --name k1 --state active");
                run.key_out.store(false, Ordering::SeqCst);
                run.count("tape key out of service and back");
            }
            5 => {
                let victim = {
                    let r = run.reference.lock().unwrap();
                    let n = r.images.len() as u64;
                    if n == 0 {
                        continue;
                    }
                    r.images.keys().nth(rng.below(n) as usize).unwrap().clone()
                };
                forget(run, victim);
            }
            6 => {
                let out = must(run, "fsck");
                if out.contains("DAMAGED") {
                    run.fail(format!("fsck: {out}"));
                }
                run.count("fsck runs, clean");
            }
            7 => {
                remount(run, false);
                verify_all(run, "after a remount");
                run.count("remounts");
            }
            _ => {
                remount(run, true);
                verify_all(run, "after a SIGKILL");
                run.count("SIGKILLs");
            }
        }
    }
}

/// Imports the next foreign volume: its image must then read back as the
/// other store wrote it; a refusal is right only if this store has since
/// labelled a volume with the same barcode, and must say so.
fn import_next(run: &Run) {
    let k = {
        let stats = run.stats.lock().unwrap();
        let n = |what| stats.get(what).copied().unwrap_or(0);
        n("imports") + n("imports refused, barcode taken")
    };
    let Some((vol, rel, digest)) = run.foreign.get(k as usize) else {
        return;
    };
    match cli(run, &format!("import {}", vol.display())) {
        Ok(_) => {
            let _quiet = run.gate.read();
            match std::fs::read(run.path(rel)) {
                Ok(d) if sha(&d) == *digest => {}
                Ok(_) => run.fail(format!(
                    "imported {rel} differs from what the other store wrote"
                )),
                Err(e) => run.fail(format!("imported {rel} is not there: {e}")),
            }
            run.reference
                .lock()
                .unwrap()
                .images
                .insert(rel.clone(), digest.clone());
            run.count("imports");
        }
        // This store labelled a volume with the same barcode (refusals of
        // src/tape/adopt.rs, each naming the volume).
        Err(e)
            if [
                "is already a different volume in this store",
                "is being written by this store now",
                "is taken:",
            ]
            .iter()
            .any(|why| e.contains(why)) =>
        {
            run.count("imports refused, barcode taken");
        }
        Err(e) => run.fail(format!("import of {}: {e}", vol.display())),
    }
}

/// Volumes of another store, each with one image `pools/VaultK/farK`: the
/// other store labels 30 volumes first, so their barcodes are ones this
/// store reaches only late in a long run.
fn foreign_volumes(seed: u64) -> (TestStore, Vec<(PathBuf, String, String)>) {
    let far = TestStore::new(&[]);
    let m = far.mount("");
    let tiny = far.path("tiny");
    std::fs::write(&tiny, b"filler").unwrap();
    for i in 0..30 {
        std::fs::create_dir(m.p(&format!("pools/F{i}"))).unwrap();
        cp(&tiny, &m.p(&format!("pools/F{i}/f")));
    }
    let mut images = Vec::new();
    for k in 1..=3u64 {
        let data = Rng::new(seed ^ (k << 20)).bytes((1 << 20) + k as usize * 4099);
        let src = far.path(&format!("far{k}"));
        std::fs::write(&src, &data).unwrap();
        std::fs::create_dir(m.p(&format!("pools/Vault{k}"))).unwrap();
        cp(&src, &m.p(&format!("pools/Vault{k}/far{k}")));
        images.push((
            format!("Vault{k}"),
            format!("pools/Vault{k}/far{k}"),
            sha(&data),
        ));
    }
    m.unmount();
    let vols: serde_json::Value =
        serde_json::from_str(&far.ok(&["volume", "list", "--json"])).unwrap();
    let out = images
        .into_iter()
        .map(|(pool, rel, digest)| {
            let barcode = vols
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["pool"] == pool.as_str())
                .unwrap()["barcode"]
                .as_str()
                .unwrap()
                .to_string();
            (
                far.dir.join("volumes").join(format!("{barcode}.kvol")),
                rel,
                digest,
            )
        })
        .collect();
    (far, out)
}

fn setup(seed: u64) -> Run {
    let store = TestStore::new(&["--volume-capacity", "64M"]);
    store.group_with_key("ENCR_T");
    store.group_with_key("tkg");
    store.ok(&[
        "lsu",
        "create",
        "T",
        "--kms",
        "--key-group",
        "tkg",
        "--kek-max-segments",
        "1",
    ]);
    store.ok(&["lsu", "create", "O", "--legacy-kms", "--key-group", "tkg"]);
    let (far, foreign) = foreign_volumes(seed);
    let foreign = foreign
        .into_iter()
        .map(|(vol, rel, digest)| {
            let kept = store.path(vol.file_name().unwrap().to_str().unwrap());
            std::fs::copy(&vol, &kept).unwrap();
            (kept, rel, digest)
        })
        .collect();
    drop(far);
    let m = store.mount("");
    for p in ["pools/ENCR_T", "pools/Clear"] {
        std::fs::create_dir(m.p(p)).unwrap();
    }
    Run {
        seed,
        mp: m.mp.clone(),
        mount: Mutex::new(Some(m)),
        store,
        reference: Mutex::new(Reference::default()),
        epoch: AtomicU64::new(0),
        key_out: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        gate: parking_lot::RwLock::new(()),
        stats: Mutex::new(BTreeMap::new()),
        foreign,
    }
}

#[test]
fn torture() {
    let secs: u64 = std::env::var("KMSFS_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("KMSFS_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("torture: seed {seed}, {secs} s (KMSFS_TORTURE_SEED={seed} repeats the choices)");
    let run = Arc::new(setup(seed));
    let deadline = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for id in 0..3 {
            let run = &run;
            s.spawn(move || writer(run, id));
        }
        for id in 0..2 {
            let run = &run;
            s.spawn(move || reader(run, id));
        }
        operator(&run, deadline);
        run.stop.store(true, Ordering::SeqCst);
    });
    // The end: a cold daemon (no key cached) reads everything back.
    run.mount.lock().unwrap().take().expect("mounted").unmount();
    let m = run.store.mount("");
    run.epoch.fetch_add(1, Ordering::SeqCst);
    *run.mount.lock().unwrap() = Some(m);
    verify_all(&run, "after the cold remount at the end");
    run.mount.lock().unwrap().take().unwrap().unmount();
    let out = must(&run, "fsck");
    assert!(!out.contains("DAMAGED"), "torture seed {seed}: {out}");
    let stats = run.stats.lock().unwrap();
    eprintln!(
        "torture: seed {seed}: {} images at the end, all verified; {stats:?}",
        run.reference.lock().unwrap().images.len()
    );
    for what in ["images written", "images read and verified"] {
        assert!(
            stats.get(what).copied().unwrap_or(0) > 0,
            "seed {seed}: no {what}"
        );
    }
}
