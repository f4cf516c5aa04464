//! Operations on key groups and keys, enforcing the KMS rules: legal state
//! transitions, exactly one active key per group, unique tags, and no
//! deletion or retirement of a key that something in the store uses.

use super::model::{GroupRecord, KeyOrigin, KeyRecord, check_name, check_tag, new_tag, now};
use super::{GroupInfo, KeyInfo, KeyState, Keystore, KmsError};
use crate::crypto::{self, PASSPHRASE_KEY_PARAMS, SecretKey};

/// Parameters of `createkey`.
pub struct NewKey<'a> {
    pub group: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    /// Derive from this pass phrase instead of the random source.
    pub passphrase: Option<&'a [u8]>,
    pub activate: bool,
}

impl Keystore {
    fn group_index(&self, name: &str) -> Result<usize, KmsError> {
        self.body
            .groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| KmsError::NoSuchGroup(name.into()))
    }

    fn key_index(&self, group: &str, name: &str) -> Result<usize, KmsError> {
        self.group_index(group)?;
        self.body
            .keys
            .iter()
            .position(|k| k.group == group && k.name == name)
            .ok_or_else(|| KmsError::NoSuchKey {
                group: group.into(),
                name: name.into(),
            })
    }

    pub(super) fn record_by_tag(&self, tag: &str) -> Option<&KeyRecord> {
        self.body.keys.iter().find(|k| k.tag == tag)
    }

    /// Applies a change and saves it, all or nothing: if the change or
    /// the save fails, the keystore in memory is put back as it was, so
    /// the daemon never runs on a state that is not on disk.
    pub(super) fn transact<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let before = self.body.clone();
        let v = match change(self) {
            Ok(v) => v,
            Err(e) => {
                self.body = before;
                return Err(e);
            }
        };
        if let Err(e) = self.save() {
            self.body = before;
            // A save can fail after its rename (the directory fsync): the
            // change may be on disk. Write the old state back so a restart
            // finds what the daemon runs on and the operator was told.
            if let Err(again) = self.save() {
                tracing::error!(error = %again, first = %e, "keystore not put back after a failed save");
                return Err(KmsError::SaveUnsure {
                    first: e.to_string(),
                    again: again.to_string(),
                });
            }
            return Err(e);
        }
        Ok(v)
    }

    /// Creates an empty key group.
    pub fn create_group(&mut self, name: &str, description: &str) -> Result<(), KmsError> {
        check_name(name)?;
        if self.group_index(name).is_ok() {
            return Err(KmsError::GroupExists(name.into()));
        }
        self.transact(|ks| {
            ks.body.groups.push(GroupRecord {
                name: name.into(),
                description: description.into(),
                created: now(),
            });
            Ok(())
        })
    }

    /// Deletes a key group that holds no keys.
    pub fn delete_group(&mut self, name: &str) -> Result<(), KmsError> {
        let i = self.group_index(name)?;
        let keys = self.body.keys.iter().filter(|k| k.group == name).count();
        if keys > 0 {
            return Err(KmsError::GroupNotEmpty {
                group: name.into(),
                keys,
            });
        }
        self.transact(|ks| {
            ks.body.groups.remove(i);
            Ok(())
        })
    }

    /// Every group with its key count and active tag.
    pub fn list_groups(&self) -> Vec<GroupInfo> {
        self.body
            .groups
            .iter()
            .map(|g| GroupInfo {
                name: g.name.clone(),
                description: g.description.clone(),
                created: g.created,
                keys: self.body.keys.iter().filter(|k| k.group == g.name).count(),
                active_tag: self.active_record(&g.name).map(|k| k.tag.clone()),
            })
            .collect()
    }

    /// Keys, of one group or all; never key bytes.
    pub fn list_keys(&self, group: Option<&str>) -> Result<Vec<KeyInfo>, KmsError> {
        if let Some(g) = group {
            self.group_index(g)?;
        }
        Ok(self
            .body
            .keys
            .iter()
            .filter(|k| group.is_none_or(|g| k.group == g))
            .map(KeyInfo::from)
            .collect())
    }

    fn active_record(&self, group: &str) -> Option<&KeyRecord> {
        self.body
            .keys
            .iter()
            .find(|k| k.group == group && k.state == KeyState::Active)
    }

    /// Creates a key; returns its tag.
    pub fn create_key(&mut self, new: NewKey<'_>) -> Result<String, KmsError> {
        check_name(new.name)?;
        self.group_index(new.group)?;
        if self.key_index(new.group, new.name).is_ok() {
            return Err(KmsError::KeyExists {
                group: new.group.into(),
                name: new.name.into(),
            });
        }
        let tag = new_tag()?;
        let (key, origin) = match new.passphrase {
            Some(p) => (
                crypto::passphrase_key(p, &tag, PASSPHRASE_KEY_PARAMS)?,
                KeyOrigin::Passphrase(PASSPHRASE_KEY_PARAMS),
            ),
            None => (SecretKey::random()?, KeyOrigin::Random),
        };
        self.transact(|ks| {
            ks.insert_record(new.group, new.name, new.description, &tag, &key, origin)?;
            if new.activate {
                ks.set_state_at(ks.body.keys.len() - 1, KeyState::Active, true)?;
            }
            Ok(())
        })?;
        Ok(tag)
    }

    fn insert_record(
        &mut self,
        group: &str,
        name: &str,
        description: &str,
        tag: &str,
        key: &SecretKey,
        origin: KeyOrigin,
    ) -> Result<(), KmsError> {
        if self.record_by_tag(tag).is_some() {
            return Err(KmsError::TagExists(tag.into()));
        }
        let t = now();
        let sealed = self.seal_for(tag, key)?;
        self.body.keys.push(KeyRecord {
            group: group.into(),
            name: name.into(),
            tag: tag.into(),
            state: KeyState::Prelive,
            description: description.into(),
            created: t,
            modified: t,
            origin,
            kcv: hex::encode(crypto::key_check_value(key)),
            sealed,
        });
        Ok(())
    }

    /// Recreates a pass-phrase key from its pass phrase and tag (DR).
    /// `expected_kcv` is a check value known from media or a catalog, if any;
    /// a mismatch means the wrong pass phrase.
    pub fn recover_key(
        &mut self,
        group: &str,
        name: &str,
        tag: &str,
        pass: &[u8],
        expected_kcv: Option<&str>,
    ) -> Result<(), KmsError> {
        check_name(name)?;
        check_tag(tag)?;
        self.group_index(group)?;
        let key = crypto::passphrase_key(pass, tag, PASSPHRASE_KEY_PARAMS)?;
        let kcv = hex::encode(crypto::key_check_value(&key));
        let known = expected_kcv
            .map(str::to_string)
            .or_else(|| self.record_by_tag(tag).map(|r| r.kcv.clone()))
            .or_else(|| {
                self.body
                    .tombstones
                    .iter()
                    .find(|t| t.tag == tag)
                    .map(|t| t.kcv.clone())
            });
        if known.is_some_and(|k| k != kcv) {
            return Err(KmsError::PassphraseMismatch { tag: tag.into() });
        }
        if self.key_index(group, name).is_ok() {
            return Err(KmsError::KeyExists {
                group: group.into(),
                name: name.into(),
            });
        }
        self.transact(|ks| {
            ks.insert_record(
                group,
                name,
                "recovered from pass phrase",
                tag,
                &key,
                KeyOrigin::Passphrase(PASSPHRASE_KEY_PARAMS),
            )?;
            // A recovered key decrypts old data; it does not take over encryption.
            let i = ks.body.keys.len() - 1;
            ks.body.keys[i].state = KeyState::Inactive;
            Ok(())
        })
    }

    /// Changes state, name or description of a key.
    pub fn modify_key(
        &mut self,
        group: &str,
        name: &str,
        state: Option<KeyState>,
        rename: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), KmsError> {
        let i = self.key_index(group, name)?;
        if let Some(new) = rename {
            check_name(new)?;
            if new != name && self.key_index(group, new).is_ok() {
                return Err(KmsError::KeyExists {
                    group: group.into(),
                    name: new.into(),
                });
            }
        }
        self.transact(|ks| {
            if let Some(s) = state {
                ks.set_state_at(i, s, true)?;
            }
            let k = &mut ks.body.keys[i];
            if let Some(new) = rename {
                k.name = new.into();
            }
            if let Some(d) = description {
                k.description = d.into();
            }
            k.modified = now();
            Ok(())
        })
    }

    /// Applies one legal transition; activation demotes the previous active key.
    /// Sets a key's state even though an LSU pins it (`modifykey --force`):
    /// for a compromised root key, at the price of the LSU's data going
    /// offline (ENOKEY) until the key is made usable again.
    pub fn force_state(&mut self, group: &str, name: &str, to: KeyState) -> Result<(), KmsError> {
        let i = self.key_index(group, name)?;
        let tag = self.body.keys[i].tag.clone();
        let locked = self.users.compliance_locked(&tag);
        if !locked.is_empty() && to != KeyState::Active {
            return Err(KmsError::InUse {
                tag,
                users: locked.join(", "),
                hint: "compliance retention locks never let a key they need go,                        --force or not (kmsfs worm show)"
                    .into(),
            });
        }
        let pinned = self.users.pinning(&self.body.keys[i].tag);
        self.transact(|ks| {
            ks.set_state_at(i, to, false)?;
            ks.body.keys[i].modified = now();
            Ok(())
        })?;
        if !pinned.is_empty() {
            tracing::warn!(group, name, state = %to, users = %pinned.join(", "), "key state forced although in use");
        }
        Ok(())
    }

    fn set_state_at(&mut self, i: usize, to: KeyState, check_pins: bool) -> Result<(), KmsError> {
        let k = &self.body.keys[i];
        if k.state == to {
            return Ok(());
        }
        if !k.state.can_become(to) {
            return Err(KmsError::BadTransition {
                name: k.name.clone(),
                from: k.state,
                to,
            });
        }
        if check_pins && matches!(to, KeyState::Deprecated | KeyState::Terminated) {
            self.refuse_if_pinned(&k.tag.clone())?;
        }
        if to == KeyState::Active {
            let group = k.group.clone();
            for other in self
                .body
                .keys
                .iter_mut()
                .filter(|o| o.group == group && o.state == KeyState::Active)
            {
                other.state = KeyState::Inactive;
                other.modified = now();
            }
        }
        let k = &mut self.body.keys[i];
        k.state = to;
        k.modified = now();
        Ok(())
    }

    fn refuse_if_pinned(&self, tag: &str) -> Result<(), KmsError> {
        let users = self.users.pinning(tag);
        if users.is_empty() {
            Ok(())
        } else {
            let rewrap = rewrap_hint(&users);
            Err(KmsError::InUse {
                tag: tag.into(),
                users: users.join(", "),
                hint: format!(
                    "activate a new key in its group and run {rewrap}, \
                     or give --force for a compromised key (the data is unreadable until the key is usable again)"
                ),
            })
        }
    }

    /// Deletes a prelive or terminated key that nothing uses.
    pub fn delete_key(&mut self, group: &str, name: &str) -> Result<(), KmsError> {
        let i = self.key_index(group, name)?;
        let k = &self.body.keys[i];
        if !k.state.can_delete() {
            return Err(KmsError::NotDeletable {
                name: name.into(),
                state: k.state,
            });
        }
        let mut users = self.users.using(&k.tag);
        users.extend(self.users.pinning(&k.tag));
        if !users.is_empty() {
            let rewrap = rewrap_hint(&users);
            return Err(KmsError::InUse {
                tag: k.tag.clone(),
                users: users.join(", "),
                hint: format!("activate a new key in its group and run {rewrap} first"),
            });
        }
        self.transact(|ks| {
            let k = ks.body.keys.remove(i);
            // What recoverkey needs to refuse a wrong pass phrase later.
            ks.body.tombstones.retain(|t| t.tag != k.tag);
            ks.body.tombstones.push(super::model::Tombstone {
                group: k.group,
                name: k.name,
                tag: k.tag,
                kcv: k.kcv,
                deleted: now(),
            });
            Ok(())
        })
    }

    /// The active key of a group, for encryption.
    pub fn active_key(&self, group: &str) -> Result<(String, SecretKey), KmsError> {
        self.group_index(group)?;
        let rec = self
            .active_record(group)
            .ok_or_else(|| KmsError::NoActiveKey(group.into()))?;
        Ok((rec.tag.clone(), self.unseal(rec)?))
    }

    /// A key by tag, for decryption: it must be active or inactive.
    pub fn key_for_decrypt(&self, tag: &str) -> Result<SecretKey, KmsError> {
        let rec = self
            .record_by_tag(tag)
            .ok_or_else(|| KmsError::NoSuchTag(tag.into()))?;
        if !rec.state.can_decrypt() {
            return Err(KmsError::KeyUnusable {
                tag: tag.into(),
                state: rec.state,
                purpose: "decrypt",
            });
        }
        self.unseal(rec)
    }

    /// The state of the key with this tag, if the keystore has it.
    pub fn state_of(&self, tag: &str) -> Option<KeyState> {
        self.record_by_tag(tag).map(|r| r.state)
    }

    /// The key check value of the key with this tag, if known.
    pub fn kcv_of(&self, tag: &str) -> Option<String> {
        self.record_by_tag(tag).map(|r| r.kcv.clone())
    }
}

