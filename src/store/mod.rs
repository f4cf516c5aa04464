//! The store: one directory holding config, keystore, volumes, catalog and
//! LSUs; created by `init`, opened (and locked) by the daemon or the CLI.

pub mod atomic;
