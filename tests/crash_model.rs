//! The crash model: every failpoint (src/util/failpoint.rs) is made to
//! fire with an I/O error and with an abort, at its first, second, ...
//! hit inside each operation that reaches it, on a copy of one store
//! holding tape, LSU and legacy-LSU images. After each fault the store
//! must agree with a reference model:
//!
//! - every image committed before the fault reads back byte-identical,
//!   through a fresh mount with no key cached (so no key it needs is lost);
//! - the operation's own effect is all there or not at all, and after an
//!   I/O error exactly as the command reported (failed: nothing changed);
//! - no other image is visible, `fsck` is clean, and a second recovery
//!   (mount, unmount, fsck) changes nothing;
//! - after an I/O error the daemon keeps serving the same mount.
//!
//! Needs a build with the `failpoints` feature (`scripts/test.sh` makes
//! one); without it the first test says so and fails. A failure names the
//! failpoint, the action, the hit and the operation: the case reproduces
//! alone with `KMSFS_CRASH_CASE=POINT/ACTION/N/OP`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

/// How deep into an operation faults are placed: hits 1..=DEPTH
/// (`KMSFS_CRASH_DEPTH` to go deeper; an operation that passes its point
/// fewer times ends the walk early).
fn depth() -> u32 {
    std::env::var("KMSFS_CRASH_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(3)
}

/// Path under the mount -> sha256 of an image's content, or `dir`.
type Model = BTreeMap<String, String>;

const DIR: &str = "dir";

/// The store every case starts from, made once, and the files the
/// operations write.
struct Template {
    store: TestStore,
    model: Model,
    new_data: PathBuf,
    small: PathBuf,
    foreign_volume: PathBuf,
    foreign_sha: String,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(make_template)
}

fn make_template() -> Template {
    let s = TestStore::new(&["--volume-capacity", "16M"]);
    s.group_with_key("ENCR_A");
    s.group_with_key("lsukg");
    s.ok(&["lsu", "create", "L", "--kms", "--key-group", "lsukg"]);
    s.ok(&["lsu", "create", "G", "--legacy-kms", "--key-group", "lsukg"]);
    let f = |n: &str, mib: usize| {
        let p = s.path(n);
        random_file(&p, mib);
        p
    };
    let (base1, c1, l1, g1) = (f("base1", 2), f("c1", 1), f("l1", 2), f("g1", 1));
    // l2 shares its first MiB with l1: deleting l1 leaves a container
    // with live and dead segments, which gc compacts (relocates).
    let l2 = s.path("l2");
    sh_ok(&format!(
        "head -c 1M '{}' > '{o}' && head -c 1M /dev/urandom >> '{o}'",
        l1.display(),
        o = l2.display()
    ));
    let m = s.mount("");
    std::fs::create_dir(m.p("pools/ENCR_A")).unwrap();
    std::fs::create_dir(m.p("pools/Clear")).unwrap();
    let mut model: Model = ["pools/ENCR_A", "pools/Clear", "msdp/L", "msdp/G"]
        .iter()
        .map(|d| (d.to_string(), DIR.to_string()))
        .collect();
    for (src, to) in [
        (&base1, "pools/ENCR_A/base1"),
        (&c1, "pools/Clear/c1"),
        (&l1, "msdp/L/l1"),
        (&l2, "msdp/L/l2"),
        (&g1, "msdp/G/g1"),
    ] {
        cp(src, &m.p(to));
        model.insert(to.to_string(), sha256(src));
    }
    m.unmount();
    let (foreign_volume, foreign_sha) = foreign_volume(&s);
    Template {
        model,
        new_data: f("new", 3),
        small: f("small", 1),
        foreign_volume,
        foreign_sha,
        store: s,
    }
}

/// A volume of another store holding one clear image `pools/Vault/far`,
/// under a barcode the home store does not use (barcodes are unique in a
/// site's vault: the other store's first volumes go unshipped).
fn foreign_volume(home: &TestStore) -> (PathBuf, String) {
    let far = TestStore::new(&[]);
    let src = far.path("far");
    random_file(&src, 1);
    let m = far.mount("");
    for p in ["V1", "V2", "V3", "Vault"] {
        std::fs::create_dir(m.p(&format!("pools/{p}"))).unwrap();
        cp(&src, &m.p(&format!("pools/{p}/far")));
    }
    m.unmount();
    let vols: serde_json::Value =
        serde_json::from_str(&far.ok(&["volume", "list", "--json"])).unwrap();
    let barcode = vols
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pool"] == "Vault")
        .unwrap()["barcode"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = far.dir.join("volumes").join(format!("{barcode}.kvol"));
    let kept = home.path("foreign.kvol");
    std::fs::copy(&vol, &kept).unwrap();
    (kept, sha256(&src))
}

/// The operations the faults land in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    WriteTape,
    WriteNewPool,
    WriteLsu,
    Replace,
    Rename,
    Delete,
    DeleteTape,
    CreateKey,
    Rotate,
    Rewrap,
    Gc,
    Convert,
    Import,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        ALL_OPS.iter().copied().find(|o| format!("{o:?}") == s)
    }

    /// What the model looks like once the operation took effect.
    fn effect(self, t: &Template) -> Vec<(&'static str, Option<String>)> {
        let new = sha256(&t.new_data);
        match self {
            Op::WriteTape => vec![("pools/ENCR_A/new1", Some(new))],
            Op::WriteNewPool => vec![("pools/Fresh/x", Some(sha256(&t.small)))],
            Op::WriteLsu => vec![("msdp/L/new2", Some(new))],
            Op::Replace => vec![("pools/ENCR_A/base1", Some(new))],
            Op::Rename => vec![
                ("pools/ENCR_A/base1", None),
                (
                    "pools/ENCR_A/moved",
                    Some(t.model["pools/ENCR_A/base1"].clone()),
                ),
            ],
            Op::Delete => vec![("msdp/L/l1", None)],
            Op::DeleteTape => vec![("pools/ENCR_A/base1", None)],
            Op::Import => vec![
                ("pools/Vault", Some(DIR.to_string())),
                ("pools/Vault/far", Some(t.foreign_sha.clone())),
            ],
            Op::CreateKey | Op::Rotate | Op::Rewrap | Op::Convert | Op::Gc => vec![],
        }
    }

    /// Brings the store to where the operation starts (no fault armed
    /// yet); returns the model then.
    fn prepare(self, s: &TestStore, model: &Model) -> Model {
        let mut model = model.clone();
        match self {
            // A new pool: its first image labels a scratch volume.
            Op::WriteNewPool => {
                let m = s.mount("");
                std::fs::create_dir(m.p("pools/Fresh")).unwrap();
                m.unmount();
                model.insert("pools/Fresh".into(), DIR.into());
            }
            Op::Gc => {
                // An image gone: its container has live and dead segments.
                let m = s.mount("");
                std::fs::remove_file(m.p("msdp/L/l1")).unwrap();
                m.unmount();
                model.remove("msdp/L/l1");
            }
            // A new root key: rewrap has every KEK to move.
            Op::Rewrap => {
                s.ok(&[
                    "kms",
                    "createkey",
                    "--kg",
                    "lsukg",
                    "--name",
                    "r2",
                    "--activate",
                ]);
            }
            _ => {}
        }
        model
    }

    /// Runs the operation on the mounted store; `Err` holds what the
    /// failing command printed.
    fn run(self, s: &TestStore, m: &Mounted, t: &Template) -> Result<(), String> {
        let p = |r: &str| m.p(r).display().to_string();
        let new = t.new_data.display().to_string();
        let script = match self {
            Op::WriteTape => format!("cp '{new}' '{}'", p("pools/ENCR_A/new1")),
            Op::WriteNewPool => format!("cp '{}' '{}'", t.small.display(), p("pools/Fresh/x")),
            Op::WriteLsu => format!("cp '{new}' '{}'", p("msdp/L/new2")),
            Op::Replace => format!("cp '{new}' '{}'", p("pools/ENCR_A/base1")),
            Op::Rename => format!(
                "mv '{}' '{}'",
                p("pools/ENCR_A/base1"),
                p("pools/ENCR_A/moved")
            ),
            Op::Delete => format!("rm '{}'", p("msdp/L/l1")),
            // The last image of its volume: the volume goes back to scratch.
            Op::DeleteTape => format!("rm '{}'", p("pools/ENCR_A/base1")),
            Op::CreateKey => kmsfs(s, "kms createkey --kg ENCR_A --name k2 --activate"),
            Op::Rotate => kmsfs(s, "lsu rotate-kek L"),
            Op::Rewrap => kmsfs(s, "lsu rewrap L"),
            Op::Gc => kmsfs(s, "lsu gc L"),
            Op::Convert => kmsfs(s, "lsu convert G"),
            Op::Import => kmsfs(s, &format!("import '{}'", t.foreign_volume.display())),
        };
        script_result(&script)
    }
}

