//! The KMS's readers of bytes that come from disk (the keystore file,
//! `hmk.params`, a key export container), as the fuzz targets in `fuzz/`
//! call them. Each takes the bytes of a whole file. The keystore and the
//! container are sealed, so a mutated file mostly fails authentication: the
//! `*_body` entry points seal the fuzzer's bytes first (under a fixed key or
//! pass phrase), so the decoding and import of a body are fuzzed too.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use super::unlock::{HmkSource, hmk_params_bytes, parse_hmk_params};
use super::{Keystore, KmsError, NewKey, keystore, transfer};
use crate::crypto::{self, Argon2Params, SecretKey};

/// The pass phrase of the containers the fuzz targets seal.
pub(crate) const PASS: &[u8] = b"fuzz pass phrase";
/// Costs small enough for a fuzzer's many runs (the smallest Argon2 allows).
pub(crate) const CHEAP: Argon2Params = Argon2Params {
    m_kib: 8,
    t: 1,
    p: 1,
};

fn path() -> &'static Path {
    Path::new("fuzz-input")
}

fn hmk() -> SecretKey {
    SecretKey::from_slice(&[0x48; 32]).expect("32 bytes")
}

/// Whether a file's costs are cheap enough to derive a key with in a fuzz
/// run (a file may ask for 1 GiB and 16 passes, which is allowed but slow).
fn cheap(p: Argon2Params) -> bool {
    p.m_kib <= 64 && p.t <= 2 && p.p <= 2
}

/// A keystore file: header checks, then the body opened under the fixed
/// HMK and decoded. Returns the number of keys.
pub(crate) fn keystore_file(bytes: &[u8]) -> Result<usize, KmsError> {
    let body = keystore::decode(bytes, &hmk(), path())?;
    Ok(body.keys.len() + body.groups.len() + body.tombstones.len())
}

/// A keystore whose body's bincode is `plain`, sealed as a save seals it.
pub(crate) fn keystore_body(plain: &[u8]) -> Result<usize, KmsError> {
    keystore_file(&keystore::seal_body(plain, &hmk())?)
}

/// An `hmk.params` file: parsed and checked; the HMK derived when its
/// costs are cheap.
pub(crate) fn hmk_params(bytes: &[u8]) -> Result<(), KmsError> {
    let (params, salt) = parse_hmk_params(bytes, path())?;
    if cheap(params) {
        crypto::passphrase_secret(PASS, &salt, params, b"fuzz")?;
    }
    Ok(())
}

/// A key export container: header checked, opened with [`PASS`] when its
/// costs are cheap, and its keys imported (preview) into a keystore that
/// already has a group and a key.
pub(crate) fn export_container(bytes: &[u8]) -> Result<usize, KmsError> {
    if !cheap(transfer::container_params(bytes, path())?) {
        return Ok(0);
    }
    let body = transfer::open_container(bytes, path(), PASS)?;
    let mut ks = import_target().lock().unwrap_or_else(|p| p.into_inner());
    let report = ks.import_keys(&body, false, true)?;
    let again = ks.import_keys(&body, true, true)?;
    Ok(report.imported.len() + again.imported.len())
}

/// A container whose body's bincode is `plain`, sealed as an export seals it.
pub(crate) fn export_body(plain: &[u8]) -> Result<usize, KmsError> {
    export_container(&transfer::seal_container(plain, PASS, CHEAP, &[0x53; 16])?)
}

/// An `hmk.params` file of [`CHEAP`] costs.
pub(crate) fn hmk_params_sample() -> Vec<u8> {
    hmk_params_bytes(CHEAP, &[0x53; 16])
}

/// A real container of a keystore with two groups and three keys, sealed
/// with [`PASS`] at [`CHEAP`] costs, and its body's bincode.
pub(crate) fn export_samples() -> Result<(Vec<u8>, Vec<u8>), KmsError> {
    let dir = tempfile_dir("sample");
    let mut ks = sample_keystore(&dir)?;
    ks.create_key(NewKey {
        group: "ENCR_Fuzz",
        name: "second",
        description: "",
        passphrase: None,
        activate: false,
    })?;
    let out = dir.join("export.kex");
    transfer::export_container(&ks, &[], PASS, &out, true)?;
    let bytes = std::fs::read(&out).map_err(|e| KmsError::io(&out, e))?;
    let body = transfer::open_container(&bytes, &out, PASS)?;
    let plain = transfer::encode_exact(&body)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((
        transfer::seal_container(&plain, PASS, CHEAP, &[0x53; 16])?,
        plain.to_vec(),
    ))
}

/// The bincode of a real keystore's body (see [`keystore_file_sample`]).
pub(crate) fn keystore_body_sample() -> Result<Vec<u8>, KmsError> {
    let file = keystore_file_sample()?;
    let plain = crypto::open(
        &hmk(),
        &file[..keystore::HEADER_LEN],
        &file[keystore::HEADER_LEN..],
    )?;
    Ok(plain.to_vec())
}

/// The bytes of a real keystore file (two groups, keys, a tombstone),
/// sealed under the fixed HMK.
pub(crate) fn keystore_file_sample() -> Result<Vec<u8>, KmsError> {
    let dir = tempfile_dir("keystore");
    let mut ks = sample_keystore(&dir)?;
    ks.create_key(NewKey {
        group: "ENCR_Fuzz",
        name: "gone",
        description: "",
        passphrase: None,
        activate: false,
    })?;
    ks.delete_key("ENCR_Fuzz", "gone")?;
    let bytes = keystore::encode(&ks.body, &hmk())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes)
}

/// A directory no other call uses (tests make samples in parallel threads
/// of one process), not yet made.
fn tempfile_dir(what: &str) -> std::path::PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "kmsfs-fuzz-{what}-{}-{n}-{nanos}",
        std::process::id()
    ))
}

fn sample_keystore(dir: &Path) -> Result<Keystore, KmsError> {
    let mut ks = Keystore::create(dir, HmkSource::File(dir.join(super::HMK_FILE)))?;
    for group in ["ENCR_Fuzz", "lsukg"] {
        ks.create_group(group, "fuzz")?;
        ks.create_key(NewKey {
            group,
            name: "first",
            description: "the first key",
            passphrase: None,
            activate: true,
        })?;
    }
    Ok(ks)
}

fn import_target() -> &'static Mutex<Keystore> {
    static KS: OnceLock<Mutex<Keystore>> = OnceLock::new();
    KS.get_or_init(|| {
        let dir = tempfile_dir("import");
        Mutex::new(sample_keystore(&dir).expect("a keystore in the temporary directory"))
    })
}
