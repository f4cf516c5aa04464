//! The one small room where kmsfs touches cryptography.
//!
//! Every AES-GCM seal and open, every HKDF and Argon2id derivation and every
//! random byte in kmsfs comes from here. Nothing outside this module names
//! `aws_lc_rs`, `hkdf`, `argon2` or `getrandom`, so a reviewer has one place to
//! read. Key material lives in [`SecretKey`], which wipes itself on drop and
//! can be neither printed, cloned nor compared except in constant time.

mod aead;
mod kdf;
mod key;
mod kmip_wrap;
pub mod labels;
mod random;
mod segment;

pub use aead::{BlockCipher, TAG_LEN, open, seal};
pub use kdf::{
    Argon2Params, PASSPHRASE_KEY_PARAMS, bound_check_value, derive_subkey, gear_table,
    key_check_value, mac, mac_verify, name_digest, passphrase_key, passphrase_secret,
};
pub use key::SecretKey;
pub use kmip_wrap::{
    KMIP_CBC_LEN, KMIP_IV_LEN, KmipWrapped, kmip_unframe, kmip_v1_key, kmip_wrap_v2,
};
pub use random::random_array;
pub use segment::{ImageDigest, fingerprint, open_in_place, open_to, seal_in_place};

/// Why a cryptographic operation failed. Carries no key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The authentication tag did not match: wrong key, or altered bytes.
    #[error("authentication failed (wrong key or altered data)")]
    Authentication,
    /// The sealed input is shorter than a nonce plus a tag.
    #[error("sealed data truncated ({0} bytes)")]
    Truncated(usize),
    /// The operating system's random source failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// A key derivation was given parameters it cannot use.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}
