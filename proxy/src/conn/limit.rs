//! The per-listener connection limit (`max_connections`), shared by HTTP and TCP listeners.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts a listener's open connections against its limit.
#[derive(Debug, Default)]
pub struct ConnectionLimit {
    active: AtomicUsize,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct Admitted<'a>(&'a AtomicUsize);

impl ConnectionLimit {
    /// Admits one more connection if fewer than `max` are open.
    pub fn admit(&self, max: usize) -> Option<Admitted<'_>> {
        if self.active.fetch_add(1, Ordering::Relaxed) >= max {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted(&self.active))
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let limit = ConnectionLimit::default();
        let a = limit.admit(2).unwrap();
        let _b = limit.admit(2).unwrap();
        assert!(limit.admit(2).is_none());
        drop(a);
        assert!(limit.admit(2).is_some());
    }
}
