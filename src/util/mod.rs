//! Small helpers that several rooms need and that belong to none of them:
//! durable file operations (atomic replacement, directory fsync) and the
//! rules for names read from users, media and the network, and the uid of
//! this process. Near the bottom:
//! it imports only `crypto` (for random names).

pub mod atomic;
pub mod names;
pub mod process;
