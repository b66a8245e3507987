//! The manifest of a PostgreSQL dump (kind `pgdump`): one object, the
//! custom-format archive `pg_dump` wrote, and in `source` the database, the
//! server's and `pg_dump`'s versions.

/// The operation that makes a dump, in manifests and object keys.
pub const OPERATION: &str = "export";
