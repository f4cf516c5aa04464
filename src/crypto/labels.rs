//! Every label kmsfs derives a key, a MAC or a digest with, and every
//! prefix of associated data, on one page, so an auditor can check that
//! no two purposes share one. Each is part of an on-disk format
//! (docs/format.md): changing one is a format change.

// HKDF infos (`derive_subkey`, pass-phrase keys).
/// Pass-phrase keys, version 1 (salt derived from the tag).
pub const PASSPHRASE_KEY: &[u8] = b"kmsfs passphrase key v1";
/// Domain of the Argon2id salt of a pass-phrase key.
pub const PASSPHRASE_SALT: &[u8] = b"kmsfs-pp-salt-v1";
/// The host master key derived from a pass phrase.
pub const HOST_MASTER_KEY: &[u8] = b"kmsfs host master key v1";
/// The key of an export container.
pub const KEY_EXPORT: &[u8] = b"kmsfs key export v1";
/// Per-fragment subkey of tape data blocks (salt: the fragment's salt).
pub const TAPE_BLOCK_KEY: &[u8] = b"kmsfs tape block key v1";
/// Per-fragment key that authenticates a fragment header and its file
/// mark (volume format 2; salt: the fragment's salt).
pub const TAPE_HEADER_MAC_KEY: &[u8] = b"kmsfs tape header mac v2";
/// Seed of the FastCDC gear table of chunker 1 (from the fingerprint key).
pub const CHUNKER_SEED: &[u8] = b"kmsfs chunker seed v1";
/// The FastCDC gear table of chunker 2 (from the fingerprint key).
pub const CHUNKER_GEAR: &[u8] = b"kmsfs chunker gear v2";
/// The store's key for image digests (from the key protection key).
pub const IMAGE_DIGEST_KEY: &[u8] = b"kmsfs image digest key v1";
/// The MAC key of the store's audit log entries.
pub const AUDIT_MAC_KEY: &[u8] = b"kmsfs audit mac key v1";
/// The key that seals an LSU's recipe files (from its fingerprint key).
pub const RECIPE_KEY: &[u8] = b"kmsfs recipe key v1";
/// The MAC key of an LSU's key dictionary file (from its fingerprint key).
pub const KEYDICT_MAC_KEY: &[u8] = b"kmsfs keydict mac key v1";

// HMAC-SHA256 labels.
/// Key check values.
pub const KEY_CHECK_VALUE: &[u8] = b"kmsfs key check value v1";
/// Check values bound to a context (keys wrapped by a KMIP server).
pub const BOUND_CHECK_VALUE: &[u8] = b"kmsfs bound check value v1";
/// Input prefix of a fragment header's MAC (format 2).
pub const FRAGMENT_HEADER_MAC: &[u8] = b"KMSFSFH2";
/// Input prefix of a file mark's MAC (format 2).
pub const FILE_MARK_MAC: &[u8] = b"KMSFSFM2";
/// Input prefix of an LSU key dictionary file's MAC.
pub const KEYDICT_MAC: &[u8] = b"KMSFSKD1";

// Associated data prefixes.
/// Tape data blocks, format 1.
pub const BLOCK_AAD_V1: &[u8; 8] = b"KMSFSBLK";
/// Tape data blocks, format 2 (adds the block's offset in the image).
pub const BLOCK_AAD_V2: &[u8; 8] = b"KMSFSBK2";
/// LSU segment data.
pub const SEGMENT_AAD: &[u8] = b"kmsfs seg v1";
/// DEKs sealed under a KEK.
pub const DEK_AAD: &[u8] = b"kmsfs dek v1";
/// An LSU image's recipe file (followed by the file's 64-byte header).
pub const RECIPE_AAD: &[u8] = b"kmsfs recipe v1";
/// Keys wrapped by the embedded KMS.
pub const WRAP_AAD: &[u8] = b"kmsfs wrap v1";
/// Keys wrapped by a KMIP server, format 1 (context of the check value).
pub const KMIP_WRAP: &[u8] = b"kmsfs kmip wrap v1";
/// Domain of the AES-CTR nonce at which a KMIP root key's keystream gives
/// the key material of its wrap MAC key (format 2).
pub const KMIP_WRAP_MAC_LABEL: &[u8] = b"kmsfs kmip wrap mac label v2";
/// HKDF info of the MAC key of keys wrapped by a KMIP server (format 2).
pub const KMIP_WRAP_MAC_KEY: &[u8] = b"kmsfs kmip wrap mac key v2";
/// Key records sealed under the key protection key.
pub const KEY_RECORD_AAD: &[u8] = b"kmsfs key v1";

// SHA-256 domains of names made from public identifiers.
/// Key tags of KMIP keys (from their unique identifier).
pub const KMIP_TAG: &[u8] = b"kmsfs kmip tag v1";
/// Cache keys of wrapped keys.
pub const CACHED_WRAPPED_KEY: &[u8] = b"kmsfs cached wrapped key";