const ALL_OPS: &[Op] = &[
    Op::WriteTape,
    Op::WriteNewPool,
    Op::WriteLsu,
    Op::Replace,
    Op::Rename,
    Op::Delete,
    Op::DeleteTape,
    Op::CreateKey,
    Op::Rotate,
    Op::Rewrap,
    Op::Gc,
    Op::Convert,
    Op::Import,
];

/// Runs a shell script; `Err` holds what it printed if it failed.
fn script_result(script: &str) -> Result<(), String> {
    let (ok, out, err) = sh(script);
    if ok {
        Ok(())
    } else {
        Err(format!("{out}{err}"))
    }
}

fn kmsfs(s: &TestStore, args: &str) -> String {
    format!("'{}' --store '{}' {args}", bin(), s.dir.display())
}

/// Every folder and image under the mount's pools and LSUs.
fn visible(m: &Mounted) -> Model {
    let mut out = Model::new();
    let dirs = sh_ok(&format!(
        "cd '{}' && find pools msdp -mindepth 1 -type d",
        m.mp.display()
    ));
    for d in dirs.lines() {
        out.insert(d.to_string(), DIR.to_string());
    }
    for top in ["pools", "msdp"] {
        let o = sh_ok(&format!(
            "cd '{}' && find {top} -type f -print0 | xargs -0 -r sha256sum",
            m.mp.display()
        ));
        for l in o.lines() {
            let (sum, path) = l.split_once("  ").unwrap();
            out.insert(path.to_string(), sum.to_string());
        }
    }
    out
}

