//! Export and import of key groups in a pass-phrase protected container,
//! to move keys to a DR site. Import is atomic (one keystore write), skips
//! keys whose tag exists, and reports what it did.

use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::model::{GroupRecord, KeyOrigin, KeyRecord, now};
use super::{KeyState, Keystore, KmsError};
use crate::crypto::{self, Argon2Params, PASSPHRASE_KEY_PARAMS, SecretKey};
use crate::util::atomic::write_atomic;
use crate::util::codec;

const MAGIC: &[u8; 8] = b"KMSFSKEX";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 40;
const INFO: &[u8] = crypto::labels::KEY_EXPORT;

/// One exported key: its record and its bits (only ever inside the sealed container).
#[derive(Serialize, Deserialize)]
struct ExportKey {
    group: String,
    name: String,
    tag: String,
    state: KeyState,
    description: String,
    created: u64,
    origin: KeyOrigin,
    secret: Vec<u8>,
}

impl Drop for ExportKey {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// The plaintext of a container.
#[derive(Serialize, Deserialize)]
pub struct ExportBody {
    groups: Vec<GroupRecord>,
    keys: Vec<ExportKey>,
}

/// What an import did (or, with preview, would do).
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub groups_created: Vec<String>,
    pub imported: Vec<String>,
    pub skipped_existing_tag: Vec<String>,
    pub made_inactive: Vec<String>,
    pub preview: bool,
}

fn header(p: Argon2Params, salt: &[u8; 16]) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&[0, 0]);
    for v in [p.m_kib, p.t, p.p] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(salt);
    h
}

/// The bincode of `v` in a wiped-on-drop buffer allocated once at its final
/// size: a buffer that grew would leave copies of key bytes in freed heap.
pub(super) fn encode_exact<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let err = |e: bincode::error::EncodeError| KmsError::Container(e.to_string());
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(v, &mut size, codec::config()).map_err(err)?;
    let mut buf = Zeroizing::new(vec![0u8; size.bytes_written]);
    bincode::serde::encode_into_slice(v, &mut buf[..], codec::config()).map_err(err)?;
    Ok(buf)
}

/// Writes the given groups (all if empty) to a container at `out`.
pub fn export_container(
    ks: &Keystore,
    groups: &[String],
    pass: &[u8],
    out: &Path,
    replace: bool,
) -> Result<usize, KmsError> {
    for g in groups {
        if !ks.body.groups.iter().any(|r| &r.name == g) {
            return Err(KmsError::NoSuchGroup(g.clone()));
        }
    }
    let wanted = |g: &str| groups.is_empty() || groups.iter().any(|w| w == g);
    let mut keys = Vec::new();
    for r in ks.body.keys.iter().filter(|r| wanted(&r.group)) {
        let key = ks.unseal(r)?;
        keys.push(ExportKey {
            group: r.group.clone(),
            name: r.name.clone(),
            tag: r.tag.clone(),
            state: r.state,
            description: r.description.clone(),
            created: r.created,
            origin: r.origin,
            secret: key.expose_secret().to_vec(),
        });
    }
    let n = keys.len();
    let body = ExportBody {
        groups: ks
            .body
            .groups
            .iter()
            .filter(|g| wanted(&g.name))
            .cloned()
            .collect(),
        keys,
    };
    let plain = encode_exact(&body)?;
    let salt = crypto::random_array::<16>()?;
    let bytes = seal_container(&plain, pass, PASSPHRASE_KEY_PARAMS, &salt)?;
    if replace {
        write_atomic(out, &bytes, 0o600).map_err(|e| KmsError::io(out, e))?;
    } else {
        crate::util::atomic::write_new(out, &bytes, 0o600).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KmsError::io(
                    out,
                    std::io::Error::new(e.kind(), "the file exists (give --force to replace it)"),
                )
            } else {
                KmsError::io(out, e)
            }
        })?;
    }
    Ok(n)
}

/// A container of a body's bincode `plain`: header (costs and salt), then
/// the body sealed under the pass-phrase key with the header as AAD.
pub(super) fn seal_container(
    plain: &[u8],
    pass: &[u8],
    params: Argon2Params,
    salt: &[u8; 16],
) -> Result<Vec<u8>, KmsError> {
    let hdr = header(params, salt);
    let key = crypto::passphrase_secret(pass, salt, params, INFO)?;
    let mut bytes = hdr.clone();
    bytes.extend_from_slice(&crypto::seal(&key, &hdr, plain)?);
    Ok(bytes)
}

