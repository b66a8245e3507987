//! Everything that talks to a TigerBeetle cluster or process: the one client
//! ([`client`], with [`change_events`] for the one operation the client crate does
//! not wrap), private replicas ([`replica`]), and the change capture and replay
//! behind point-in-time recovery ([`tblog`]). The code-12 audit ledger
//! (`crate::ledger`) builds on the same client. Nothing here reads bkp's
//! configuration: callers pass the small spec structs these modules define.

/// The TigerBeetle release of the client library bkp links.
pub const CLIENT_RELEASE: &str = "0.16.78";

pub mod change_events;
pub mod client;
pub mod replica;
pub mod tblog;