/// The model with the operation applied or not.
fn applied(model: &Model, effect: &[(&str, Option<String>)]) -> Model {
    let mut m = model.clone();
    for (path, sha) in effect {
        match sha {
            Some(s) => m.insert(path.to_string(), s.clone()),
            None => m.remove(*path),
        };
    }
    m
}

/// What the catalog says, for comparing one recovery with the next.
fn snapshot(s: &TestStore) -> String {
    [
        "image list --json",
        "volume list --json",
        "lsu keydict L --json",
        "lsu list --json",
    ]
    .iter()
    .map(|a| s.ok(&a.split(' ').collect::<Vec<_>>()))
    .collect::<Vec<_>>()
    .join("\n")
}

fn fsck_clean(s: &TestStore, case: &str) {
    let o = s.cmd(&["fsck"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && !out.contains("DAMAGED"),
        "{case}: fsck after recovery: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Which outcome the recovered store shows: `pre`, `post`, or a panic.
fn recovered(s: &TestStore, pre: &Model, post: &Model, case: &str) -> bool {
    let m = s
        .try_mount("", &[])
        .unwrap_or_else(|e| panic!("{case}: the store does not mount after the fault: {e}"));
    let seen = visible(&m);
    m.unmount();
    assert!(
        seen == *pre || seen == *post,
        "{case}: after recovery the store holds neither the state before nor after the operation\n\
         seen: {seen:#?}\nbefore: {pre:#?}\nafter: {post:#?}"
    );
    fsck_clean(s, case);
    let first = snapshot(s);
    s.mount("").unmount();
    fsck_clean(s, case);
    assert_eq!(
        first,
        snapshot(s),
        "{case}: a second recovery changed the catalog"
    );
    seen == *post
}

/// Result of one case.
enum Landed {
    /// The failpoint fired; the invariants held.
    Fired,
    /// The operation passed the point fewer times than asked.
    NotReached,
}

/// Mounts `s` with the failpoints of `spec` armed, marking each pass in
/// the returned mark file.
fn mount_armed(s: &TestStore, spec: &str) -> (PathBuf, Result<Mounted, String>) {
    let mark = s.path("failpoint.mark");
    let env = [
        ("KMSFS_FAILPOINTS", spec),
        ("KMSFS_FAILPOINTS_MARK", mark.to_str().unwrap()),
    ];
    let m = s.try_mount("", &env);
    (mark, m)
}

fn fired(mark: &Path) -> bool {
    std::fs::read_to_string(mark).is_ok_and(|s| s.lines().any(|l| l.contains(" fired ")))
}

fn run_case(point: &str, action: &str, n: u32, op: Op) -> Landed {
    let t = template();
    let case = format!("{point}/{action}/{n}/{op:?}");
    let s = TestStore::copy_of(&t.store);
    let pre = op.prepare(&s, &t.model);
    let post = applied(&pre, &op.effect(t));
    let (mark, m) = mount_armed(&s, &format!("{point}={action}@{n}"));
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            // The point fired while the daemon started: nothing ran yet.
            assert!(fired(&mark), "{case}: mount failed without the fault: {e}");
            recovered(&s, &pre, &pre, &case);
            return Landed::Fired;
        }
    };
    let result = op.run(&s, &m, t);
    if !fired(&mark) {
        assert!(
            result.is_ok(),
            "{case}: failed with no fault injected: {result:?}"
        );
        m.unmount();
        return Landed::NotReached;
    }
    match action {
        "abort" => {
            m.kill();
            recovered(&s, &pre, &post, &case);
        }
        _ => {
            // An I/O error: the daemon keeps serving, and the command's
            // word is the truth.
            let seen = visible(&m);
            let want = if result.is_ok() { &post } else { &pre };
            assert_eq!(
                &seen, want,
                "{case}: the running mount after an I/O error ({result:?})"
            );
            if let Err(e) = &result {
                assert!(!e.trim().is_empty(), "{case}: failed without a word");
            }
            m.unmount();
            let applied = recovered(&s, &pre, &post, &case);
            if op == Op::CreateKey {
                // The keystore says what the command said, after a restart too.
                let keys = s.ok(&["kms", "listkeys", "--kg", "ENCR_A"]);
                assert_eq!(
                    keys.contains(" k2 "),
                    result.is_ok(),
                    "{case}: the key the command reported as {} is {} after a restart:\n{keys}",
                    if result.is_ok() { "made" } else { "not made" },
                    if keys.contains(" k2 ") {
                        "there"
                    } else {
                        "missing"
                    },
                );
            }
            if pre != post {
                assert_eq!(
                    applied,
                    result.is_ok(),
                    "{case}: the remount disagrees with the command"
                );
            }
        }
    }
    Landed::Fired
}

/// How many times the daemon passes `point` while it starts, and then
/// while it runs `op`, when nothing fires.
fn passes(point: &str, op: Op) -> (u32, u32) {
    let t = template();
    let s = TestStore::copy_of(&t.store);
    op.prepare(&s, &t.model);
    let (mark, m) = mount_armed(&s, &format!("{point}=eio@{}", u32::MAX));
    let m = m.unwrap();
    let count = || {
        std::fs::read_to_string(&mark)
            .unwrap_or_default()
            .lines()
            .count() as u32
    };
    let at_start = count();
    op.run(&s, &m, t)
        .unwrap_or_else(|e| panic!("{point}/{op:?} fails with nothing armed: {e}"));
    let total = count() - at_start;
    m.unmount();
    (at_start, total)
}

/// The passes of `op` a walk faults, counted from the daemon's start: the
/// first `depth()`, the middle one and the last (often the step right
/// before a commit).
fn hits_to_fault(point: &str, op: Op) -> Vec<u32> {
    let (at_start, total) = passes(point, op);
    let mut hits: Vec<u32> = (1..=depth()).collect();
    hits.extend([total / 2, total]);
    hits.retain(|&h| h >= 1 && h <= total);
    hits.sort();
    hits.dedup();
    hits.into_iter().map(|h| at_start + h).collect()
}

/// Faults `point` at the passes [`hits_to_fault`] picks in each of `ops`,
/// with both actions; the point must fire in each.
fn walk(point: &str, ops: &[Op]) {
    if let Ok(one) = std::env::var("KMSFS_CRASH_CASE") {
        let f: Vec<&str> = one.split('/').collect();
        if f[0] == point {
            let landed = run_case(f[0], f[1], f[2].parse().unwrap(), Op::parse(f[3]).unwrap());
            assert!(
                matches!(landed, Landed::Fired),
                "{one}: the point did not fire"
            );
        }
        return;
    }
    for &op in ops {
        let hits = hits_to_fault(point, op);
        assert!(!hits.is_empty(), "{point} is never passed by {op:?}");
        for action in ["eio", "abort"] {
            let mut landed = Vec::new();
            for &n in &hits {
                if let Landed::Fired = run_case(point, action, n, op) {
                    landed.push(n);
                }
            }
            assert!(
                !landed.is_empty(),
                "{point} never fired in {op:?} at {hits:?}"
            );
            eprintln!(
                "{point}/{action}/{op:?}: faulted at passes {landed:?} (counted from the daemon's start)"
            );
        }
    }
}

#[test]
fn the_binary_has_failpoints() {
    let o = Command::new(bin())
        .arg("--help")
        .env("KMSFS_FAILPOINTS", "no.such.point=eio")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no failpoint 'no.such.point'"),
        "this kmsfs was built without failpoints: run the tests with \
         `cargo test --release --features failpoints` (scripts/test.sh does)"
    );
}

