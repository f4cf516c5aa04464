//! The external KMS backend: one or more KMIP servers over mutual TLS,
//! behind the same [`crate::kms::KmsClient`] as the embedded keystore, so
//! tape drives and LSUs use it unchanged.
//!
//! How kmsfs concepts map to KMIP (docs/kmip.md has the full table): a key
//! group is a KMIP Object Group; a key is a Symmetric Key (AES-256) in it;
//! its tag is derived from the KMIP Unique Identifier; states map
//! Pre-Active/Active/Deactivated/Compromised/Destroyed to
//! prelive/active/inactive/deprecated/terminated. Root keys wrapping LSU
//! KEKs never leave the server: wrap and unwrap are KMIP Encrypt/Decrypt.

mod client;
mod conn;
mod msg;
mod ttlv;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{Answer, KmipKms, ServerStatus};

/// One KMIP server as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipServer {
    /// `host:port`.
    pub address: String,
    /// Lower is tried first.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// CA certificate(s) that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// Client certificate chain (PEM); needs extendedKeyUsage clientAuth.
    pub cert: PathBuf,
    /// Client private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Name to check the server certificate against (default: the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn default_priority() -> u32 {
    1
}

/// The KMIP settings of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipConfig {
    pub servers: Vec<KmipServer>,
    /// Seconds a key fetched for a tape drive stays cached (then zeroized).
    #[serde(default = "default_key_cache_secs")]
    pub key_cache_secs: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_io_timeout_ms")]
    pub io_timeout_ms: u64,
}

fn default_key_cache_secs() -> u64 {
    600
}
fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_io_timeout_ms() -> u64 {
    5000
}

impl KmipConfig {
    /// Settings with defaults for these servers.
    pub fn new(servers: Vec<KmipServer>) -> Self {
        Self {
            servers,
            key_cache_secs: default_key_cache_secs(),
            connect_timeout_ms: default_connect_timeout_ms(),
            io_timeout_ms: default_io_timeout_ms(),
        }
    }
}

/// Which KMS serves a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum KmsBackend {
    /// The sealed keystore in `STORE/kms`.
    #[default]
    Embedded,
    /// KMIP servers.
    Kmip(KmipConfig),
}

/// Reads `bytes` as a KMIP server's answer the way the client does: decode
/// the TTLV, check that it re-encodes to the same bytes, take the payload
/// or the refusal, and every field the client looks for in a payload. For
/// the fuzz targets (`fuzz/`); what it returns is how far it got.
pub(crate) fn read_response(bytes: &[u8]) -> Result<usize, String> {
    let item = ttlv::Item::decode(bytes).map_err(|e| e.to_string())?;
    assert_eq!(
        item.encode(),
        bytes,
        "a decoded KMIP message re-encodes to its bytes"
    );
    let payload = msg::payload(&item)
        .map_err(|r| format!("refused: {}", r.map_or_else(String::new, |r| r.message)))?;
    let uids = msg::uids(&payload);
    let attrs = msg::key_attrs(&payload);
    let material = msg::key_material(&payload).map_or(0, <[u8]>::len);
    let data = msg::data(&payload).map_or(0, <[u8]>::len);
    Ok(uids.len() + attrs.groups.len() + material + data)
}

/// Responses as a server sends them (a refusal, Locate, Get, Get
/// Attributes, Encrypt): the seeds of the fuzz target.
pub(crate) fn sample_messages() -> Vec<Vec<u8>> {
    use msg::tag;
    use ttlv::{Item, Value};
    let response = |status: u32, payload: Vec<Item>| {
        Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::enumeration(tag::RESULT_STATUS, status),
                    Item::structure(tag::RESPONSE_PAYLOAD, payload),
                ],
            )],
        )
        .encode()
    };
    let attr = |name: &str, value: Value| {
        Item::structure(
            tag::ATTRIBUTE,
            vec![
                Item::text(tag::ATTRIBUTE_NAME, name),
                Item::new(tag::ATTRIBUTE_VALUE, value),
            ],
        )
    };
    vec![
        response(1, vec![Item::text(tag::RESULT_MESSAGE, "no such object")]),
        response(
            0,
            vec![
                Item::text(tag::UNIQUE_IDENTIFIER, "1"),
                Item::text(tag::UNIQUE_IDENTIFIER, "7"),
            ],
        ),
        response(
            0,
            vec![Item::structure(
                tag::SYMMETRIC_KEY,
                vec![Item::structure(
                    tag::KEY_BLOCK,
                    vec![Item::structure(
                        tag::KEY_VALUE,
                        vec![Item::bytes(tag::KEY_MATERIAL, &[0x33; 32])],
                    )],
                )],
            )],
        ),
        response(
            0,
            vec![
                attr("State", Value::Enumeration(2)),
                attr("Object Group", Value::Text("ENCR_A".into())),
                attr("Initial Date", Value::DateTime(1_700_000_000)),
                attr("Cryptographic Length", Value::Integer(256)),
                attr(
                    "Name",
                    Value::Structure(vec![Item::text(tag::NAME_VALUE, "key1")]),
                ),
            ],
        ),
        response(0, vec![Item::bytes(tag::DATA, &[0x44; 48])]),
    ]
}
