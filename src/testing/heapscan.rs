//! A global allocator for the unit tests that looks into every block freed
//! while a needle is armed: a test arms the bytes of a key, runs code that
//! handles the key, and learns whether a copy of it was left in freed heap
//! (a `Vec` that grew by reallocation leaves its old buffer behind, unwiped).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub struct Scanning;

static ARMED: AtomicBool = AtomicBool::new(false);
static NEEDLE: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
static HITS: AtomicUsize = AtomicUsize::new(0);
/// One armed test at a time.
static LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn needle() -> [u8; 32] {
    let mut n = [0u8; 32];
    for (i, w) in NEEDLE.iter().enumerate() {
        n[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::SeqCst).to_le_bytes());
    }
    n
}

/// Runs `f` with `key` armed; returns how many freed blocks held it.
pub fn freed_copies(key: &[u8; 32], f: impl FnOnce()) -> usize {
    let _one = LOCK.lock();
    for (i, w) in NEEDLE.iter().enumerate() {
        w.store(
            u64::from_le_bytes(key[i * 8..i * 8 + 8].try_into().expect("8")),
            Ordering::SeqCst,
        );
    }
    HITS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    f();
    ARMED.store(false, Ordering::SeqCst);
    HITS.load(Ordering::SeqCst)
}

#[allow(unsafe_code)]
// SAFETY: every call is forwarded to the system allocator unchanged; the
// only addition reads a block that is still allocated, before freeing it.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) && layout.size() >= 32 {
            // SAFETY: `ptr` points to `layout.size()` bytes we allocated
            // and that are not freed yet.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let n = needle();
            if block.windows(32).any(|w| w == n) {
                HITS.fetch_add(1, Ordering::SeqCst);
            }
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation may move the block and free the old one without
        // wiping it: do it as alloc + copy + dealloc so the old block is seen.
        // SAFETY: the new layout has the old alignment and a non-zero size.
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the sizes.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