/// Opens a container. A wrong pass phrase and a damaged file both fail
/// authentication; the message says both are possible.
pub fn read_container(path: &Path, pass: &[u8]) -> Result<ExportBody, KmsError> {
    let bytes = std::fs::read(path).map_err(|e| KmsError::io(path, e))?;
    open_container(&bytes, path, pass)
}

/// The Argon2 costs a container's header asks for, checked (within
/// [`Argon2Params::MAX`]) before any memory is taken.
pub(super) fn container_params(bytes: &[u8], path: &Path) -> Result<Argon2Params, KmsError> {
    let bad = |why: &str| KmsError::Container(format!("{}: {why}", path.display()));
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(bad("not a kmsfs key export container"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(KmsError::UnknownVersion {
            path: path.display().to_string(),
            version,
            supported: VERSION,
        });
    }
    let u = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let params = Argon2Params {
        m_kib: u(12),
        t: u(16),
        p: u(20),
    };
    params.check().map_err(|e| bad(&e))?;
    Ok(params)
}

/// Opens the bytes of a container read from `path`.
pub(super) fn open_container(
    bytes: &[u8],
    path: &Path,
    pass: &[u8],
) -> Result<ExportBody, KmsError> {
    let bad = |why: &str| KmsError::Container(format!("{}: {why}", path.display()));
    let params = container_params(bytes, path)?;
    let key = crypto::passphrase_secret(pass, &bytes[24..40], params, INFO)?;
    let plain = crypto::open(&key, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
        .map_err(|_| bad("wrong pass phrase, or the container is damaged"))?;
    codec::decode(&plain).map_err(|e| bad(&e.to_string()))
}

impl Keystore {
    /// Imports a container's keys. Without `preserve_kgname`, a group whose
    /// name exists here is imported as `NAME-imported` (never merged into a
    /// live group); with it, keys join the same-named group. An imported
    /// active key becomes inactive where the group already has an active key.
    pub fn import_keys(
        &mut self,
        body: &ExportBody,
        preserve_kgname: bool,
        preview: bool,
    ) -> Result<ImportReport, KmsError> {
        let mut report = ImportReport {
            preview,
            ..Default::default()
        };
        if preview {
            let saved = self.body.clone();
            let result = self.apply_import(body, preserve_kgname, &mut report);
            self.body = saved;
            return result.map(|()| report);
        }
        self.transact(|ks| ks.apply_import(body, preserve_kgname, &mut report))?;
        Ok(report)
    }

    fn apply_import(
        &mut self,
        body: &ExportBody,
        preserve: bool,
        report: &mut ImportReport,
    ) -> Result<(), KmsError> {
        check_body(body)?;
        // Where each exported group goes; a group is made only when a key
        // is imported into it (never an empty one).
        let mut names = std::collections::HashMap::new();
        for g in &body.groups {
            let exists = self.body.groups.iter().any(|r| r.name == g.name);
            let target = if exists && !preserve {
                format!("{}-imported", g.name)
            } else {
                g.name.clone()
            };
            names.insert(g.name.clone(), (target, g));
        }
        for k in &body.keys {
            if self.record_by_tag(&k.tag).is_some() {
                report.skipped_existing_tag.push(k.tag.clone());
                continue;
            }
            let group = match names.get(&k.group) {
                Some((target, g)) => {
                    if !self.body.groups.iter().any(|r| &r.name == target) {
                        self.body.groups.push(GroupRecord {
                            name: target.clone(),
                            ..(*g).clone()
                        });
                        report.groups_created.push(target.clone());
                    }
                    target.clone()
                }
                None => k.group.clone(),
            };
            let key = SecretKey::from_slice(&k.secret)
                .ok_or_else(|| KmsError::Container(format!("key {} is not 32 bytes", k.tag)))?;
            let mut state = k.state;
            let has_active = self
                .body
                .keys
                .iter()
                .any(|r| r.group == group && r.state == KeyState::Active);
            if state == KeyState::Active && has_active {
                state = KeyState::Inactive;
                report.made_inactive.push(k.tag.clone());
            }
            let name = if self
                .body
                .keys
                .iter()
                .any(|r| r.group == group && r.name == k.name)
            {
                format!("{}-{}", k.name, k.tag.get(..8).unwrap_or(&k.tag))
            } else {
                k.name.clone()
            };
            self.body.keys.push(KeyRecord {
                group: group.clone(),
                name: name.clone(),
                tag: k.tag.clone(),
                state,
                description: k.description.clone(),
                created: k.created,
                modified: now(),
                origin: k.origin,
                kcv: hex::encode(crypto::key_check_value(&key)),
                sealed: self.seal_for(&k.tag, &key)?,
            });
            report.imported.push(format!("{group}/{name} ({})", k.tag));
        }
        Ok(())
    }
}

/// A container comes from elsewhere: every name must be one kmsfs could
/// have made (its name characters; up to 255 bytes, as an import adds
/// `-imported` or a tag to names), every tag 1-64 letters and digits (32
/// hex digits since kmsfs checks recovered tags; older keystores may hold
/// others), and every key's group in the container, or nothing is imported.
fn check_body(body: &ExportBody) -> Result<(), KmsError> {
    let bad = |what: String| KmsError::Container(format!("the container holds {what}"));
    let name = |kind: &str, n: &str| {
        let ok = !n.is_empty()
            && n.len() <= 255
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        ok.then_some(())
            .ok_or_else(|| bad(format!("a {kind} named {n:?}, not a valid name")))
    };
    for g in &body.groups {
        name("key group", &g.name)?;
    }
    for k in &body.keys {
        name("key", &k.name)?;
        if !body.groups.iter().any(|g| g.name == k.group) {
            return Err(bad(format!(
                "key {:?} of key group {:?}, which it does not hold",
                k.name, k.group
            )));
        }
        let tag_ok =
            (1..=64).contains(&k.tag.len()) && k.tag.bytes().all(|b| b.is_ascii_alphanumeric());
        if !tag_ok {
            return Err(bad(format!(
                "key {:?} with tag {:?}, not a key tag",
                k.name, k.tag
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{HmkSource, NewKey};

    /// Exporting keys leaves no copy of a key's bytes in freed heap (an
    /// encoding buffer that grew by reallocation used to).
    #[test]
    fn export_leaves_no_key_in_freed_heap() {
        let d = tempfile::tempdir().unwrap();
        let mut src = ks(d.path());
        src.create_group("G", "").unwrap();
        for i in 0..8 {
            src.create_key(NewKey {
                group: "G",
                name: &format!("k{i}"),
                description: "some words to make the body longer",
                passphrase: None,
                activate: i == 0,
            })
            .unwrap();
        }
        let tag = src.active_key("G").unwrap().0;
        let key = *src.key_for_decrypt(&tag).unwrap().expose_secret();
        let out = d.path().join("k.kex");
        let hits = crate::testing::heapscan::freed_copies(&key, || {
            export_container(&src, &[], b"pass", &out, true).unwrap();
        });
        assert_eq!(hits, 0, "copies of the key left in freed heap");
    }

    /// Importing a container whose keys are all here already (a second
    /// import, without --preserve_kgname) makes no `-imported` group with
    /// nothing in it, and a preview says so too.
    #[test]
    fn an_import_creates_no_empty_key_groups() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut src, _) = source_with_key(a.path());
        src.create_group("ENCR_Empty", "").unwrap();
        let out = a.path().join("keys.kex");
        export_container(&src, &[], b"dr pass", &out, true).unwrap();
        let body = read_container(&out, b"dr pass").unwrap();
        let mut dst = ks(b.path());
        let first = dst.import_keys(&body, false, false).unwrap();
        assert_eq!(first.groups_created, vec!["ENCR_F".to_string()]);
        for preview in [true, false] {
            let again = dst.import_keys(&body, false, preview).unwrap();
            assert!(
                again.groups_created.is_empty(),
                "{:?}",
                again.groups_created
            );
        }
        let groups: Vec<String> = dst.list_groups().into_iter().map(|g| g.name).collect();
        assert_eq!(groups, vec!["ENCR_F".to_string()]);
    }

    /// A container from elsewhere is not trusted: a key whose tag is not a
    /// tag, whose group or name is not a name kmsfs would have made, or
    /// whose group the container does not hold is refused naming it, and
    /// nothing is imported. A short tag on a key whose name collides used
    /// to panic slicing the tag; it imports now.
    #[test]
    fn an_import_refuses_keys_with_names_or_tags_kmsfs_would_not_make() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, _) = source_with_key(a.path());
        let out = a.path().join("keys.kex");
        export_container(&src, &[], b"p", &out, true).unwrap();
        let mut dst = ks(b.path());
        dst.create_group("ENCR_F", "").unwrap();
        dst.create_key(NewKey {
            group: "ENCR_F",
            name: "k",
            description: "",
            passphrase: None,
            activate: false,
        })
        .unwrap();
        type Spoil = fn(&mut ExportBody);
        let bad: [(&str, Spoil); 5] = [
            ("é", |b| b.keys[0].tag = "é".repeat(16)),
            ("a/b", |b| b.keys[0].tag = "a/b".into()),
            ("../x", |b| b.groups[0].name = "../x".into()),
            ("k\n", |b| b.keys[0].name = "k\n".into()),
            ("no group", |b| b.keys[0].group = "Elsewhere".into()),
        ];
        for (what, spoil) in bad {
            let mut body = read_container(&out, b"p").unwrap();
            spoil(&mut body);
            for preserve in [true, false] {
                let err = dst.import_keys(&body, preserve, false).unwrap_err();
                assert!(matches!(err, KmsError::Container(_)), "{what}: {err}");
            }
            assert_eq!(dst.list_keys(None).unwrap().len(), 1, "{what}");
        }
        let mut body = read_container(&out, b"p").unwrap();
        body.keys[0].tag = "ab".into();
        let r = dst.import_keys(&body, true, false).unwrap();
        assert_eq!(r.imported, vec!["ENCR_F/k-ab (ab)".to_string()]);
    }

    /// Names an import makes (`NAME-imported`, `NAME-TAG8`) may be longer
    /// than a name a user may give; a container holding them imports.
    #[test]
    fn a_container_of_imported_keys_imports_again() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let long = "G".repeat(64);
        let ks_of = |i: usize| {
            let mut k = ks(dirs[i].path());
            k.create_group(&long, "").unwrap();
            k.create_key(NewKey {
                group: &long,
                name: &"k".repeat(64),
                description: "",
                passphrase: None,
                activate: true,
            })
            .unwrap();
            k
        };
        let (src, mut mid) = (ks_of(0), ks_of(1));
        let out = dirs[0].path().join("a.kex");
        export_container(&src, &[], b"p", &out, true).unwrap();
        mid.import_keys(&read_container(&out, b"p").unwrap(), false, false)
            .unwrap();
        let again = dirs[1].path().join("b.kex");
        export_container(&mid, &[], b"p", &again, true).unwrap();
        let mut last = ks_of(2);
        let r = last
            .import_keys(&read_container(&again, b"p").unwrap(), false, false)
            .unwrap();
        assert_eq!(r.imported.len(), 2, "{r:?}");
    }

    /// A keystore in `d` with group ENCR_F and its active key `k`; the tag.
    fn source_with_key(d: &Path) -> (Keystore, String) {
        let mut src = ks(d);
        src.create_group("ENCR_F", "").unwrap();
        let tag = src
            .create_key(NewKey {
                group: "ENCR_F",
                name: "k",
                description: "",
                passphrase: None,
                activate: true,
            })
            .unwrap();
        (src, tag)
    }

    fn ks(d: &Path) -> Keystore {
        Keystore::create(d, HmkSource::File(d.join("h"))).unwrap()
    }

    #[test]
    fn export_import_moves_keys_and_skips_existing_tags() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, tag) = source_with_key(a.path());
        let out = a.path().join("keys.kex");
        assert_eq!(
            export_container(&src, &[], b"dr pass", &out, true).unwrap(),
            1
        );
        assert!(matches!(
            read_container(&out, b"nope"),
            Err(KmsError::Container(_))
        ));
        let body = read_container(&out, b"dr pass").unwrap();
        let mut dst = ks(b.path());
        let preview = dst.import_keys(&body, true, true).unwrap();
        assert_eq!(preview.imported.len(), 1);
        assert!(dst.state_of(&tag).is_none(), "preview changes nothing");
        let r = dst.import_keys(&body, true, false).unwrap();
        assert_eq!(r.groups_created, vec!["ENCR_F".to_string()]);
        assert!(
            dst.key_for_decrypt(&tag)
                .unwrap()
                .ct_eq(&src.key_for_decrypt(&tag).unwrap())
        );
        let again = dst.import_keys(&body, true, false).unwrap();
        assert_eq!(again.skipped_existing_tag, vec![tag]);
        let reopened = Keystore::open(b.path(), HmkSource::File(b.path().join("h"))).unwrap();
        assert_eq!(reopened.list_keys(None).unwrap().len(), 1);
    }
}