macro_rules! points {
    ($($test:ident: $point:literal => [$($op:ident),+];)+) => {$(
        #[test]
        fn $test() {
            walk($point, &[$(Op::$op),+]);
        }
    )+};
}

points! {
    volume_append: "volume.append" => [WriteTape, Replace];
    volume_fsync: "volume.fsync" => [WriteTape];
    volume_create: "volume.create" => [WriteNewPool];
    container_write: "container.write" => [WriteLsu];
    container_fsync: "container.fsync" => [WriteLsu];
    dir_fsync: "dir.fsync" => [WriteNewPool, CreateKey];
    catalog_commit: "catalog.commit" => [WriteTape, WriteLsu, Rename, Delete, DeleteTape, Rotate, Gc, Import];
    keystore_save: "keystore.save" => [CreateKey];
    gc_relocate: "gc.relocate" => [Gc];
    gc_unlink: "gc.unlink" => [Gc];
    kek_create: "kek.create" => [Rotate, Convert];
    rewrap: "rewrap" => [Rewrap];
    convert: "convert" => [Convert];
    import_copy: "import.copy" => [Import];
    import_commit: "import.commit" => [Import];
    image_replace: "image.replace" => [Replace];
    recipe_write: "recipe.write" => [WriteLsu];
}

/// Every failpoint the daemon has is in the table above.
#[test]
fn every_failpoint_is_walked() {
    let src = std::fs::read_to_string(file!()).unwrap();
    let names = failpoints_in_source();
    assert!(
        names.len() >= 16,
        "failpoints read from the source: {names:?}"
    );
    for name in names {
        assert!(
            src.contains(&format!("\"{name}\" => [")),
            "failpoint {name} has no row in the crash model"
        );
    }
}

