//! Named fault-injection points at each durability step, so the crash
//! model tests can make an I/O error or a crash land exactly there.
//!
//! Compiled in only with the `failpoints` cargo feature, which the test
//! command turns on and a release build leaves out: without it, [`hit`] is
//! an empty inline function and the environment is never read.
//!
//! With the feature, `KMSFS_FAILPOINTS` arms points when the process
//! starts: `NAME=ACTION[@N][,NAME=ACTION[@N]...]`, where ACTION is `eio`,
//! `enospc` or `abort` (the process is SIGKILLed) and `@N` fires on the N-th hit only (default the
//! first; `@N+` on every hit from the N-th on). A point that fires logs
//! `failpoint NAME fired` at error level before it acts; with
//! `KMSFS_FAILPOINTS_MARK=FILE`, every pass of an armed point and its firing
//! are appended to FILE, so a test can count an operation's passes and tell
//! a fault it injected from one it did not, even after an abort.

/// Every failpoint, with the step it stands before (docs/failpoints.md
/// says which operations reach each).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub const ALL: &[&str] = &[
    VOLUME_APPEND,
    VOLUME_FSYNC,
    VOLUME_CREATE,
    CONTAINER_WRITE,
    CONTAINER_FSYNC,
    DIR_FSYNC,
    CATALOG_COMMIT,
    KEYSTORE_SAVE,
    GC_RELOCATE,
    GC_UNLINK,
    KEK_CREATE,
    REWRAP,
    CONVERT,
    IMPORT_COPY,
    IMPORT_COMMIT,
    IMAGE_REPLACE,
    RECIPE_WRITE,
];

/// Writing blocks to a tape volume file.
pub const VOLUME_APPEND: &str = "volume.append";
/// fsync of a tape volume before the catalog names what it holds.
pub const VOLUME_FSYNC: &str = "volume.fsync";
/// Creating and syncing a new volume file.
pub const VOLUME_CREATE: &str = "volume.create";
/// Writing sealed segments to an LSU container.
pub const CONTAINER_WRITE: &str = "container.write";
/// fsync of an LSU container before the catalog names its segments.
pub const CONTAINER_FSYNC: &str = "container.fsync";
/// fsync of a directory after a file in it was created, renamed or removed.
pub const DIR_FSYNC: &str = "dir.fsync";
/// Every catalog transaction, just before it commits.
pub const CATALOG_COMMIT: &str = "catalog.commit";
/// Saving the keystore (after the new file is written, before the rename).
pub const KEYSTORE_SAVE: &str = "keystore.save";
/// GC copying a container's live segments into a new container.
pub const GC_RELOCATE: &str = "gc.relocate";
/// GC removing a container file no segment needs.
pub const GC_UNLINK: &str = "gc.unlink";
/// Creating a KEK (at LSU creation, rotation, or a writer's rotation).
pub const KEK_CREATE: &str = "kek.create";
/// Rewrapping one KEK or fingerprint key under the active root key.
pub const REWRAP: &str = "rewrap";
/// One step of converting legacy segments to KEK mode.
pub const CONVERT: &str = "convert";
/// Copying an image's fragments from a foreign volume at import.
pub const IMPORT_COPY: &str = "import.copy";
/// Committing an imported image to the catalog.
pub const IMPORT_COMMIT: &str = "import.commit";
/// Replacing an image through the mount (open with O_TRUNC).
pub const IMAGE_REPLACE: &str = "image.replace";
/// Renaming an LSU image's new recipe file into place before its commit.
pub const RECIPE_WRITE: &str = "recipe.write";

/// Reads `KMSFS_FAILPOINTS` now (a build with failpoints refuses a bad
/// spec at start, exit code 2); nothing without the feature.
pub fn arm() {
    #[cfg(feature = "failpoints")]
    armed::arm();
}

