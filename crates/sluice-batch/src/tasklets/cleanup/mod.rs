//! Cleanup tasklets: old rows deleted or archived ([`RowCleanup`],
//! `kind = "cleanup"`) and old files deleted ([`FileCleanup`],
//! `kind = "file_cleanup"`). Both report what they removed in the step's counts
//! (`read`: rows or files found, `written`: removed, `commits`: batches).

mod config;
mod files;
mod rows;

pub use config::{RawCleanupTasklet, RawFileCleanupTasklet};
pub use files::{FileCleanup, wildcard};
pub use rows::{AgeColumn, Archive, RowCleanup};
