//! Whether a cloud LSU's object store answers. A request that gets no
//! answer (the network, a stall past the timeout, a server error or
//! throttling after the retries) marks the store down; while it is down,
//! one request at a time tries it again and the others fail at once. A
//! hung store so costs each caller at most one timeout, instead of
//! holding every FUSE thread of the mount in a queue of timeouts; the
//! first request the store answers marks it up again.
//!
//! An answer that refuses a request (4xx) is not an outage: it is the
//! request's own error, and says nothing of the store's health.

use std::sync::atomic::{AtomicBool, Ordering};

use object_store::client::HttpError;
use parking_lot::Mutex;

/// The error of a request not sent because the store is down.
#[derive(Debug, thiserror::Error)]
#[error("the object store did not answer a moment ago ({0}); not tried again until it answers")]
pub struct StoreDown(String);

/// Whether a failed request means the store did not answer, rather than
/// an answer that refused it.
pub fn unanswered(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<HttpError>() || c.is::<StoreDown>() {
            return true;
        }
        cause = c.source();
    }
    // 501: the store answered that it does not do this, which waiting
    // will not change.
    status_of(&e.to_string()).is_some_and(|s| (s >= 500 && s != 501) || s == 429 || s == 408)
}

/// The HTTP status an object_store error reports in its text.
fn status_of(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// The store's state, shared by every request to it.
#[derive(Default)]
pub struct Health {
    /// Why the last request went unanswered, while the store is down.
    down: Mutex<Option<String>>,
    probing: AtomicBool,
}

/// The one request trying a store that is down (released on drop).
pub struct Probe<'a>(Option<&'a AtomicBool>);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.store(false, Ordering::SeqCst);
        }
    }
}

impl Health {
    /// Leave to send a request: always while the store is up; while it is
    /// down, to one caller at a time.
    pub fn admit(&self) -> Result<Probe<'_>, object_store::Error> {
        let Some(why) = self.down.lock().clone() else {
            return Ok(Probe(None));
        };
        if self.probing.swap(true, Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(StoreDown(why)),
            });
        }
        Ok(Probe(Some(&self.probing)))
    }

    /// Takes the outcome of a request into account.
    pub fn record<T>(&self, r: &Result<T, object_store::Error>) {
        match r {
            Err(e) if unanswered(e) => self.unanswered(e.to_string()),
            _ => self.answered(),
        }
    }

    /// A request went unanswered (`why`).
    pub fn unanswered(&self, why: String) {
        let mut d = self.down.lock();
        if d.is_none() {
            tracing::warn!("object store down: {why}");
        }
        *d = Some(why);
    }

    /// The store answered a request.
    pub fn answered(&self) {
        if self.down.lock().take().is_some() {
            tracing::info!("object store answers again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::HttpErrorKind;

    fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error(
        "Error performing GET http://s/x in 3ms - Server returned non-2xx status code: {0}: <Error/>"
    )]
    struct Answer(&'static str);

    #[test]
    fn silence_and_server_errors_are_outages_refusals_are_not() {
        let stall = HttpError::new(HttpErrorKind::Timeout, std::io::Error::other("stalled"));
        assert!(unanswered(&generic(stall)));
        assert!(unanswered(&generic(Answer("503 Service Unavailable"))));
        assert!(unanswered(&generic(Answer("429 Too Many Requests"))));
        assert!(unanswered(&generic(Answer("408 Request Timeout"))));
        assert!(!unanswered(&generic(Answer("400 Bad Request"))));
        assert!(!unanswered(&generic(Answer("501 Not Implemented"))));
        assert!(!unanswered(&object_store::Error::NotFound {
            path: "x".into(),
            source: Box::new(Answer("404 Not Found")),
        }));
    }

    #[test]
    fn while_down_one_caller_tries_and_the_rest_fail_at_once() {
        let h = Health::default();
        let stall = HttpError::new(HttpErrorKind::Timeout, std::io::Error::other("stalled"));
        h.record::<()>(&Err(generic(stall)));
        let probe = h.admit().expect("one caller tries");
        let refused = h.admit().err().expect("the others fail at once");
        assert!(unanswered(&refused), "{refused}");
        drop(probe);
        let probe = h.admit().expect("the next caller tries");
        h.record(&Ok(()));
        drop(probe);
        assert!(h.admit().is_ok() && h.admit().is_ok(), "up again: everyone");
    }
}
