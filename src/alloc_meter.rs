//! A counting global allocator: the peak of live heap bytes and the largest single allocation
//! over a stretch of code. Install [`PeakAlloc`] with `#[global_allocator]` in a binary or test,
//! then measure with [`PeakScope`]. The crate's allocation-bound tests and fuzz targets use it;
//! it is also a cheap way to see what loading a model allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their peak. Install it with
/// `#[global_allocator]` in each target.
pub struct PeakAlloc;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
    LARGEST.fetch_max(by, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

/// Measures the peak of live heap bytes above the level at which it was started.
pub struct PeakScope {
    base: usize,
}

impl PeakScope {
    /// Starts measuring now.
    pub fn start() -> Self {
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        LARGEST.store(0, Relaxed);
        Self { base }
    }

    /// The largest single allocation (or reallocation) since `start`.
    pub fn largest(&self) -> usize {
        LARGEST.load(Relaxed)
    }

    /// The most bytes live at once since `start`, above the starting level.
    pub fn peak(&self) -> usize {
        PEAK.load(Relaxed).saturating_sub(self.base)
    }
}

