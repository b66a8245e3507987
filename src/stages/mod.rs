//! Byte stages: streaming `Write`/`Read` adapters that a backup is pushed through.
//!
//! Every writer stage has an explicit `finish()` that flushes it, finalises what it
//! computes (a digest, a compressed frame, the last encrypted chunk) and hands back
//! the inner writer. Nothing relies on `Drop` to complete an output: a stage that is
//! dropped unfinished leaves an output that later stages reject as incomplete.
//!
//! A backup is written as `tar → [hash] → compress → encrypt → [hash] → store`,
//! and read back in the reverse order. The expensive stages run on their own
//! threads ([`pipe::ThreadWriter`]) so that compression, encryption and upload
//! overlap.

pub mod compress;
pub mod hash;
pub mod pipe;
pub mod progress;
