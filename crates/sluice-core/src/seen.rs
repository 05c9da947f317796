//! [`SeenOnce`]: names a process has already handled, guarding a hot path.

use std::collections::HashSet;
use std::sync::Mutex;

/// A set of names this process has already done something for once (created a
/// row, registered a queue name), so that the hot path skips the round trip
/// afterwards. Shared by reference; a poisoned lock is recovered, since the set
/// only ever grows and a lost entry costs one more (idempotent) round trip.
#[derive(Debug, Default)]
pub struct SeenOnce(Mutex<HashSet<String>>);

impl SeenOnce {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `name` was [marked](Self::mark) before.
    pub fn seen(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Remembers `name` (after the one-time work for it succeeded).
    pub fn mark(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::SeenOnce;

    #[test]
    fn marks_are_remembered_per_name() {
        let s = SeenOnce::new();
        assert!(!s.seen("a"));
        s.mark("a");
        assert!(s.seen("a"));
        assert!(!s.seen("b"));
    }
}
