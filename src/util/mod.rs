//! Small helpers that several rooms need and that belong to none of them:
//! durable file operations (atomic replacement, directory fsync) and the
//! rules for names read from users, media and the network. A leaf: it
//! imports nothing from kmsfs.

pub mod atomic;
pub mod names;
