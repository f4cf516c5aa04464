//! What a check (fsck of a library or of an LSU) found: shared by the
//! rooms that check and the doors that print it.

use serde::Serialize;

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `image POOL/PATH` or `volume BARCODE`.
    pub subject: String,
    pub what: String,
}

/// What a check found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub images: usize,
    pub bytes: u64,
    pub volumes: usize,
    /// Data that fails authentication, headers that do not parse.
    pub damaged: Vec<Problem>,
    /// Images that could not be verified (their key is not usable now).
    pub unverified: Vec<Problem>,
}

impl CheckReport {
    /// An image that did not open: unverified if its key is missing (the
    /// data may be fine), damaged otherwise.
    pub fn not_opened(&mut self, subject: String, missing_key: bool, what: String) {
        let list = if missing_key {
            &mut self.unverified
        } else {
            &mut self.damaged
        };
        list.push(Problem { subject, what });
    }
}
