//! Content-defined chunking of a stream (FastCDC 2020 from the `fastcdc`
//! crate, normalization level 1). The gear table is seeded from the LSU's
//! fingerprint key, so cut points do not reveal content to someone who
//! knows only the public tables.
//!
//! Data arrives in pieces of any size; a cut is made only where the whole
//! stream would be cut, so the segments are the same however the stream
//! was split into writes (a property test checks this).

use std::borrow::Cow;

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

/// Segment sizes: min 64 KiB, average 128 KiB, max 512 KiB. Small enough
/// that a 100-byte insertion costs about two segments (256 KiB) of new
/// data; large enough that per-segment costs (index entry, DEK, record
/// header) stay near 0.2 % of the data. A minimum of half the average lets
/// the cutter skip half the bytes (restic does the same: 512 KiB / 1 MiB).
pub const DEFAULT_CHUNKING: [u32; 3] = [64 * 1024, 128 * 1024, 512 * 1024];

/// Bytes gathered before cutting, so each write is not copied twice.
pub const BATCH: usize = 4 << 20;

/// A streaming chunker.
pub struct Chunker {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: (Cow<'static, [u64]>, Cow<'static, [u64]>),
}

impl Chunker {
    pub fn new(sizes: [u32; 3], seed: u64) -> Self {
        let [min, avg, max] = sizes.map(|s| s as usize);
        Self {
            buf: Vec::with_capacity(2 * BATCH + max),
            start: 0,
            min,
            avg,
            max,
            masks: select_masks(avg, Normalization::Level1),
            gear: get_gear_with_seed(seed),
        }
    }

    /// Adds data; then call [`Chunker::next`] until it returns `None`.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.buf.len() + data.len() > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes waiting for a cut.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The buffer that ranges from [`Chunker::next_range`] index, valid
    /// until the next [`Chunker::push`].
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete segment; with `at_end`, also the rest.
    #[cfg(test)]
    pub fn next(&mut self, at_end: bool) -> Option<&[u8]> {
        let r = self.next_range(at_end)?;
        Some(&self.buf[r])
    }

    /// Where the next complete segment is in [`Chunker::data`].
    pub fn next_range(&mut self, at_end: bool) -> Option<std::ops::Range<usize>> {
        let avail = self.buf.len() - self.start;
        if avail == 0 || (!at_end && avail < self.max) {
            return None;
        }
        let (ms, ml) = self.masks;
        let (_, n) = cut_gear(
            &self.buf[self.start..],
            self.min,
            self.avg,
            self.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &self.gear.0,
            &self.gear.1,
        );
        if !at_end && n == avail && n < self.max {
            return None;
        }
        let s = self.start;
        self.start += n;
        Some(s..s + n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks(data: &[u8], splits: &[usize]) -> Vec<Vec<u8>> {
        let mut c = Chunker::new([4096, 16384, 65536], 42);
        let mut out = Vec::new();
        let mut pos = 0;
        for &s in splits {
            let end = (pos + s).min(data.len());
            c.push(&data[pos..end]);
            pos = end;
            while let Some(x) = c.next(false) {
                out.push(x.to_vec());
            }
        }
        c.push(&data[pos..]);
        while let Some(x) = c.next(true) {
            out.push(x.to_vec());
        }
        out
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn sizes_stay_in_bounds_and_cover_the_stream() {
        let d = pseudo_random(3 << 20, 7);
        let c = chunks(&d, &[1 << 20; 3]);
        assert_eq!(c.concat(), d);
        assert!(
            c[..c.len() - 1]
                .iter()
                .all(|x| (4096..=65536).contains(&x.len()))
        );
    }

    #[test]
    fn an_insertion_changes_few_segments() {
        let d = pseudo_random(2 << 20, 9);
        let mut e = d.clone();
        e.splice(1 << 20..1 << 20, [0xEEu8; 100]);
        let a: std::collections::HashSet<_> = chunks(&d, &[1 << 20; 2]).into_iter().collect();
        let b = chunks(&e, &[1 << 20; 2]);
        let new = b.iter().filter(|x| !a.contains(*x)).count();
        assert!(new <= 3, "{new} new segments after one insertion");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn cuts_do_not_depend_on_write_sizes(
            seed in 1u64..1000,
            splits in proptest::collection::vec(1usize..300_000, 1..20),
        ) {
            let d = pseudo_random(1 << 20, seed);
            prop_assert_eq!(chunks(&d, &splits), chunks(&d, &[d.len()]));
        }
    }
}
