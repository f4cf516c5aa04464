//! The engine: the hall between the doors (the FUSE adapter, the CLI, the
//! control socket) and the rooms (tape, msdp, kms, catalog, import).
//!
//! Policy that does not depend on how a request arrived lives here, so each
//! door stays a thin translation: the typed kind of a pool ([`PoolKind`]),
//! which backend an image stream uses ([`Writer`], [`Reader`]), and the life
//! of an image being written, from create to the close that commits it
//! ([`Sessions`], which also lists a tar image's members as it streams by),
//! and restoring members of an image by that list ([`restore_members`]).
//! Errors stay typed ([`EngineError`]); the doors map them
//! to errno values or messages.

mod error;
mod pool;
mod restore;
mod session;
mod streams;

pub use error::EngineError;
pub use pool::{PoolKind, check_move, create_pool};
pub use restore::restore_members;
pub use session::{Pending, Session, Sessions};
pub use streams::{Reader, Writer};
