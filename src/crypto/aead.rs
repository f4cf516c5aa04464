//! AES-256-GCM: sealed records with random nonces, and counted block nonces.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use super::{CryptoError, SecretKey, random};

/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;

fn cipher(key: &SecretKey) -> Aes256Gcm {
    Aes256Gcm::new(key.expose_secret().into())
}

/// Seals `plaintext` under `key` with a fresh random nonce:
/// `nonce (12) || ciphertext || tag (16)`. `aad` is authenticated, not stored.
///
/// Random 96-bit nonces are used only for small records (key records,
/// keystores, wrapped keys), far below the 2^32 messages per key where
/// random nonces become unsafe.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    let ct = cipher(key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens what [`seal`] produced. The plaintext is wiped when dropped.
pub fn open(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    cipher(key)
        .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Authentication)
}

/// A cipher for a stream of numbered blocks under one derived subkey.
///
/// The nonce of block `n` is `n` as 8 little-endian bytes followed by 4 zero
/// bytes: unique for every block under the subkey, which is itself unique per
/// fragment (HKDF with a random salt), so no nonce ever repeats under a key.
pub struct BlockCipher(Aes256Gcm);

impl BlockCipher {
    /// A block cipher under `key` (normally a per-fragment subkey).
    pub fn new(key: &SecretKey) -> Self {
        Self(cipher(key))
    }

    fn nonce(index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&index.to_le_bytes());
        Nonce::from(n)
    }

    /// Encrypts `buf` in place as block `index`; returns the tag.
    pub fn seal_block(&self, index: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .encrypt_inout_detached(&Self::nonce(index), aad, buf.into())
            .expect("AES-GCM encryption of a block below 64 GiB cannot fail");
        tag.into()
    }

    /// Decrypts `buf` in place as block `index`, checking `tag`.
    pub fn open_block(
        &self,
        index: u64,
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let tag = Tag::from(*tag);
        self.0
            .decrypt_inout_detached(&Self::nonce(index), aad, buf.into(), &tag)
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = SecretKey::random().unwrap();
        let mut sealed = seal(&key, b"aad", b"hello").unwrap();
        assert_eq!(&open(&key, b"aad", &sealed).unwrap()[..], b"hello");
        assert_eq!(
            open(&key, b"other", &sealed),
            Err(CryptoError::Authentication)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            open(&key, b"aad", &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open(&key, b"aad", &sealed[..10]),
            Err(CryptoError::Truncated(10))
        );
    }

    #[test]
    fn block_cipher_golden_vector() {
        // Pinned: changing this changes the tape format.
        let key = SecretKey::from_slice(&[0x11; 32]).unwrap();
        let c = BlockCipher::new(&key);
        let mut buf = *b"kmsfs block zero";
        let tag = c.seal_block(7, b"aad", &mut buf);
        assert_eq!(hex::encode(buf), "356b2ef0435f2e8403830880210c930c");
        assert_eq!(hex::encode(tag), "9fd9daee2ea93d3cdaf835dd4eba63d4");
        c.open_block(7, b"aad", &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"kmsfs block zero");
    }

    #[test]
    fn block_cipher_detects_wrong_index_and_aad() {
        let key = SecretKey::random().unwrap();
        let c = BlockCipher::new(&key);
        let mut buf = vec![5u8; 100];
        let tag = c.seal_block(1, b"a", &mut buf);
        let mut copy = buf.clone();
        assert!(c.open_block(2, b"a", &mut copy, &tag).is_err());
        let mut copy = buf.clone();
        assert!(c.open_block(1, b"b", &mut copy, &tag).is_err());
    }
}
