//! Entry points of the fuzz targets in `fuzz/` (run by `scripts/fuzz.sh`)
//! and of their regression test (`tests/fuzz_regressions.rs`): one function
//! per parser of bytes that come from disk or the network, each taking the
//! whole input, and the seeds each starts from. The parsers themselves stay
//! private to their modules; these functions only call them the way kmsfs
//! does and check what must hold of what they accept (a decoded header
//! re-encodes to the same bytes, a tar listing does not depend on how the
//! archive was cut into pieces). A panic, an abort or a hang here is a bug.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::crypto::{self, SecretKey};
use crate::tape::format::{FORMAT_VERSION, FileMark, FragmentHeader, MediaHeader};
use crate::tape::scan;

/// The fuzz targets, by name (each is `fuzz/fuzz_targets/NAME.rs`).
pub const TARGETS: &[&str] = &[
    "tape_headers",
    "tape_volume",
    "container",
    "catalog_records",
    "keystore",
    "hmk_params",
    "export",
    "ttlv",
    "tar_list",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "tape_headers" => tape_headers(data),
        "tape_volume" => tape_volume(data),
        "container" => container(data),
        "catalog_records" => catalog_records(data),
        "keystore" => keystore(data),
        "hmk_params" => hmk_params(data),
        "export" => export(data),
        "ttlv" => ttlv(data),
        "tar_list" => tar_list(data),
        _ => panic!("no fuzz target {name}"),
    }
}

/// Media header, fragment header and file mark, each decoded from the start
/// of `data`; what decodes must encode to the bytes it came from.
pub fn tape_headers(data: &[u8]) {
    // Headers of an older format decode into today's structs, which
    // encode in today's format: only a current one must come back as is.
    let current = data.get(8..10) == Some(&FORMAT_VERSION.to_le_bytes()[..]);
    if let Some(m) = MediaHeader::decode(data).ok().filter(|_| current) {
        assert_eq!(m.encode(), data[..m.encode().len()]);
    }
    if let Ok(f) = FragmentHeader::decode(data) {
        assert_eq!(FragmentHeader::peek_len(data).ok(), Some(f.encode().len()));
        assert_eq!(f.encode(), data[..f.encode().len()]);
    }
    if let Ok(m) = FileMark::decode(data) {
        assert_eq!(m.encode(), data[..m.encode().len()]);
    }
    if let Ok((len, flags)) = crate::tape::format::parse_block_header(data) {
        assert_eq!(crate::tape::format::block_header(len, flags), data[..8]);
    }
}

/// A whole volume file: scanned as import and `fsck` scan it, then every
/// fragment's header and file mark authenticated and every block read and
/// authenticated (under the golden volumes' pass-phrase keys).
pub fn tape_volume(data: &[u8]) {
    let path = scratch("volume.kvol");
    std::fs::write(&path, data).expect("writing the fuzz input to a scratch file");
    let Ok(found) = scan::scan_volume(&path) else {
        return;
    };
    for frag in &found.fragments {
        let again = scan::fragment_at(&path, frag.header_offset);
        assert_eq!(
            again.as_ref().ok(),
            Some(frag),
            "a fragment rescanned at its offset"
        );
        let key = match frag.header.key_tag {
            Some(tag) => match golden_key(tag, frag.header.kcv) {
                Some(k) => Some(k),
                None => continue,
            },
            None => None,
        };
        let mut read = 0u64;
        let result = scan::read_fragment(&path, &found.media.barcode, frag, key.as_ref(), |b| {
            read += b.len() as u64
        });
        if result.is_ok() {
            assert_eq!(read, frag.len, "a fragment reads back its recorded length");
        }
    }
}

/// The pass phrase of the golden volumes (tests/golden/*/expected.json).
const GOLDEN_PASS: &[u8] = b"golden pass phrase v1";

