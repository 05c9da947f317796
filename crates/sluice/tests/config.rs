//! Config validation (issue #3 acceptance point 10).
