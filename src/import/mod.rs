//! Two-phase import of volumes written by another store (NetBackup Security and Encryption Guide,
//! "About importing KMS encrypted images").
//!
//! Phase one ([`survey()`]) reads only media headers, fragment headers and
//! file marks, which are never encrypted: no key is needed or asked for.
//! It lists each image, the volumes it spans, whether it is encrypted, the
//! key tag it needs and whether this store's KMS has that key.
//!
//! Phase two ([`restore()`]) reads the data: for an encrypted fragment it
//! asks the KMS for the key by the tag on tape (as a drive reads the KAD),
//! authenticates every block, rebuilds the catalog entry and the image's
//! file list, and copies the volume into the store (it never writes to the
//! volume it reads). An image whose key is missing or whose data is damaged
//! is skipped and named; finished images are skipped on the next run, so
//! phase two continues where it stopped.

mod restore;
mod survey;

pub use restore::restore;
pub use survey::{Survey, survey};
