//! Content-defined chunking of a stream (FastCDC 2020 from the `fastcdc`
//! crate, normalization level 1). The gear table comes from the LSU's
//! fingerprint key, so cut points do not reveal content to someone who
//! knows only the public tables: chunker 2 (LSUs made by catalog format 3
//! and later) derives all 256 entries from the key; chunker 1 (older
//! LSUs, kept so their data goes on deduplicating) XORs the public table
//! with a 64-bit seed.
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

/// Where the gear table comes from.
pub enum Gear {
    /// Chunker 1: the public table XOR a seed.
    Seeded(u64),
    /// Chunker 2: a table derived from the fingerprint key.
    Table(Box<[u64; 256]>),
}

impl Chunker {
    pub fn new(sizes: [u32; 3], gear: Gear) -> Self {
        let [min, avg, max] = sizes.map(|s| s as usize);
        Self {
            buf: Vec::with_capacity(2 * BATCH + max),
            start: 0,
            min,
            avg,
            max,
            masks: select_masks(avg, Normalization::Level1),
            gear: match gear {
                Gear::Seeded(seed) => get_gear_with_seed(seed),
                Gear::Table(t) => (
                    Cow::Owned(t.to_vec()),
                    Cow::Owned(t.iter().map(|g| g << 1).collect()),
                ),
            },
        }
    }

    /// Adds data; then call [`Chunker::next_range`] until it returns `None`.
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
    /// Hands over the buffer holding the bytes cut so far (the ranges
    /// [`Chunker::next_range`] returned index into it) and goes on in
    /// `spare` with the bytes not cut yet.
    pub fn take_consumed(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        spare.reserve(self.buf.capacity());
        spare.extend_from_slice(&self.buf[self.start..]);
        self.buf.truncate(self.start);
        self.start = 0;
        std::mem::replace(&mut self.buf, spare)
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
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
        let mut c = Chunker::new([4096, 16384, 65536], Gear::Seeded(42));
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

    #[test]
    fn sizes_stay_in_bounds_and_cover_the_stream() {
        let d = crate::testing::pseudo_random(3 << 20, 7);
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
        let d = crate::testing::pseudo_random(2 << 20, 9);
        let mut e = d.clone();
        e.splice(1 << 20..1 << 20, [0xEEu8; 100]);
        let a: std::collections::HashSet<_> = chunks(&d, &[1 << 20; 2]).into_iter().collect();
        let b = chunks(&e, &[1 << 20; 2]);
        let new = b.iter().filter(|x| !a.contains(*x)).count();
        assert!(new <= 3, "{new} new segments after one insertion");
    }

    /// Chunker 2's gear table is no public table XORed with a constant:
    /// every entry comes from the key, and another key gives another table.
    #[test]
    fn the_gear_table_is_a_prf_of_the_whole_key() {
        use crate::crypto::{SecretKey, gear_table};
        let k = SecretKey::from_slice(&[0x42; 32]).unwrap();
        let t = gear_table(&k);
        let (public, _) = fastcdc::v2020::get_gear_with_seed(0);
        let xors: std::collections::HashSet<u64> =
            t.iter().zip(public.iter()).map(|(a, b)| a ^ b).collect();
        assert!(xors.len() > 250, "not the public table XOR a seed");
        // Pinned (Python: hkdf expand with the key as PRK, info "kmsfs chunker gear v2").
        assert_eq!(t[0], GEAR_0);
        let k2 = SecretKey::from_slice(&[0x43; 32]).unwrap();
        assert_ne!(gear_table(&k2)[0], t[0]);
        let d = crate::testing::pseudo_random(1 << 20, 3);
        let mut a = Chunker::new([4096, 16384, 65536], Gear::Table(gear_table(&k)));
        a.push(&d);
        let mut n = 0;
        while a.next(true).is_some() {
            n += 1;
        }
        assert!(
            (20..200).contains(&n),
            "{n} segments of about 16 KiB in 1 MiB"
        );
    }
    const GEAR_0: u64 = 8949457861138852740;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn cuts_do_not_depend_on_write_sizes(
            seed in 1u64..1000,
            splits in proptest::collection::vec(1usize..300_000, 1..20),
        ) {
            let d = crate::testing::pseudo_random(1 << 20, seed);
            prop_assert_eq!(chunks(&d, &splits), chunks(&d, &[d.len()]));
        }

        /// The LSU writer hands each batch's buffer to its sealing stage
        /// and goes on in another: the segments are the same.
        #[test]
        fn cuts_do_not_depend_on_handing_buffers_over(
            seed in 1u64..1000,
            splits in proptest::collection::vec(1usize..300_000, 1..20),
        ) {
            let d = crate::testing::pseudo_random(1 << 20, seed);
            prop_assert_eq!(chunks_handed_over(&d, &splits), chunks(&d, &[d.len()]));
        }
    }

    fn chunks_handed_over(data: &[u8], splits: &[usize]) -> Vec<Vec<u8>> {
        let mut c = Chunker::new([4096, 16384, 65536], Gear::Seeded(42));
        let mut out = Vec::new();
        let mut spare = Vec::new();
        let mut cut = |c: &mut Chunker, at_end: bool| {
            let mut ranges = Vec::new();
            while let Some(r) = c.next_range(at_end) {
                ranges.push(r);
            }
            let buf = c.take_consumed(std::mem::take(&mut spare));
            out.extend(ranges.into_iter().map(|r| buf[r].to_vec()));
            spare = buf;
        };
        let mut pos = 0;
        for &s in splits {
            let end = (pos + s).min(data.len());
            c.push(&data[pos..end]);
            pos = end;
            cut(&mut c, false);
        }
        c.push(&data[pos..]);
        cut(&mut c, true);
        out
    }
}
