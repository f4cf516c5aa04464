//! Every input a fuzz target ever crashed on (`fuzz/regressions/TARGET/`)
//! and every seed a target starts from, run through the target in the
//! normal test suite: a parser bug the fuzzer found stays found. See
//! `scripts/fuzz.sh` and docs/fuzzing.md.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Each saved crash input runs through its target without a panic.
#[test]
fn saved_crashes_no_longer_crash() {
    let dir = root().join("fuzz/regressions");
    let mut ran = 0;
    for target in kmsfs::fuzzing::TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            eprintln!("{target}: {}", path.display());
            kmsfs::fuzzing::run(target, &data);
            ran += 1;
        }
    }
    assert!(ran > 0, "no saved crash inputs under {}", dir.display());
}

/// Every target runs on every one of its seeds (what `scripts/fuzz.sh`
/// starts the fuzzer from), and every target has seeds.
#[test]
fn every_target_runs_on_its_seeds() {
    let golden = root().join("tests/golden");
    for target in kmsfs::fuzzing::TARGETS {
        let seeds = kmsfs::fuzzing::seeds(target, &golden);
        assert!(!seeds.is_empty(), "fuzz target {target} has no seeds");
        for s in &seeds {
            kmsfs::fuzzing::run(target, s);
        }
    }
}

/// Writes each target's seeds to `$KMSFS_FUZZ_SEEDS/TARGET/` (for
/// `scripts/fuzz.sh`; ignored in the normal run).
#[test]
#[ignore = "scripts/fuzz.sh runs it to write the seed corpora"]
fn write_seeds() {
    let out = PathBuf::from(std::env::var_os("KMSFS_FUZZ_SEEDS").expect("KMSFS_FUZZ_SEEDS"));
    let golden = root().join("tests/golden");
    for target in kmsfs::fuzzing::TARGETS {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in kmsfs::fuzzing::seeds(target, &golden).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
        }
    }
}
