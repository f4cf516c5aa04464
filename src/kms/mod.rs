//! The key management service: key groups, keys and their states, the
//! sealed embedded keystore, and the [`KmsClient`] interface through which
//! the rest of kmsfs gets keys.
//!
//! Callers (tape drives, LSUs, import) depend only on [`KmsClient`]; the
//! embedded keystore is one backend behind it, an external KMIP server will
//! be another. The KMS enforces its own rules (state transitions, one
//! active key per group, keys in use cannot be deleted) so that no caller
//! can break them.

pub mod backoff;
mod client;
mod error;
pub(crate) mod fuzz;
mod keystore;
mod model;
mod ops;
mod state;
mod transfer;
mod unlock;

pub use client::{EmbeddedKms, KeyUsers, KmsClient, NoUsers, Retrying, TaggedKey, WrappedKey};
pub use error::KmsError;
pub use keystore::{HMK_FILE, Keystore};
pub use model::{GroupInfo, KeyInfo, check_name as model_check_name, tag_bytes};
pub use ops::NewKey;
pub use state::KeyState;
pub use transfer::{export_container, read_container};
pub use unlock::{HmkSource, Unlock};
