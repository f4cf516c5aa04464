//! [`SecretKey`]: 256 bits of key material that never leak by accident.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{CryptoError, random};

/// A 256-bit secret key (data key, KEK, root key, HMK or KPK).
///
/// Deliberately implements none of `Debug`, `Display`, `Clone`, `Copy`,
/// `Default` or `PartialEq`: a key is moved, used, and wiped on drop. The bytes
/// sit in a `Box` so moving the key never leaves copies on the stack.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Box<[u8; 32]>);

impl SecretKey {
    /// Length of every key kmsfs uses, in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the operating system's random source.
    pub fn random() -> Result<Self, CryptoError> {
        let mut key = Self(Box::new([0u8; 32]));
        random::fill(&mut key.0[..])?;
        Ok(key)
    }

    /// Takes a key from a slice that must be exactly 32 bytes long; the caller
    /// wipes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut key = Self(Box::new([0u8; 32]));
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// The raw bytes, for the crypto primitives and the sealed stores only.
    /// Named loudly so that a reviewer sees every place key bytes are touched.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &SecretKey) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }

    /// A second instance of the same key. Explicit, so copies are visible.
    pub fn duplicate(&self) -> SecretKey {
        SecretKey(Box::new(*self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_differ_and_compare_in_constant_time() {
        let a = SecretKey::random().unwrap();
        let b = SecretKey::random().unwrap();
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&a.duplicate()));
    }

    #[test]
    fn from_slice_rejects_wrong_length() {
        assert!(SecretKey::from_slice(&[1u8; 31]).is_none());
        assert!(SecretKey::from_slice(&[1u8; 33]).is_none());
        assert_eq!(
            SecretKey::from_slice(&[7u8; 32]).unwrap().expose_secret(),
            &[7u8; 32]
        );
    }
}
