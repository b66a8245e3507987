//! The sources the conformance suite in `tests/sources.rs` runs: one file per source,
//! each with the `Source`s of its kinds.

pub mod duckdb;
pub mod parquet;
pub mod postgres;
pub mod sqlite;
pub mod tigerbeetle;
