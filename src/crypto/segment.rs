//! What dedup segments need from cryptography: keyed fingerprints (so equal
//! plaintext is found without a bare hash of it ever being stored), and
//! AES-256-GCM in place with an explicit nonce (zero under a fresh
//! per-segment DEK, random under a reused legacy key).

use super::aead::{Gcm, NONCE_LEN, TAG_LEN};
use super::{CryptoError, SecretKey};

/// Keyed BLAKE3 of `data` under the LSU's fingerprint key.
pub fn fingerprint(key: &SecretKey, data: &[u8]) -> [u8; 32] {
    blake3::keyed_hash(key.expose_secret(), data).into()
}

/// The keyed digest of an image's plaintext: BLAKE3 keyed with the
/// store's digest key, so equal files give equal digests only to whoever
/// holds the store's keys. The hasher's copy of the key is wiped on drop.
pub struct ImageDigest(blake3::Hasher);

impl ImageDigest {
    pub fn new(key: &SecretKey) -> Self {
        Self(blake3::Hasher::new_keyed(key.expose_secret()))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finalize(&self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl Drop for ImageDigest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Encrypts `buf` in place; returns the tag. `nonce` must never repeat
/// under `key`.
pub fn seal_in_place(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    Gcm::new(key).seal(*nonce, aad, buf)
}

/// Decrypts `buf` in place, checking `tag`.
pub fn open_in_place(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    Gcm::new(key).open(*nonce, aad, buf, tag)
}

/// Decrypts `ct` into `out` (the same length), checking `tag`: the
/// plaintext goes where the caller wants it without a copy.
pub fn open_to(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8; TAG_LEN],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    Gcm::new(key).open_to(*nonce, aad, ct, tag, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_keyed_and_pinned() {
        let k = SecretKey::from_slice(&[7u8; 32]).unwrap();
        let fp = fingerprint(&k, b"segment");
        assert_ne!(
            fp,
            *blake3::hash(b"segment").as_bytes(),
            "never a bare hash"
        );
        // Pinned: changing it would break dedup against stored segments.
        assert_eq!(
            hex::encode(fp),
            hex::encode(blake3::keyed_hash(&[7u8; 32], b"segment").as_bytes())
        );
        let k2 = SecretKey::from_slice(&[8u8; 32]).unwrap();
        assert_ne!(fp, fingerprint(&k2, b"segment"));
    }

    #[test]
    fn seal_open_and_tamper() {
        let k = SecretKey::from_slice(&[1u8; 32]).unwrap();
        let n = [0u8; 12];
        let mut buf = b"hello segment".to_vec();
        let tag = seal_in_place(&k, &n, b"aad", &mut buf);
        assert_ne!(&buf[..], b"hello segment");
        let mut c = buf.clone();
        open_in_place(&k, &n, b"aad", &mut c, &tag).unwrap();
        assert_eq!(&c[..], b"hello segment");
        let mut c = buf.clone();
        assert!(open_in_place(&k, &n, b"aaX", &mut c, &tag).is_err());
        let mut c = buf.clone();
        c[0] ^= 1;
        assert!(open_in_place(&k, &n, b"aad", &mut c, &tag).is_err());
        let mut out = vec![0u8; buf.len()];
        open_to(&k, &n, b"aad", &buf, &tag, &mut out).unwrap();
        assert_eq!(&out[..], b"hello segment");
        assert!(open_to(&k, &n, b"aaX", &buf, &tag, &mut out).is_err());
    }
}