/// The key of a golden volume's fragment: derived once, at the first call,
/// for each tag the golden volumes use (deriving a key costs 64 MiB of
/// Argon2: a mutated tag gets none), if it matches the check value `kcv`.
fn golden_key(tag: [u8; 16], kcv: [u8; 8]) -> Option<SecretKey> {
    static KEYS: OnceLock<HashMap<[u8; 16], SecretKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let path = scratch("golden.kvol");
        let mut keys = HashMap::new();
        for v in golden_volumes(&golden) {
            let found = std::fs::write(&path, &v)
                .ok()
                .and_then(|()| scan::scan_volume(&path).ok());
            for f in found.iter().flat_map(|s| &s.fragments) {
                if let Some(tag) = f.header.key_tag
                    && !keys.contains_key(&tag)
                    && let Ok(k) = crypto::passphrase_key(
                        GOLDEN_PASS,
                        &hex::encode(tag),
                        crypto::PASSPHRASE_KEY_PARAMS,
                    )
                {
                    keys.insert(tag, k);
                }
            }
        }
        keys
    })
    .get(&tag)
    .filter(|k| crypto::key_check_value(k) == kcv)
    .map(SecretKey::duplicate)
}

/// An LSU key dictionary file forged with its fingerprint key in clear
/// (for the test that `lsu recover` refuses it; see `msdp::fuzz`).
pub fn forged_keydict(file: &[u8], key: [u8; 32], legacy_tag: &str) -> Option<Vec<u8>> {
    crate::msdp::fuzz::forged_keydict(file, key, legacy_tag)
}

/// An LSU container file, record by record (see `msdp::fuzz`).
pub fn container(data: &[u8]) {
    let _ = crate::msdp::fuzz::container_file(data);
}

/// A catalog record of the type the first byte picks (see `catalog::fuzz`).
pub fn catalog_records(data: &[u8]) {
    let _ = crate::catalog::fuzz::record(data);
}

/// A keystore file (first byte even) or a keystore body sealed under a
/// fixed HMK first (odd), see `kms::fuzz`.
pub fn keystore(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 2 == 0 => drop(crate::kms::fuzz::keystore_file(rest)),
        Some((_, rest)) => drop(crate::kms::fuzz::keystore_body(rest)),
        None => {}
    }
}

/// An `hmk.params` file.
pub fn hmk_params(data: &[u8]) {
    let _ = crate::kms::fuzz::hmk_params(data);
}

/// A key export container (first byte even) or a container body sealed
/// with the fuzz pass phrase first (odd), imported into a keystore.
pub fn export(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 2 == 0 => drop(crate::kms::fuzz::export_container(rest)),
        Some((_, rest)) => drop(crate::kms::fuzz::export_body(rest)),
        None => {}
    }
}

/// A KMIP response, and a wrapped key as a KMIP root key's holder stores it.
pub fn ttlv(data: &[u8]) {
    let _ = crate::kmip::read_response(data);
    let _ = crypto::kmip_unframe(data, "fuzz", || {
        Ok::<_, ()>(SecretKey::from_slice(&[1; 32]).expect("32 bytes"))
    });
    let _ = crypto::kmip_v1_key(data, "fuzz");
}

/// The tar member lister, fed the archive in pieces whose sizes the first
/// two bytes pick; the list must be the same as fed in one piece.
pub fn tar_list(data: &[u8]) {
    use crate::pipeline::filelist::Lister;
    let Some((&[a, b], archive)) = data.split_first_chunk::<2>() else {
        return;
    };
    let whole = {
        let mut l = Lister::with_budget(1 << 20);
        l.feed(archive);
        l.finish()
    };
    let mut l = Lister::with_budget(1 << 20);
    let sizes = [usize::from(a) + 1, usize::from(b) * 7 + 1];
    let mut rest = archive;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % 2].min(rest.len());
        l.feed(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    assert_eq!(l.pos(), archive.len() as u64);
    let pieces = l.finish();
    assert_eq!(
        pieces, whole,
        "the listing depends on how the archive was cut"
    );
    for e in whole.iter().flatten() {
        assert!(
            e.kind == b'I' || e.offset <= archive.len() as u64,
            "member {} listed past the end of the archive",
            e.path
        );
    }
}

