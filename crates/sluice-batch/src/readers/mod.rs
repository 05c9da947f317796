//! Built-in readers.