/// The commands that move the users named like "LSU demo" off a root key.
fn rewrap_hint(users: &[String]) -> String {
    let cmds: Vec<String> = users
        .iter()
        .filter_map(|u| u.strip_prefix("LSU "))
        .map(|l| format!("`kmsfs lsu rewrap {l}`"))
        .collect();
    if cmds.is_empty() {
        "what uses it to another key".into()
    } else {
        cmds.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{HmkSource, KeyUsers};

    fn store() -> (tempfile::TempDir, Keystore) {
        let d = tempfile::tempdir().unwrap();
        let ks = Keystore::create(d.path(), HmkSource::File(d.path().join("hmk.key"))).unwrap();
        (d, ks)
    }

    fn key<'a>(group: &'a str, name: &'a str, activate: bool) -> NewKey<'a> {
        NewKey {
            group,
            name,
            description: "",
            passphrase: None,
            activate,
        }
    }

    /// A mistyped tag made a "recovered" key no medium would ever name;
    /// it is refused now, naming the tag.
    #[test]
    fn recovering_a_key_under_a_tag_kmsfs_never_makes_is_refused() {
        let (_d, mut ks) = store();
        ks.create_group("G", "").unwrap();
        for tag in [
            "zz",
            "0123456789ABCDEF0123456789ABCDEF",
            "../0123456789abcdef0123456789ab",
        ] {
            let err = ks.recover_key("G", "pp", tag, b"pass", None).unwrap_err();
            assert!(
                matches!(err, KmsError::BadTag(ref t) if t == tag),
                "{tag}: {err}"
            );
        }
        assert!(ks.list_keys(None).unwrap().is_empty());
    }

    #[test]
    fn exactly_one_active_key_per_group() {
        let (_d, mut ks) = store();
        ks.create_group("G", "").unwrap();
        let t1 = ks.create_key(key("G", "k1", true)).unwrap();
        let t2 = ks.create_key(key("G", "k2", true)).unwrap();
        assert_eq!(ks.state_of(&t1), Some(KeyState::Inactive));
        assert_eq!(ks.state_of(&t2), Some(KeyState::Active));
        assert_eq!(ks.active_key("G").unwrap().0, t2);
        ks.modify_key("G", "k1", Some(KeyState::Active), None, None)
            .unwrap();
        assert_eq!(ks.state_of(&t2), Some(KeyState::Inactive));
        let actives = ks
            .list_keys(Some("G"))
            .unwrap()
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .count();
        assert_eq!(actives, 1);
    }

    #[test]
    fn illegal_transitions_and_deletions_are_refused() {
        let (_d, mut ks) = store();
        ks.create_group("G", "").unwrap();
        ks.create_key(key("G", "k", true)).unwrap();
        let e = ks
            .modify_key("G", "k", Some(KeyState::Terminated), None, None)
            .unwrap_err();
        assert!(matches!(e, KmsError::BadTransition { .. }), "{e}");
        assert!(matches!(
            ks.delete_key("G", "k"),
            Err(KmsError::NotDeletable { .. })
        ));
        for s in [
            KeyState::Inactive,
            KeyState::Deprecated,
            KeyState::Terminated,
        ] {
            ks.modify_key("G", "k", Some(s), None, None).unwrap();
        }
        assert!(matches!(
            ks.modify_key("G", "k", Some(KeyState::Prelive), None, None),
            Err(KmsError::BadTransition { .. })
        ));
        ks.delete_key("G", "k").unwrap();
        ks.create_key(key("G", "p", false)).unwrap();
        ks.delete_key("G", "p").unwrap();
    }

    #[test]
    fn duplicates_unknown_groups_and_bad_names() {
        let (_d, mut ks) = store();
        assert!(matches!(
            ks.create_key(key("nope", "k", false)),
            Err(KmsError::NoSuchGroup(_))
        ));
        ks.create_group("G", "").unwrap();
        assert!(matches!(
            ks.create_group("G", ""),
            Err(KmsError::GroupExists(_))
        ));
        assert!(matches!(
            ks.create_group("a/b", ""),
            Err(KmsError::BadName(_))
        ));
        ks.create_key(key("G", "k", false)).unwrap();
        assert!(matches!(
            ks.create_key(key("G", "k", false)),
            Err(KmsError::KeyExists { .. })
        ));
        assert!(matches!(
            ks.delete_group("G"),
            Err(KmsError::GroupNotEmpty { .. })
        ));
        assert!(matches!(ks.active_key("G"), Err(KmsError::NoActiveKey(_))));
    }

    #[test]
    fn decrypt_needs_active_or_inactive() {
        let (_d, mut ks) = store();
        ks.create_group("G", "").unwrap();
        let t = ks.create_key(key("G", "k", true)).unwrap();
        ks.key_for_decrypt(&t).unwrap();
        ks.modify_key("G", "k", Some(KeyState::Inactive), None, None)
            .unwrap();
        ks.key_for_decrypt(&t).unwrap();
        ks.modify_key("G", "k", Some(KeyState::Deprecated), None, None)
            .unwrap();
        assert!(matches!(
            ks.key_for_decrypt(&t),
            Err(KmsError::KeyUnusable { .. })
        ));
        assert!(matches!(
            ks.key_for_decrypt("ffff"),
            Err(KmsError::NoSuchTag(_))
        ));
    }

    struct Pin(String);
    impl KeyUsers for Pin {
        fn using(&self, tag: &str) -> Vec<String> {
            if tag == self.0 {
                vec!["image ENCR_G/a.tar".into()]
            } else {
                vec![]
            }
        }
        fn pinning(&self, tag: &str) -> Vec<String> {
            if tag == self.0 {
                vec!["LSU lsu1".into()]
            } else {
                vec![]
            }
        }
        fn compliance_locked(&self, _: &str) -> Vec<String> {
            vec![]
        }
    }

    #[test]
    fn keys_in_use_cannot_be_retired_or_deleted_and_the_refusal_names_the_user() {
        let (_d, mut ks) = store();
        ks.create_group("G", "").unwrap();
        let t = ks.create_key(key("G", "k", true)).unwrap();
        ks.set_users(Box::new(Pin(t.clone())));
        ks.modify_key("G", "k", Some(KeyState::Inactive), None, None)
            .unwrap();
        let e = ks
            .modify_key("G", "k", Some(KeyState::Deprecated), None, None)
            .unwrap_err();
        assert!(e.to_string().contains("LSU lsu1"), "{e}");
    }

    #[test]
    fn recover_key_recreates_bits_and_detects_wrong_pass_phrase() {
        let (_d, mut ks) = store();
        ks.create_group("G", "").unwrap();
        let nk = NewKey {
            group: "G",
            name: "pp",
            description: "",
            passphrase: Some(b"secret words"),
            activate: true,
        };
        let tag = ks.create_key(nk).unwrap();
        let kcv = ks.kcv_of(&tag).unwrap();
        let orig = ks.active_key("G").unwrap().1;
        let d2 = tempfile::tempdir().unwrap();
        let mut other = Keystore::create(d2.path(), HmkSource::File(d2.path().join("h"))).unwrap();
        other.create_group("G", "").unwrap();
        let e = other
            .recover_key("G", "pp", &tag, b"wrong words", Some(&kcv))
            .unwrap_err();
        assert!(matches!(e, KmsError::PassphraseMismatch { .. }), "{e}");
        other
            .recover_key("G", "pp", &tag, b"secret words", Some(&kcv))
            .unwrap();
        assert!(other.key_for_decrypt(&tag).unwrap().ct_eq(&orig));
    }
}

#[cfg(test)]
mod save_failure_tests {
    use super::*;
    use crate::kms::HmkSource;

    /// Every change of the keystore is all-or-nothing: when the save
    /// fails, the keystore in memory is the one on disk.
    #[test]
    fn a_failed_save_leaves_the_old_keystore_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let mut ks = Keystore::create(d.path(), HmkSource::File(d.path().join("h"))).unwrap();
        ks.create_group("G", "").unwrap();
        let pp = NewKey {
            group: "G",
            name: "pp",
            description: "",
            passphrase: Some(b"words"),
            activate: true,
        };
        let tag = ks.create_key(pp).unwrap();
        ks.create_key(NewKey {
            group: "G",
            name: "spare",
            description: "",
            passphrase: None,
            activate: false,
        })
        .unwrap();
        ks.create_group("E", "").unwrap();
        let before = format!("{:?}", ks.list_keys(None).unwrap());
        let groups = ks.list_groups().len();
        ks.fail_saves_for_test();
        type Change<'a> = Box<dyn Fn(&mut Keystore) -> Result<(), KmsError> + 'a>;
        let changes: Vec<Change<'_>> = vec![
            Box::new(|k| k.create_group("H", "")),
            Box::new(|k| k.delete_group("E")),
            Box::new(|k| {
                k.create_key(NewKey {
                    group: "G",
                    name: "new",
                    description: "",
                    passphrase: None,
                    activate: true,
                })
                .map(drop)
            }),
            Box::new(|k| k.modify_key("G", "pp", Some(KeyState::Inactive), Some("x"), None)),
            Box::new(|k| k.force_state("G", "pp", KeyState::Inactive)),
            Box::new(|k| k.delete_key("G", "spare")),
            Box::new(|k| k.recover_key("G", "again", &tag, b"words", None)),
        ];
        for (i, change) in changes.iter().enumerate() {
            assert!(
                change(&mut ks).is_err(),
                "change {i} reports the failed save"
            );
            assert_eq!(
                format!("{:?}", ks.list_keys(None).unwrap()),
                before,
                "change {i} left nothing in memory"
            );
            assert_eq!(ks.list_groups().len(), groups, "change {i}");
        }
        assert_eq!(ks.active_key("G").unwrap().0, tag);
    }
}