/// One step of a random sequence; its target was picked from the model.
#[derive(Clone, Debug)]
enum Step {
    Write(String),
    Replace(String),
    Rename(String, String),
    Delete(String),
    CreateKey(String),
    Rotate,
    RootKeyAndRewrap(String),
    Gc,
    Convert,
    Import,
}

/// splitmix64: the sequences' only source of choice, so a seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

/// Images in the model (not folders), in order.
fn images(model: &Model) -> Vec<String> {
    model
        .iter()
        .filter(|(_, v)| *v != DIR)
        .map(|(k, _)| k.clone())
        .collect()
}

/// A sequence of `len` steps, each valid on the model the ones before it
/// leave; and that model after each step.
fn sequence(rng: &mut Rng, len: usize, t: &Template) -> Vec<(Step, Model)> {
    let mut model = t.model.clone();
    let mut out = Vec::new();
    let (mut converted, mut imported) = (false, false);
    let small = sha256(&t.small);
    for i in 0..len {
        let step = loop {
            let step = match rng.below(10) {
                0 => {
                    let dirs = ["pools/ENCR_A", "pools/Clear", "msdp/L", "msdp/G"];
                    Step::Write(format!("{}/s{i}", rng.pick(&dirs).unwrap()))
                }
                1 => match rng.pick(&images(&model)) {
                    Some(p) => Step::Replace(p.clone()),
                    None => continue,
                },
                2 => match rng.pick(&images(&model)) {
                    Some(p) => {
                        let dir = p.rsplit_once('/').unwrap().0;
                        Step::Rename(p.clone(), format!("{dir}/r{i}"))
                    }
                    None => continue,
                },
                3 => match rng.pick(&images(&model)) {
                    Some(p) => Step::Delete(p.clone()),
                    None => continue,
                },
                4 => Step::CreateKey(format!("seq{i}")),
                5 => Step::Rotate,
                6 => Step::RootKeyAndRewrap(format!("root{i}")),
                7 => Step::Gc,
                8 if !converted => Step::Convert,
                9 if !imported => Step::Import,
                _ => continue,
            };
            break step;
        };
        match &step {
            Step::Write(p) | Step::Replace(p) => {
                model.insert(p.clone(), small.clone());
            }
            Step::Rename(from, to) => {
                let v = model.remove(from).unwrap();
                model.insert(to.clone(), v);
            }
            Step::Delete(p) => {
                model.remove(p);
            }
            Step::Convert => converted = true,
            Step::Import => {
                imported = true;
                model.insert("pools/Vault".into(), DIR.into());
                model.insert("pools/Vault/far".into(), t.foreign_sha.clone());
            }
            _ => {}
        }
        out.push((step, model.clone()));
    }
    out
}

