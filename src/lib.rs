//! kmsfs: a FUSE filesystem for backup storage.
//!
//! Volume pools of virtual tapes, virtual tape drives and deduplicating
//! pools, presented as ordinary directories, with keys from a key management
//! service. See DESIGN.md for the domain and `docs/format.md` for every
//! on-disk format. `main.rs` only parses arguments and calls [`cli::run`].
//!
//! The public API is [`cli`] (the binary) and the modules the integration
//! tests open a store, read media and generate golden volumes with
//! (`catalog`, `crypto`, `kms`, `pipeline`, `store`, `tape`); everything
//! else is `pub(crate)`, so rustc reports its dead code.

pub mod audit;
pub mod catalog;
pub mod cli;
pub(crate) mod control;
pub mod crypto;
pub(crate) mod engine;
pub(crate) mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod import;
pub(crate) mod kmip;
pub mod kms;
pub(crate) mod msdp;
pub mod pipeline;
pub mod store;
pub mod tape;
#[cfg(test)]
mod testing;

#[cfg(test)]
#[global_allocator]
static HEAP: testing::heapscan::Scanning = testing::heapscan::Scanning;
pub(crate) mod util;
