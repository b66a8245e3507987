//! What bkp backs up: each source turns its data into files that are safe to read.

pub mod duck;
pub mod postgres;
pub mod stop_window;
pub mod tigerbeetle;