/// Runs one step on the mounted store; `Err` holds what failed.
fn run_step(step: &Step, s: &TestStore, m: &Mounted, t: &Template) -> Result<(), String> {
    let p = |r: &str| m.p(r).display().to_string();
    let small = t.small.display().to_string();
    let script = match step {
        Step::Write(to) | Step::Replace(to) => format!("cp '{small}' '{}'", p(to)),
        Step::Rename(from, to) => format!("mv '{}' '{}'", p(from), p(to)),
        Step::Delete(what) => format!("rm '{}'", p(what)),
        Step::CreateKey(name) => kmsfs(
            s,
            &format!("kms createkey --kg ENCR_A --name {name} --activate"),
        ),
        Step::Rotate => kmsfs(s, "lsu rotate-kek L"),
        Step::RootKeyAndRewrap(name) => format!(
            "{} && {}",
            kmsfs(
                s,
                &format!("kms createkey --kg lsukg --name {name} --activate")
            ),
            kmsfs(s, "lsu rewrap L")
        ),
        Step::Gc => kmsfs(s, "lsu gc L"),
        Step::Convert => kmsfs(s, "lsu convert G"),
        Step::Import => kmsfs(s, &format!("import '{}'", t.foreign_volume.display())),
    };
    script_result(&script)
}

/// Every failpoint armed never to fire: each pass is marked.
fn count_everything() -> String {
    failpoints_in_source()
        .iter()
        .map(|p| format!("{p}=eio@{}", u32::MAX))
        .collect::<Vec<_>>()
        .join(",")
}

fn failpoints_in_source() -> Vec<String> {
    let lib = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/util/failpoint.rs"),
    )
    .unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|rest| rest.split_once("= \""))
        .map(|(_, v)| v.trim_end_matches("\";").to_string())
        .collect()
}

