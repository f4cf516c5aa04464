//! Key derivation: HKDF-SHA-256 subkeys, Argon2id pass-phrase keys, key check values.

use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{CryptoError, SecretKey, labels};

/// Argon2id cost parameters, recorded next to everything derived with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Argon2Params {
    /// Largest costs kmsfs accepts from a file: 1 GiB of memory, 16
    /// passes, 16 lanes (it writes 64 MiB, 3, 1). A file from elsewhere
    /// that asks for more is refused before any memory is taken.
    pub const MAX: Argon2Params = Argon2Params {
        m_kib: 1 << 20,
        t: 16,
        p: 16,
    };

    /// Whether these costs are within [`Argon2Params::MAX`] and valid for
    /// Argon2id; the error names the cost that is not.
    pub fn check(&self) -> Result<(), String> {
        let m = Self::MAX;
        if self.p == 0 || self.p > m.p {
            return Err(format!("Argon2 lanes {} outside 1..={}", self.p, m.p));
        }
        if self.t == 0 || self.t > m.t {
            return Err(format!("Argon2 passes {} outside 1..={}", self.t, m.t));
        }
        if self.m_kib < 8 * self.p || self.m_kib > m.m_kib {
            return Err(format!(
                "Argon2 memory {} KiB outside {}..={} KiB",
                self.m_kib,
                8 * self.p,
                m.m_kib
            ));
        }
        Ok(())
    }
}

/// Parameters of pass-phrase keys, version 1 (see docs/format.md for why).
/// Pinned: a key recreated at a DR site years from now must match bit for bit.
pub const PASSPHRASE_KEY_PARAMS: Argon2Params = Argon2Params {
    m_kib: 65536,
    t: 3,
    p: 1,
};

fn argon2id(pass: &[u8], salt: &[u8], p: Argon2Params) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    p.check().map_err(CryptoError::Kdf)?;
    let params =
        Params::new(p.m_kib, p.t, p.p, Some(32)).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, salt, &mut out[..])
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> SecretKey {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    SecretKey::from_slice(&okm[..]).expect("32 bytes")
}

/// The key of a pass-phrase key record, version 1:
/// `HKDF-SHA-256(ikm = Argon2id(pass, salt = SHA-256("kmsfs-pp-salt-v1" || tag)[..16]),
///               salt = tag, info = "kmsfs passphrase key v1")`.
///
/// The salt is derived from the tag, so a DR site that has only the tag and
/// the pass phrase recreates the same key.
pub fn passphrase_key(pass: &[u8], tag: &str, p: Argon2Params) -> Result<SecretKey, CryptoError> {
    use sha2::Digest;
    let salt = Sha256::new()
        .chain_update(labels::PASSPHRASE_SALT)
        .chain_update(tag.as_bytes())
        .finalize();
    let ikm = argon2id(pass, &salt[..16], p)?;
    Ok(hkdf(&ikm[..], tag.as_bytes(), labels::PASSPHRASE_KEY))
}

/// A key from a pass phrase and a random salt stored beside what it protects
/// (host master key, export container): `HKDF(Argon2id(pass, salt), salt, info)`.
pub fn passphrase_secret(
    pass: &[u8],
    salt: &[u8],
    p: Argon2Params,
    info: &[u8],
) -> Result<SecretKey, CryptoError> {
    let ikm = argon2id(pass, salt, p)?;
    Ok(hkdf(&ikm[..], salt, info))
}

/// A subkey of `key` for one purpose (`info`) and one object (`salt`).
pub fn derive_subkey(key: &SecretKey, salt: &[u8], info: &[u8]) -> SecretKey {
    hkdf(key.expose_secret(), salt, info)
}

/// An 8-byte key check value: `HMAC-SHA-256(key, "kmsfs key check value v1")[..8]`.
/// Lets `recoverkey` and import tell a wrong pass phrase from a right one
/// without decrypting data; reveals nothing usable about a random key.
pub fn key_check_value(key: &SecretKey) -> [u8; 8] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret()).expect("any key length");
    mac.update(labels::KEY_CHECK_VALUE);
    let out = mac.finalize().into_bytes();
    out[..8].try_into().expect("8 bytes")
}

/// A 16-byte check value that binds `key` to `context`: kept beside a key
/// that travels through a cipher without authentication (a KMIP server's
/// AES-CBC), it tells a wrong key or altered bytes from the right key.
pub fn bound_check_value(key: &SecretKey, context: &[u8]) -> [u8; 16] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret()).expect("any key length");
    mac.update(labels::BOUND_CHECK_VALUE);
    mac.update(context);
    let out = mac.finalize().into_bytes();
    out[..16].try_into().expect("16 bytes")
}

