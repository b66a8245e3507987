//! The manifest of a PostgreSQL base backup (kind `postgres`): one object, the
//! tar stream `pg_basebackup` wrote (the data directory, the WAL it needs, its
//! `backup_manifest`); in `source` the server and its version, and where its
//! WAL starts in the archive (`system_identifier`, `timeline`, `wal_start`,
//! `wal_segment_size`).

/// The operation that makes a base backup, in manifests and object keys.
pub const SNAPSHOT: &str = "snapshot";

/// Where base backup `m`'s WAL starts in the archive: the system, the first
/// segment's position and the segment size; `None` for a backup that does not
/// record it.
pub fn wal_start(m: &super::Manifest) -> Option<(u64, super::wal::WalName, u64)> {
    let system = m.source.get("system_identifier")?.as_str()?.parse().ok()?;
    let start = super::wal::parse_name(m.source.get("wal_start")?.as_str()?)?;
    let size = m
        .source
        .get("wal_segment_size")
        .and_then(|v| v.as_u64())
        .filter(|s| s.is_power_of_two())
        .unwrap_or(super::wal::DEFAULT_SEGMENT_SIZE);
    Some((system, start, size))
}
