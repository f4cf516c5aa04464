//! One caller at a time per key, and no waiting across keys: readers that
//! miss the same thing at once (a key from the KMS, a container from the
//! object store) fetch it once, while a reader of something else is not
//! held behind a slow fetch.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

/// A turn per key, made on first use and dropped when no one waits for it.
pub struct Turns<K> {
    map: Mutex<HashMap<K, Arc<Mutex<()>>>>,
}

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> Turns<K> {
    /// Runs `f` once the turn of `key` is this caller's.
    pub fn take<T>(&self, key: &K, f: impl FnOnce() -> T) -> T {
        let turn = self.map.lock().entry(key.clone()).or_default().clone();
        let out = {
            let _turn = turn.lock();
            f()
        };
        // Copies of the turn are handed out under this lock only: once
        // this caller's is dropped, a count of one (the map's) is exact.
        let mut m = self.map.lock();
        drop(turn);
        if m.get(key).is_some_and(|t| Arc::strong_count(t) == 1) {
            m.remove(key);
        }
        out
    }

    /// Whether a caller holds or waits for the turn of `key`.
    pub fn busy(&self, key: &K) -> bool {
        self.map.lock().contains_key(key)
    }

    /// Whether no caller holds or waits for a turn.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.map.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_key_waits_another_does_not() {
        let turns = Arc::new(Turns::<u32>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let (t2, i2) = (turns.clone(), inside.clone());
        let slow = std::thread::spawn(move || {
            t2.take(&1, || {
                i2.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            })
        });
        while inside.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let t = std::time::Instant::now();
        assert!(turns.busy(&1) && !turns.busy(&2));
        turns.take(&2, || ());
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        turns.take(&1, || ());
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        slow.join().unwrap();
        assert!(turns.is_idle(), "no turn left behind");
    }
}
