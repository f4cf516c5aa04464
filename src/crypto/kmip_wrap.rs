//! The layout and authentication of a key wrapped by a KMIP server, so
//! every wrap kmsfs makes is read in this room (the embedded KMS's wrap is
//! [`super::seal`] under `labels::WRAP_AAD`). The server does the
//! encryption (AES-256-CBC under the root key, which never leaves it); this
//! module frames the result and authenticates it (docs/kmip.md):
//!
//! - format 2: `"KW\x02" ‖ iv(16) ‖ cbc(48) ‖ HMAC-SHA256(mac key, "KW\x02" ‖
//!   root tag ‖ 0 ‖ iv ‖ cbc)`, encrypt-then-MAC: the MAC is checked before
//!   the server is asked to decrypt;
//! - format 1 (read only): `"KW\x01" ‖ iv(16) ‖ cbc`, whose plaintext is the
//!   key ‖ a check value bound to `labels::KMIP_WRAP ‖ root tag`.

use super::{SecretKey, bound_check_value, labels, mac, mac_verify};

/// Prefix of format 1.
pub const KMIP_WRAP_V1: &[u8; 3] = b"KW\x01";
/// Prefix of format 2.
pub const KMIP_WRAP_V2: &[u8; 3] = b"KW\x02";
/// CBC initialisation vector.
pub const KMIP_IV_LEN: usize = 16;
/// A 32-byte key, PKCS#7-padded, under CBC.
pub const KMIP_CBC_LEN: usize = 48;
const MAC_LEN: usize = 32;

/// A wrapped key as stored: which format, and its parts.
pub enum KmipWrapped<'a> {
    /// Format 2, authenticated: the server may decrypt `cbc`.
    V2 { iv: &'a [u8], cbc: &'a [u8] },
    /// Format 1: the server decrypts `data`; [`kmip_v1_key`] checks it.
    V1 { iv: &'a [u8], data: &'a [u8] },
}

/// Format 2 bytes of the server's `cbc` under `iv`, for root key `root_tag`.
pub fn kmip_wrap_v2(mac_key: &SecretKey, root_tag: &str, iv: &[u8], cbc: &[u8]) -> Vec<u8> {
    let tag = mac(mac_key, &[KMIP_WRAP_V2, root_tag.as_bytes(), &[0], iv, cbc]);
    [KMIP_WRAP_V2.as_slice(), iv, cbc, &tag].concat()
}

/// The parts of a stored wrapped key; `None` if it is neither format, is
/// the wrong length, or (format 2) fails its MAC. `mac_key` is asked for
/// only when a format 2 MAC needs it.
pub fn kmip_unframe<'a, E>(
    sealed: &'a [u8],
    root_tag: &str,
    mac_key: impl FnOnce() -> Result<SecretKey, E>,
) -> Result<Option<KmipWrapped<'a>>, E> {
    if let Some(body) = sealed.strip_prefix(KMIP_WRAP_V2.as_slice()) {
        if body.len() != KMIP_IV_LEN + KMIP_CBC_LEN + MAC_LEN {
            return Ok(None);
        }
        let (iv, rest) = body.split_at(KMIP_IV_LEN);
        let (cbc, tag) = rest.split_at(KMIP_CBC_LEN);
        let tag: &[u8; MAC_LEN] = tag.try_into().expect("32 bytes");
        let key = mac_key()?;
        let ok = mac_verify(
            &key,
            &[KMIP_WRAP_V2, root_tag.as_bytes(), &[0], iv, cbc],
            tag,
        );
        return Ok(ok.then_some(KmipWrapped::V2 { iv, cbc }));
    }
    if let Some(body) = sealed.strip_prefix(KMIP_WRAP_V1.as_slice()) {
        if body.len() <= KMIP_IV_LEN {
            return Ok(None);
        }
        let (iv, data) = body.split_at(KMIP_IV_LEN);
        return Ok(Some(KmipWrapped::V1 { iv, data }));
    }
    Ok(None)
}

/// The key in a format 1 plaintext (key ‖ bound check value), if its check
/// value is right for `root_tag`.
pub fn kmip_v1_key(plain: &[u8], root_tag: &str) -> Option<SecretKey> {
    if plain.len() != 48 {
        return None;
    }
    let key = SecretKey::from_slice(&plain[..32])?;
    let context = [labels::KMIP_WRAP, root_tag.as_bytes()].concat();
    let want = bound_check_value(&key, &context);
    bool::from(subtle::ConstantTimeEq::ct_eq(&want[..], &plain[32..])).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_2_wrap_authenticates_its_tag_and_every_byte() {
        let k = SecretKey::from_slice(&[9u8; 32]).unwrap();
        let (iv, cbc) = ([1u8; KMIP_IV_LEN], [2u8; KMIP_CBC_LEN]);
        let w = kmip_wrap_v2(&k, "tag", &iv, &cbc);
        let ok = |w: &[u8], tag: &str| {
            kmip_unframe::<()>(w, tag, || Ok(k.duplicate()))
                .unwrap()
                .is_some()
        };
        assert!(ok(&w, "tag"));
        assert!(!ok(&w, "other"), "bound to the root tag");
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 1;
            assert!(!ok(&bad, "tag"), "byte {i}");
        }
        assert!(!ok(&w[..w.len() - 1], "tag"));
    }
}
