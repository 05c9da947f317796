//! Scratch databases for the batch tests: the test kit's, by their old names here.

#![allow(unused_imports)]

pub(crate) use sluice_testkit::db::{Server, ServerDb, admin_url, with_database};
