//! The store's one handle on its keys, whichever KMS serves them.
//!
//! A store always has its embedded keystore (it holds the store's own keys,
//! such as the image digest key); its data keys come from that keystore or
//! from KMIP servers, chosen by the config. Everything above the store asks
//! this handle: the data paths for the [`KmsClient`] (with the one retry
//! policy), the operator commands for listings that read the same whatever
//! the backend, and key changes through [`Keys::admin`], which names the
//! KMIP servers when the keys are not kmsfs's to change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::kmip::{Answer, KmipKms, KmsBackend, ServerStatus};
use crate::kms::{EmbeddedKms, KeyState, KmsClient, KmsError, Retrying};

/// The keys of one open store.
pub struct Keys {
    keystore: Arc<EmbeddedKms>,
    client: Arc<dyn KmsClient>,
    kmip: Option<Arc<KmipKms>>,
    keystore_dir: PathBuf,
}

/// One key as `kms listkeys` shows it, from either backend. Fields a
/// backend does not know are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub group: String,
    pub name: String,
    pub tag: String,
    pub state: KeyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// The KMIP unique identifier and the time of its last state change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// One key group as `kms listkgs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub name: String,
    pub keys: usize,
    pub active_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// Which KMS serves the store's data keys, and how it answered just now.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum KmsStatus {
    Embedded {
        keystore: PathBuf,
    },
    Kmip {
        servers: Vec<ServerStatus>,
        last_answer: Option<Answer>,
    },
}

impl Keys {
    /// The handle for `backend`, over the store's opened keystore.
    pub(super) fn new(
        keystore: Arc<EmbeddedKms>,
        backend: &KmsBackend,
        timeout: Duration,
        keystore_dir: PathBuf,
    ) -> Self {
        let kmip = match backend {
            KmsBackend::Embedded => None,
            KmsBackend::Kmip(k) => {
                let kmip = Arc::new(KmipKms::new(k, timeout));
                kmip.start_sweeper();
                Some(kmip)
            }
        };
        let client: Arc<dyn KmsClient> = match &kmip {
            Some(k) => k.clone(),
            None => Arc::new(Retrying::new(keystore.clone(), timeout)),
        };
        Self {
            keystore,
            client,
            kmip,
            keystore_dir,
        }
    }

    /// The client every data path uses (keys by tag, wrap, unwrap).
    pub fn client(&self) -> &Arc<dyn KmsClient> {
        &self.client
    }

    /// The store's own embedded keystore, whatever serves the data keys:
    /// the store's internal keys live there.
    pub fn keystore(&self) -> &EmbeddedKms {
        &self.keystore
    }

    /// The keystore to change keys in, or why kmsfs may not: a KMIP
    /// store's keys are created and retired with the server's own tools.
    pub fn admin(&self) -> Result<&EmbeddedKms, KmsError> {
        match &self.kmip {
            None => Ok(&self.keystore),
            Some(k) => Err(KmsError::ManagedByKmip(k.addresses().join(", "))),
        }
    }

    /// Whether KMIP servers serve the data keys.
    pub fn is_kmip(&self) -> bool {
        self.kmip.is_some()
    }

    /// The keys of `group` (or all), as the backend lists them.
    pub fn list_keys(&self, group: Option<&str>) -> Result<Vec<KeyRow>, KmsError> {
        let Some(kmip) = &self.kmip else {
            let keys = self.keystore.read(|ks| ks.list_keys(group))?;
            return Ok(keys
                .into_iter()
                .map(|k| KeyRow {
                    group: k.group,
                    name: k.name,
                    tag: k.tag,
                    state: k.state,
                    created: Some(k.created),
                    modified: Some(k.modified),
                    description: Some(k.description),
                    origin: Some(k.origin),
                    uid: None,
                    since: None,
                })
                .collect());
        };
        Ok(kmip
            .list(group)?
            .into_iter()
            .map(|k| KeyRow {
                group: k.group,
                name: k.name,
                tag: k.tag,
                state: k.state,
                created: None,
                modified: None,
                description: None,
                origin: None,
                uid: Some(k.uid),
                since: Some(k.since),
            })
            .collect())
    }

