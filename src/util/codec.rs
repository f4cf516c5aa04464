//! The bincode of the records kmsfs keeps (catalog records, the keystore
//! body, a key export container's body): the legacy layout (little-endian,
//! fixed-width integers) every store has been written in, decoded with a
//! bound on memory.
//!
//! A length prefix read from disk is only a claim, and bincode without a
//! limit allocates what a string or a byte vector claims before reading
//! it: a damaged record claiming 2^60 bytes aborted the process (found by
//! the `catalog_records`, `keystore` and `export` fuzz targets). Here what
//! one decode may claim in all is at most [`FACTOR`] times the bytes it
//! decodes, rounded up to a size class; a larger claim is an error.

use bincode::config::{Configuration, Fixint, LittleEndian};
use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How many times its encoding a record may take in memory. The largest
/// ratio of a real record is a little over 2 (a file list entry: 88 bytes
/// in memory, at least 38 encoded).
pub const FACTOR: usize = 32;

/// The layout every record is written in.
pub fn config() -> Configuration<LittleEndian, Fixint> {
    bincode::config::legacy()
}

/// The bincode of `v`.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(v, config())
}

/// Decodes a `T` from the start of `b` (trailing bytes are ignored),
/// claiming at most [`FACTOR`] times `b`'s size class in memory.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, DecodeError> {
    macro_rules! within {
        ($class:literal) => {
            bincode::serde::decode_from_slice(b, config().with_limit::<{ FACTOR << $class }>())
                .map(|(v, _)| v)
        };
    }
    match b.len() {
        n if n <= 1 << 12 => within!(12),
        n if n <= 1 << 16 => within!(16),
        n if n <= 1 << 20 => within!(20),
        n if n <= 1 << 24 => within!(24),
        n if n <= 1 << 28 => within!(28),
        _ => within!(32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_past_the_bound_is_an_error_and_a_real_record_decodes() {
        let mut b = (1u64 << 40).to_le_bytes().to_vec();
        b.extend_from_slice(b"short");
        assert!(matches!(
            decode::<String>(&b),
            Err(DecodeError::LimitExceeded)
        ));
        let list: Vec<(String, Option<String>, u64)> = (0..10_000)
            .map(|i| (format!("member-{i}"), None, i))
            .collect();
        assert_eq!(
            decode::<Vec<(String, Option<String>, u64)>>(&encode(&list).unwrap()).unwrap(),
            list
        );
        let bytes = vec![7u8; 3 << 20];
        assert_eq!(decode::<Vec<u8>>(&encode(&bytes).unwrap()).unwrap(), bytes);
    }
}
