//! What a check (fsck of a library or of an LSU) found: shared by the
//! rooms that check and the doors that print it.

use serde::Serialize;

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `image POOL/PATH` or `volume BARCODE`.
    pub subject: String,
    pub what: String,
    /// The image concerned, if the subject is one.
    #[serde(skip)]
    pub image: Option<u128>,
    /// Why the damage is critical: the data of an image under a
    /// retention lock or legal hold, meant to be immutable, is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<String>,
}

impl Problem {
    /// A problem of a volume (or of anything that is not one image).
    pub fn new(subject: String, what: String) -> Self {
        Self {
            subject,
            what,
            image: None,
            critical: None,
        }
    }

    /// A problem of image `id`.
    pub fn of_image(id: u128, subject: String, what: String) -> Self {
        Self {
            image: Some(id),
            ..Self::new(subject, what)
        }
    }
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
    pub fn not_opened(&mut self, id: u128, subject: String, missing_key: bool, what: String) {
        let list = if missing_key {
            &mut self.unverified
        } else {
            &mut self.damaged
        };
        list.push(Problem::of_image(id, subject, what));
    }

    /// Marks critical each problem of a locked image: `locked` says why
    /// an image (by id) or a volume's images (by subject) are locked.
    pub fn mark_critical(&mut self, mut locked: impl FnMut(&Problem) -> Option<String>) {
        for p in self.damaged.iter_mut().chain(self.unverified.iter_mut()) {
            p.critical = locked(p);
        }
    }

    /// How many problems are critical.
    pub fn critical(&self) -> usize {
        let all = self.damaged.iter().chain(&self.unverified);
        all.filter(|p| p.critical.is_some()).count()
    }
}