/// The passes (point, pass number from the daemon's start) the steps of a
/// sequence make, run once with nothing firing.
fn passes_of(steps: &[(Step, Model)], case: &str) -> Vec<(String, u32)> {
    let t = template();
    let s = TestStore::copy_of(&t.store);
    let (mark, m) = mount_armed(&s, &count_everything());
    let m = m.unwrap();
    let at_start = std::fs::read_to_string(&mark)
        .unwrap_or_default()
        .lines()
        .count();
    for (step, _) in steps {
        run_step(step, &s, &m, t)
            .unwrap_or_else(|e| panic!("{case}: {step:?} fails with nothing armed: {e}"));
    }
    // Counted before the unmount: a pass made while the daemon stops is
    // not one the faulted run can be asked to reach before its checks.
    let marks = std::fs::read_to_string(&mark).unwrap();
    m.unmount();
    marks
        .lines()
        .skip(at_start)
        .filter_map(|l| {
            let (name, n) = l.split_once(" pass ")?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// One seeded sequence: run it once to count the failpoint passes, pick one
/// pass and an action, run it again with that fault, and check the store
/// against the model: the steps before the fault all there, the faulted
/// step all or nothing (as its command said, for an I/O error), the steps
/// after an I/O error all there (the daemon kept serving), and after
/// recovery `fsck` clean and a second recovery changing nothing.
fn random_case(seed: u64) {
    let t = template();
    let mut rng = Rng(seed);
    let steps = sequence(&mut rng, 6, t);
    let names: Vec<String> = steps.iter().map(|(s, _)| format!("{s:?}")).collect();
    let case0 = format!("seed {seed} (KMSFS_CRASH_SEED={seed}), steps {names:?}");
    let passes = passes_of(&steps, &case0);
    // Every sequence commits something: no pass at all means the
    // counting is broken, not that there is nothing to fault.
    let (point, n) = rng
        .pick(&passes)
        .cloned()
        .unwrap_or_else(|| panic!("{case0}: no failpoint passed"));
    let action = *rng.pick(&["eio", "enospc", "abort"]).unwrap();
    let case = format!("{case0}, fault {point}={action}@{n}");
    eprintln!("crash model: {case}");
    let s = TestStore::copy_of(&t.store);
    let (mark, m) = mount_armed(&s, &format!("{point}={action}@{n}"));
    let m = m.unwrap();
    let mut model = t.model.clone();
    let mut steps = steps.iter();
    for (step, after) in steps.by_ref() {
        let result = run_step(step, &s, &m, t);
        if !fired(&mark) {
            assert!(
                result.is_ok(),
                "{case}: {step:?} failed with no fault: {result:?}"
            );
            model = after.clone();
            continue;
        }
        eprintln!("crash model: {case}: fired in {step:?} ({result:?})");
        if action == "abort" {
            m.kill();
            recovered(&s, &model, after, &case);
            return;
        }
        let seen = visible(&m);
        let want = if result.is_ok() { after } else { &model };
        assert_eq!(
            &seen, want,
            "{case}: the running mount after {step:?} ({result:?})"
        );
        model = want.clone();
        break;
    }
    // After an I/O error the daemon keeps serving: the rest of the steps
    // run on what the failed step left (a step whose target it did not
    // make is skipped).
    for (step, after) in steps {
        let before = model.clone();
        match run_step(step, &s, &m, t) {
            Ok(()) => model = redo(step, &before, after),
            Err(e) => assert!(
                !applies(step, &before),
                "{case}: {step:?} failed after the fault: {e}"
            ),
        }
    }
    assert!(fired(&mark), "{case}: the fault never fired");
    assert_eq!(visible(&m), model, "{case}: the running mount at the end");
    m.unmount();
    recovered(&s, &model, &model, &case);
}

/// Whether `step` can run on `model` (its source image exists).
fn applies(step: &Step, model: &Model) -> bool {
    match step {
        Step::Replace(p) | Step::Delete(p) | Step::Rename(p, _) => model.contains_key(p),
        _ => true,
    }
}

/// The model after `step` ran on `before` (which may differ from the
/// planned one when an earlier step failed): the planned change only.
fn redo(step: &Step, before: &Model, planned: &Model) -> Model {
    let mut m = before.clone();
    match step {
        Step::Write(p) | Step::Replace(p) => {
            m.insert(p.clone(), planned[p].clone());
        }
        Step::Rename(from, to) => {
            let v = m.remove(from).unwrap();
            m.insert(to.clone(), v);
        }
        Step::Delete(p) => {
            m.remove(p);
        }
        Step::Import => {
            m.insert("pools/Vault".into(), DIR.into());
            m.insert("pools/Vault/far".into(), planned["pools/Vault/far"].clone());
        }
        _ => {}
    }
    m
}

/// Random sequences of operations with one fault each (`KMSFS_CRASH_SEED`
/// runs one seed; `KMSFS_CRASH_SEQUENCES` how many, from a seed printed).
#[test]
fn random_sequences_with_a_fault() {
    if std::env::var("KMSFS_CRASH_CASE").is_ok() {
        return;
    }
    if let Some(seed) = std::env::var("KMSFS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        random_case(seed);
        return;
    }
    let count: u64 = std::env::var("KMSFS_CRASH_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let first = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!("crash model: sequences from seed {first}");
    for seed in first..first + count {
        random_case(seed);
    }
}
