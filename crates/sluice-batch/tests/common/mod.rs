//! Scratch databases for the batch tests: the test kit's, by their old names here.

#![allow(unused_imports)]

pub(crate) use sluice_testkit::db::{Server, ServerDb, admin_url, with_database};

use sluice_batch::{Chunk, Item, WriteError, Writer};

/// A chunk of items written with nothing to commit alongside (what most tests do).
#[allow(dead_code)]
pub(crate) trait WriteItems {
    /// [`Writer::write`] of `items`, no commit statements.
    async fn write_items(&mut self, items: &[Item]) -> Result<(), WriteError>;
}

impl<W: Writer + ?Sized> WriteItems for W {
    async fn write_items(&mut self, items: &[Item]) -> Result<(), WriteError> {
        self.write(Chunk::Items(items), &[]).await.map(drop)
    }
}
