//! kmsfs: a FUSE filesystem for backup storage.
//!
//! Volume pools of virtual tapes, virtual tape drives and deduplicating
//! pools, presented as ordinary directories, with keys from a key management
//! service. See DESIGN.md for the domain and `docs/format.md` for every
//! on-disk format. `main.rs` only parses arguments and calls [`cli::run`].

pub mod catalog;
pub mod cli;
pub mod control;
pub mod crypto;
pub mod engine;
pub mod fs;
pub mod import;
pub mod kmip;
pub mod kms;
pub mod msdp;
pub mod pipeline;
pub mod store;
pub mod tape;
#[cfg(test)]
mod testing;

#[cfg(test)]
#[global_allocator]
static HEAP: testing::heapscan::Scanning = testing::heapscan::Scanning;
pub mod util;
