//! Gives freed heap memory back to the operating system. Idle HTTP/1.1 connections let go of
//! their buffers when they are parked; glibc keeps freed memory for reuse, so a burst of
//! connections that then idle would keep the process's memory at its peak. Once enough has been
//! freed since the last time, the maintenance loop asks glibc to return unused pages
//! (`malloc_trim`), at most once per tick.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes freed by parked connections since the last trim.
static FREED: AtomicU64 = AtomicU64::new(0);

/// Trim once at least this much was freed (a few hundred parked connections).
const TRIM_AFTER_BYTES: u64 = 4 << 20;

/// Records that about `bytes` of heap were freed.
pub fn note_freed(bytes: u64) {
    FREED.fetch_add(bytes, Ordering::Relaxed);
}

/// Returns unused heap pages to the OS when enough was freed since the last call that did.
pub fn trim_if_worthwhile() {
    if FREED.load(Ordering::Relaxed) < TRIM_AFTER_BYTES {
        return;
    }
    FREED.store(0, Ordering::Relaxed);
    trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
