//! The bincode of the records kmsfs keeps (catalog records, the keystore
//! body, a key export container's body): the legacy layout (little-endian,
//! fixed-width integers) every store has been written in, decoded with a
//! bound on memory.
//!
//! A length prefix read from disk is only a claim, and bincode without a
//! limit allocates what a string or a byte vector claims before reading
//! it: a damaged record claiming 2^60 bytes aborted the process (found by
//! the `catalog_records`, `keystore` and `export` fuzz targets). bincode
//! counts against its limit every primitive it reads and every string or
//! byte vector it is about to allocate, so what a decode claims in all is
//! never more than the bytes it reads; the limit here is the input's size
//! rounded up to a power of 16 (at least 4 KiB; few classes, as each limit
//! is a type of its own and compiles its own decoder), and a larger claim
//! is an error.

use bincode::config::{Configuration, Fixint, LittleEndian};
use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The layout every record is written in.
pub fn config() -> Configuration<LittleEndian, Fixint> {
    bincode::config::legacy()
}

/// The bincode of `v`.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(v, config())
}

/// Decodes a `T` from the start of `b` (trailing bytes are ignored),
/// claiming at most `b.len()` rounded up to a power of 16 (at least 4 KiB).
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, DecodeError> {
    macro_rules! within {
        ($($bits:literal)+) => {
            match b.len().max(1 << 12).next_power_of_two().trailing_zeros().next_multiple_of(4) {
                $($bits => bincode::serde::decode_from_slice(b, config().with_limit::<{ 1 << $bits }>()),)+
                _ => Err(DecodeError::LimitExceeded),
            }
        };
    }
    within!(12 16 20 24 28 32 36 40).map(|(v, _)| v)
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
        // A large damaged record claims no more than its own size either.
        let mut big = (1u64 << 30).to_le_bytes().to_vec();
        big.resize(17 << 20, 0);
        assert!(matches!(
            decode::<String>(&big),
            Err(DecodeError::LimitExceeded)
        ));
        let bytes = vec![7u8; 3 << 20];
        assert_eq!(decode::<Vec<u8>>(&encode(&bytes).unwrap()).unwrap(), bytes);
    }
}
