//! Built-in writers.
