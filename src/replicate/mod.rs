//! Replication of the Parquet cold tier: its configuration, where the files come
//! from, the glob filter, and the record each run keeps of the replicated set.
//!
//! The recipes themselves live in `commands::replicate` (backup) and
//! `commands::replicate_restore` (restore).

pub mod config;
pub mod copy;
pub mod glob;
pub mod record;
pub mod source;
