//! Errors of the KMS, and whether a caller may retry them.

use super::KeyState;

/// What went wrong in the KMS. Never carries key material; names the group,
/// key or tag concerned.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("key group '{0}' does not exist")]
    NoSuchGroup(String),
    #[error("key group '{0}' already exists")]
    GroupExists(String),
    #[error("key group '{group}' is not empty ({keys} keys); delete its keys first")]
    GroupNotEmpty { group: String, keys: usize },
    #[error("key group '{0}' has no active key")]
    NoActiveKey(String),
    #[error("no key named '{name}' in key group '{group}'")]
    NoSuchKey { group: String, name: String },
    #[error("no key with tag {0} in the KMS")]
    NoSuchTag(String),
    #[error("a key named '{name}' already exists in key group '{group}'")]
    KeyExists { group: String, name: String },
    #[error("a key with tag {0} already exists")]
    TagExists(String),
    #[error("key {tag} is {state}: it cannot be used to {purpose}")]
    KeyUnusable {
        tag: String,
        state: KeyState,
        purpose: &'static str,
    },
    #[error("key '{name}' cannot go from {from} to {to}: {}", from.route_to(*to))]
    BadTransition {
        name: String,
        from: KeyState,
        to: KeyState,
    },
    #[error("key '{name}' is {state}: only prelive and terminated keys can be deleted")]
    NotDeletable { name: String, state: KeyState },
    #[error("key {key} cannot be used: {why}")]
    UnfitKey { key: String, why: String },
    #[error("key {tag} is in use by {users}: refused; {hint}")]
    InUse {
        tag: String,
        users: String,
        /// What frees the key.
        hint: String,
    },
    #[error("the pass phrase does not recreate key {tag} (key check value differs)")]
    PassphraseMismatch { tag: String },
    #[error("invalid name '{0}': use 1-64 letters, digits, '_', '-' or '.'")]
    BadName(String),
    #[error(
        "invalid key tag '{0}': a tag is 32 lowercase hex digits, as kms listkeys and import phase 1 print it"
    )]
    BadTag(String),
    #[error("wrong pass phrase or host master key for the keystore at {0}")]
    WrongHmk(String),
    #[error("keystore {path} is damaged: {why}")]
    Damaged { path: String, why: String },
    #[error("keystore {path} has format version {version}; this kmsfs reads up to {supported}")]
    UnknownVersion {
        path: String,
        version: u16,
        supported: u16,
    },
    #[error("key file {0} is missing")]
    MissingKeyFile(String),
    #[error(
        "this keystore is unlocked by a pass phrase: give --keystore-pass-phrase-file (mount: -o pass_phrase_file=) or KMSFS_PASSPHRASE_FILE"
    )]
    PassphraseRequired,
    #[error(
        "this store's keys are in KMIP servers ({0}): create, activate and retire keys there; kmsfs kms listkeys shows what kmsfs sees"
    )]
    ManagedByKmip(String),
    #[error(
        "the keystore change failed ({first}) and the old keystore could not be written back ({again}): after a restart the keystore may hold the change; check `kmsfs kms listkeys`"
    )]
    SaveUnsure { first: String, again: String },
    #[error("export container: {0}")]
    Container(String),
    #[error("the KMS did not answer within {secs}s: {why}")]
    Unreachable { secs: u64, why: String },
    #[error("the KMS refused {operation} of {subject}: {message} (KMIP result reason {reason})")]
    Refused {
        operation: &'static str,
        subject: String,
        reason: u32,
        message: String,
        /// The refusal means the key is not available (ENOKEY).
        missing_key: bool,
    },
    #[error("keystore I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

impl KmsError {
    /// A temporary failure (the KMS is unreachable) may succeed if retried;
    /// every other failure is a decision and is final.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Whether this means "the key needed is not available" (ENOKEY at the FUSE boundary).
    pub fn is_missing_key(&self) -> bool {
        matches!(
            self,
            Self::NoActiveKey(_)
                | Self::NoSuchTag(_)
                | Self::UnfitKey { .. }
                | Self::KeyUnusable { .. }
                | Self::NoSuchGroup(_)
                | Self::Refused {
                    missing_key: true,
                    ..
                }
        )
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