/// Passes failpoint `name`: `Ok` unless it is armed and fires.
#[inline(always)]
pub fn hit(name: &'static str) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    {
        armed::hit(name)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        Ok(())
    }
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Action {
        Eio,
        Enospc,
        Abort,
    }

    #[derive(Debug)]
    struct Point {
        action: Action,
        at: u64,
        and_after: bool,
        hits: u64,
    }

    fn points() -> &'static Mutex<HashMap<String, Point>> {
        static POINTS: OnceLock<Mutex<HashMap<String, Point>>> = OnceLock::new();
        POINTS.get_or_init(|| {
            let spec = std::env::var("KMSFS_FAILPOINTS").unwrap_or_default();
            Mutex::new(parse(&spec).unwrap_or_else(|e| {
                eprintln!("kmsfs: KMSFS_FAILPOINTS: {e}");
                std::process::exit(2)
            }))
        })
    }

    fn parse(spec: &str) -> Result<HashMap<String, Point>, String> {
        let mut out = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, rest) = item
                .split_once('=')
                .ok_or_else(|| format!("'{item}': want NAME=ACTION[@N]"))?;
            if !super::ALL.contains(&name) {
                return Err(format!(
                    "no failpoint '{name}' (known: {})",
                    super::ALL.join(", ")
                ));
            }
            let (action, at) = rest.split_once('@').unwrap_or((rest, "1"));
            let action = match action {
                "eio" => Action::Eio,
                "enospc" => Action::Enospc,
                "abort" => Action::Abort,
                other => return Err(format!("'{other}': want eio, enospc or abort")),
            };
            let and_after = at.ends_with('+');
            let at: u64 = at
                .trim_end_matches('+')
                .parse()
                .map_err(|_| format!("'{item}': @N wants a number from 1"))?;
            if at == 0 {
                return Err(format!("'{item}': hits count from 1"));
            }
            out.insert(
                name.to_string(),
                Point {
                    action,
                    at,
                    and_after,
                    hits: 0,
                },
            );
        }
        Ok(out)
    }

    /// Appends `line` to the file `KMSFS_FAILPOINTS_MARK` names, if any:
    /// each pass of an armed point (`NAME pass N`) and its firing (`NAME
    /// fired ACTION`, before it acts), so a test learns how often an
    /// operation passes a point and that its fault landed, even when the
    /// process aborts before its log is written.
    fn mark(line: &str) {
        use std::io::Write;
        if let Some(path) = std::env::var_os("KMSFS_FAILPOINTS_MARK") {
            let _ = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
        }
    }

    pub(super) fn arm() {
        points();
    }

    pub(super) fn hit(name: &'static str) -> std::io::Result<()> {
        let action = {
            let mut points = points().lock().unwrap_or_else(|e| e.into_inner());
            let Some(p) = points.get_mut(name) else {
                return Ok(());
            };
            p.hits += 1;
            mark(&format!("{name} pass {}", p.hits));
            if p.hits != p.at && !(p.and_after && p.hits > p.at) {
                return Ok(());
            }
            p.action
        };
        tracing::error!(failpoint = name, "failpoint {name} fired: {action:?}");
        mark(&format!("{name} fired {action:?}"));
        match action {
            Action::Eio => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            Action::Enospc => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            Action::Abort => {
                // SIGKILL, as a crash: no core dump, no handler, no delay.
                eprintln!("kmsfs: failpoint {name} fired: abort");
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                std::process::abort()
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_parse_and_bad_ones_are_refused() {
            let p = parse("volume.append=eio@3, keystore.save=abort,dir.fsync=enospc@2+").unwrap();
            assert_eq!(p["volume.append"].action, Action::Eio);
            assert_eq!(
                (p["volume.append"].at, p["volume.append"].and_after),
                (3, false)
            );
            assert_eq!(p["keystore.save"].at, 1);
            assert!(p["dir.fsync"].and_after);
            assert!(
                parse("nope=eio")
                    .unwrap_err()
                    .contains("no failpoint 'nope'")
            );
            assert!(parse("dir.fsync=boom").unwrap_err().contains("'boom'"));
            assert!(parse("dir.fsync=eio@0").is_err());
            assert!(parse("dir.fsync").is_err());
        }
    }
}