/// A scratch path of this call (a test may run targets in parallel
/// threads), removed when the guard drops.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new scratch path for inputs that are read from a path, in a
/// directory of this process's own.
fn scratch(name: &str) -> Scratch {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = DIR.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let d = std::env::temp_dir().join(format!("kmsfs-fuzz-{}-{nanos}", std::process::id()));
        // A new directory of this process's own (mode 0700): nothing
        // another user placed there is followed.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .expect("a scratch directory");
        d
    });
    Scratch(dir.join(format!("{n}-{name}")))
}

/// The seeds of target `name` that kmsfs makes itself (sealed under the
/// fuzz keys, so the fuzzer starts from inputs that authenticate), beside
/// the golden files `scripts/fuzz.sh` adds. `golden` is `tests/golden`.
pub fn seeds(name: &str, golden: &Path) -> Vec<Vec<u8>> {
    let prefixed = |k: u8, v: Vec<u8>| [vec![k], v].concat();
    match name {
        "tape_headers" => golden_volumes(golden)
            .iter()
            .flat_map(|v| header_slices(v))
            .collect(),
        "tape_volume" => golden_volumes(golden),
        "container" => {
            let mut v = vec![crate::msdp::fuzz::sample_container()];
            let lsu = golden.join("store-v1/store/lsu/lsu1/containers");
            v.extend(files_in(&lsu));
            v
        }
        "catalog_records" => {
            crate::catalog::fuzz::raw_records(&golden.join("store-v1/store/catalog/catalog.redb"))
                .unwrap_or_default()
        }
        "keystore" => {
            let mut v = Vec::new();
            if let Ok(ks) = crate::kms::fuzz::keystore_file_sample() {
                v.push(prefixed(0, ks));
            }
            if let Ok(body) = crate::kms::fuzz::keystore_body_sample() {
                v.push(prefixed(1, body));
            }
            v.extend(
                std::fs::read(golden.join("store-v1/store/kms/keystore.kks"))
                    .map(|b| prefixed(0, b)),
            );
            v
        }
        "hmk_params" => vec![crate::kms::fuzz::hmk_params_sample()],
        "export" => {
            let mut v = Vec::new();
            if let Ok((file, body)) = crate::kms::fuzz::export_samples() {
                v.push(prefixed(0, file));
                v.push(prefixed(1, body));
            }
            v
        }
        "ttlv" => crate::kmip::sample_messages(),
        "tar_list" => tar_archives()
            .into_iter()
            .map(|a| [&[7u8, 3][..], &a].concat())
            .collect(),
        _ => panic!("no fuzz target {name}"),
    }
}

