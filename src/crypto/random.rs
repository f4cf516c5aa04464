//! The operating system's random source, the only one kmsfs uses.

use super::CryptoError;

/// Fills `buf` with random bytes.
pub(super) fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// A random fixed-size array (identifiers, salts).
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut a = [0u8; N];
    fill(&mut a)?;
    Ok(a)
}