/// The FastCDC gear table of an LSU (chunker 2): all 256 entries from
/// HKDF-Expand of its fingerprint key, so cut points depend on the whole
/// key, not on the public table XOR one 64-bit seed (keyed-CDC attacks
/// recover such a seed from a few known chunk boundaries).
pub fn gear_table(fp_key: &SecretKey) -> Box<[u64; 256]> {
    let mut okm = Zeroizing::new([0u8; 2048]);
    Hkdf::<Sha256>::from_prk(fp_key.expose_secret())
        .expect("32 bytes is a valid PRK")
        .expand(super::labels::CHUNKER_GEAR, &mut okm[..])
        .expect("2048 bytes is a valid HKDF-SHA-256 length");
    let mut t = Box::new([0u64; 256]);
    for (g, b) in t.iter_mut().zip(okm.chunks_exact(8)) {
        *g = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    }
    t
}

/// HMAC-SHA256 under `key` of the concatenation of `parts`: authenticates
/// records that are stored in clear (fragment headers, file marks).
pub fn mac(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret()).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Whether `tag` is [`mac`] of `parts` under `key`, compared in constant time.
pub fn mac_verify(key: &SecretKey, parts: &[&[u8]], tag: &[u8; 32]) -> bool {
    let want = mac(key, parts);
    subtle::ConstantTimeEq::ct_eq(&want[..], &tag[..]).into()
}

/// SHA-256 of `data` in the domain `domain`: names derived from public
/// identifiers (never from keys).
pub fn name_digest(domain: &[u8], data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(domain);
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Argon2Params = Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn passphrase_key_golden_vector() {
        // Pinned: a change here breaks recovery of every pass-phrase key ever made.
        // Cross-checked with Python cryptography 48 + argon2-cffi (see docs/format.md).
        let k =
            passphrase_key(b"correct horse", "0123456789abcdef0123456789abcdef", CHEAP).unwrap();
        assert_eq!(
            hex::encode(k.expose_secret()),
            "bb0279898fcf44c4a60ca4eae98babca29318fb0d5a6370d0133a5190a981df7"
        );
        assert_eq!(hex::encode(key_check_value(&k)), "0979c1fac391ee4c");
    }

    #[test]
    fn passphrase_key_default_params_golden_vector() {
        let k = passphrase_key(
            b"correct horse",
            "0123456789abcdef0123456789abcdef",
            PASSPHRASE_KEY_PARAMS,
        )
        .unwrap();
        assert_eq!(
            hex::encode(k.expose_secret()),
            "42d2c6701e3270908be8606bcdda1d58e75f3c47c8421d89a6cfda6422e83faa"
        );
    }

    #[test]
    fn different_pass_phrase_or_tag_gives_different_key() {
        let a = passphrase_key(b"one", "t1", CHEAP).unwrap();
        assert!(!a.ct_eq(&passphrase_key(b"two", "t1", CHEAP).unwrap()));
        assert!(!a.ct_eq(&passphrase_key(b"one", "t2", CHEAP).unwrap()));
        assert!(a.ct_eq(&passphrase_key(b"one", "t1", CHEAP).unwrap()));
    }

    #[test]
    fn mac_golden_vector_and_tamper() {
        // Python: hmac.new(bytes([0x44]*32), b"KMSFSFH2" + b"abc", "sha256").hexdigest()
        let k = SecretKey::from_slice(&[0x44; 32]).unwrap();
        let t = mac(&k, &[b"KMSFSFH2", b"abc"]);
        assert_eq!(t, mac(&k, &[b"KMSFSFH2abc"]), "parts are concatenated");
        assert_eq!(
            hex::encode(t),
            "1a767a9832f1458a1ecf1352f2421578cbc402d90d9b4a8332851620778a77fe"
        );
        assert!(mac_verify(&k, &[b"KMSFSFH2abc"], &t));
        let mut bad = t;
        bad[0] ^= 1;
        assert!(!mac_verify(&k, &[b"KMSFSFH2abc"], &bad));
    }

    #[test]
    fn subkey_golden_vector() {
        let k = SecretKey::from_slice(&[0x22; 32]).unwrap();
        let s = derive_subkey(&k, &[0x33; 32], b"kmsfs tape block key v1");
        assert_eq!(
            hex::encode(s.expose_secret()),
            "c0b0af1f7601cc405d8aeab34cf9122dc342c9edb8360bbdeacff9f5ee1311ff"
        );
    }
}