/// Archives `tar` makes of a small tree (a file, an empty file, a name
/// longer than 100 bytes, a symlink, a hard link, a directory) in the
/// GNU, PAX and ustar formats; none if `tar` is not installed.
pub fn tar_archives() -> Vec<Vec<u8>> {
    let dir = scratch("tree");
    let _ = std::fs::remove_dir_all(&dir);
    let long = "d".repeat(60) + "/" + &"n".repeat(80);
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join(&long).parent().expect("a parent"))?;
        std::fs::write(dir.join("file.txt"), b"some data\n".repeat(100))?;
        std::fs::write(dir.join("empty"), b"")?;
        std::fs::write(dir.join(&long), b"long name")?;
        std::os::unix::fs::symlink("file.txt", dir.join("link"))?;
        std::fs::hard_link(dir.join("file.txt"), dir.join("hard"))?;
        Ok(())
    })();
    if made.is_err() {
        return Vec::new();
    }
    ["gnu", "pax", "ustar"]
        .iter()
        .filter_map(|format| {
            let out = std::process::Command::new("tar")
                .args(["-cf", "-", "--format", format, "--sort=name", "-C"])
                .arg(&*dir)
                .arg(".")
                .output()
                .ok()?;
            // ustar cannot hold the long name: tar says so and leaves it out.
            (!out.stdout.is_empty()).then_some(out.stdout)
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn golden_volumes(golden: &Path) -> Vec<Vec<u8>> {
    ["v1", "v2"]
        .iter()
        .flat_map(|v| {
            files_in(&golden.join(v))
                .into_iter()
                .filter(|b| b.starts_with(b"KMSFS"))
        })
        .collect()
}

/// The media header and each fragment header and file mark of a volume,
/// each as the start of a seed.
fn header_slices(volume: &[u8]) -> Vec<Vec<u8>> {
    let path = scratch("seed.kvol");
    if std::fs::write(&path, volume).is_err() {
        return Vec::new();
    }
    let Ok(found) = scan::scan_volume(&path) else {
        return Vec::new();
    };
    let mut out = vec![volume[..crate::tape::format::MEDIA_HEADER_LEN as usize].to_vec()];
    for f in &found.fragments {
        let at = f.header_offset as usize;
        out.push(volume[at..f.data_offset as usize].to_vec());
        let mark = (f.data_offset + scan::data_len(f)) as usize;
        out.push(
            volume[mark..(mark + crate::tape::format::FILEMARK_LEN as usize).min(volume.len())]
                .to_vec(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
    }

    /// The seeds reach the deep end of each parser: without that, a fuzz
    /// target spends its time on inputs the first check refuses.
    #[test]
    fn the_seeds_reach_past_authentication() {
        let container = seeds("container", &golden());
        assert_eq!(crate::msdp::fuzz::container_file(&container[0]), Ok(3));
        for k in &seeds("keystore", &golden())[..2] {
            let r = match k[0] {
                0 => crate::kms::fuzz::keystore_file(&k[1..]),
                _ => crate::kms::fuzz::keystore_body(&k[1..]),
            };
            assert!(r.expect("the keystore seed opens") >= 5);
        }
        for e in seeds("export", &golden()) {
            let r = match e[0] {
                0 => crate::kms::fuzz::export_container(&e[1..]),
                _ => crate::kms::fuzz::export_body(&e[1..]),
            };
            assert!(r.expect("the export seed imports") > 0);
        }
        crate::kms::fuzz::hmk_params(&seeds("hmk_params", &golden())[0]).unwrap();
        for m in seeds("ttlv", &golden()).iter().skip(1) {
            assert!(crate::kmip::read_response(m).expect("a seed response reads") > 0);
        }
        let records = seeds("catalog_records", &golden());
        assert!(records.len() > 5);
        assert!(
            records
                .iter()
                .any(|r| crate::catalog::fuzz::record(r).is_ok())
        );
    }

    /// Making seeds reads the golden files, never writes them: opening the
    /// golden catalog with redb rewrote it (its header flag and more).
    #[test]
    fn making_seeds_leaves_the_golden_files_as_they_are() {
        let catalog = golden().join("store-v1/store/catalog/catalog.redb");
        let before = std::fs::read(&catalog).unwrap();
        for t in TARGETS {
            seeds(t, &golden());
        }
        assert!(
            std::fs::read(&catalog).unwrap() == before,
            "the golden catalog changed"
        );
    }

    #[test]
    fn every_golden_volume_seed_reads_back_under_its_key() {
        let volumes = seeds("tape_volume", &golden());
        assert_eq!(volumes.len(), 6);
        let path = scratch("test.kvol");
        let mut read = 0;
        for v in &volumes {
            std::fs::write(&path, v).unwrap();
            let found = scan::scan_volume(&path).unwrap();
            for f in &found.fragments {
                let key = f
                    .header
                    .key_tag
                    .map(|t| golden_key(t, f.header.kcv).unwrap());
                scan::read_fragment(&path, &found.media.barcode, f, key.as_ref(), |_| {}).unwrap();
                read += 1;
            }
        }
        assert!(read >= 8, "{read} fragments read");
        assert!(seeds("tape_headers", &golden()).len() > 10);
    }

    /// A member list cut differently is caught (the check the target
    /// relies on), on an archive `tar` made.
    #[test]
    fn tar_list_accepts_an_archive_fed_in_odd_pieces() {
        let archives = tar_archives();
        assert_eq!(archives.len(), 3);
        for archive in &archives {
            for cut in [[0u8, 0], [1, 9], [255, 255], [3, 0]] {
                tar_list(&[&cut[..], archive].concat());
            }
            let mut l = crate::pipeline::filelist::Lister::new();
            l.feed(archive);
            assert!(l.finish().expect("a complete archive").len() >= 5);
        }
    }
}