    /// The key groups; for a KMIP store, the groups its keys name (the
    /// newest active key's tag is the group's).
    pub fn list_groups(&self) -> Result<Vec<GroupRow>, KmsError> {
        if self.kmip.is_none() {
            let groups = self.keystore.read(|ks| ks.list_groups());
            return Ok(groups
                .into_iter()
                .map(|g| GroupRow {
                    name: g.name,
                    keys: g.keys,
                    active_tag: g.active_tag,
                    description: Some(g.description),
                    created: Some(g.created),
                })
                .collect());
        }
        let mut groups: Vec<GroupRow> = Vec::new();
        for k in self
            .list_keys(None)?
            .into_iter()
            .filter(|k| !k.group.is_empty())
        {
            if groups.last().is_none_or(|g| g.name != k.group) {
                groups.push(GroupRow {
                    name: k.group.clone(),
                    keys: 0,
                    active_tag: None,
                    description: None,
                    created: None,
                });
            }
            let g = groups.last_mut().expect("pushed");
            g.keys += 1;
            if k.state == KeyState::Active {
                g.active_tag = Some(k.tag);
            }
        }
        Ok(groups)
    }

    /// Asks the backend now (each KMIP server is probed).
    pub fn status(&self) -> KmsStatus {
        match &self.kmip {
            None => KmsStatus::Embedded {
                keystore: self.keystore_dir.clone(),
            },
            Some(k) => KmsStatus::Kmip {
                servers: k.probe(),
                last_answer: k.last_answer(),
            },
        }
    }

    /// Which backend answers, in words.
    pub fn describe(&self) -> String {
        self.client.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmip::{KmipConfig, KmipServer};
    use crate::kms::KmsError;

    #[test]
    fn an_embedded_store_lists_and_changes_its_keys_through_one_handle() {
        let (_t, s) = crate::testing::store();
        let groups = s.keys.list_groups().unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, "KG");
        assert_eq!(groups[0].keys, 1);
        let keys = s.keys.list_keys(Some("KG")).unwrap();
        assert_eq!(keys[0].state, KeyState::Active);
        assert_eq!(groups[0].active_tag.as_deref(), Some(keys[0].tag.as_str()));
        assert!(keys[0].uid.is_none() && keys[0].created.is_some());
        s.keys
            .admin()
            .unwrap()
            .write(|ks| ks.create_group("G2", ""))
            .unwrap();
        assert_eq!(s.keys.list_groups().unwrap().len(), 2);
        assert!(matches!(s.keys.status(), KmsStatus::Embedded { .. }));
    }

    #[test]
    fn a_kmip_store_refuses_key_changes_naming_its_servers() {
        let dead = KmipServer {
            address: "127.0.0.1:9".into(),
            priority: 1,
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            server_name: None,
        };
        let (_t, s) = crate::testing::store_with(|c| {
            c.kms = KmsBackend::Kmip(KmipConfig::new(vec![dead]));
            c.kms_timeout_secs = 1;
        });
        assert!(s.keys.is_kmip());
        let e = s
            .keys
            .admin()
            .err()
            .expect("a KMIP store's keys are not ours");
        assert!(matches!(&e, KmsError::ManagedByKmip(a) if a == "127.0.0.1:9"));
        assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
        match s.keys.status() {
            KmsStatus::Kmip { servers, .. } => {
                assert_eq!(servers.len(), 1);
                assert!(!servers[0].ok, "nothing listens on port 9");
            }
            other => panic!("{other:?}"),
        }
        // Listings ask the server: a dead one is an error, not an empty list.
        let e = s.keys.list_keys(None).expect_err("no server answers");
        assert!(matches!(e, KmsError::Unreachable { .. }), "{e}");
    }
}
