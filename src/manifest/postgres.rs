//! The manifest of a PostgreSQL base backup (kind `postgres`): one object, the
//! tar stream `pg_basebackup` wrote (the data directory, the WAL it needs, its
//! `backup_manifest`); in `source` the server and its version.

/// The operation that makes a base backup, in manifests and object keys.
pub const SNAPSHOT: &str = "snapshot";
