//! The manifest of a PostgreSQL base backup (kind `postgres`): one object, the
//! tar stream `pg_basebackup` wrote (the data directory, the WAL it needs, its
//! `backup_manifest`); in `source` the server and its version, and where its
//! WAL starts in the archive (`system_identifier`, `timeline`, `wal_start`,
//! `wal_segment_size`).

/// The operation that makes a base backup, in manifests and object keys.
pub const SNAPSHOT: &str = "snapshot";

/// The system base backup `m` is of, where it records one.
pub fn system(m: &super::Manifest) -> Option<u64> {
    m.source.get("system_identifier")?.as_str()?.parse().ok()
}

/// Where base backup `m`'s WAL starts in the archive: the system, the first
/// segment's position and the segment size; `None` for a backup that does not
/// record it, or records a segment size PostgreSQL cannot have (PostgreSQL 10
/// gave it in 8 kB blocks, and the start was named by it): its start is
/// then unknown.
pub fn wal_start(m: &super::Manifest) -> Option<(u64, super::wal::WalName, u64)> {
    let system = system(m)?;
    let start = super::wal::parse_name(m.source.get("wal_start")?.as_str()?)?;
    let size = match m.source.get("wal_segment_size") {
        None => super::wal::DEFAULT_SEGMENT_SIZE,
        Some(v) => v.as_u64().filter(|&s| super::wal::is_segment_size(s))?,
    };
    Some((system, start, size))
}

/// Of the base backups `kept`, those whose WAL start cannot be read, by
/// system: each may need any archived WAL of its system, so none of it is
/// trimmed. `Err`: one that names no system either, which may need any WAL
/// at all.
pub fn unknown_starts(
    kept: &[super::Manifest],
) -> Result<std::collections::BTreeMap<u64, crate::id::BackupId>, crate::id::BackupId> {
    let mut unknown = std::collections::BTreeMap::new();
    for m in kept.iter().filter(|m| wal_start(m).is_none()) {
        unknown.entry(system(m).ok_or(m.id)?).or_insert(m.id);
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use serde_json::json;

    #[test]
    fn a_base_backup_whose_start_cannot_be_read_keeps_its_systems_wal() {
        let at = time::OffsetDateTime::now_utc();
        let base = |facts: serde_json::Value| {
            let mut m = crate::manifest::tests::sample(Kind::Postgres, at);
            m.id = crate::id::BackupId::new_v7(at);
            m.source = serde_json::from_value(facts).unwrap();
            m
        };
        let known =
            base(json!({"system_identifier": "11", "wal_start": "000000010000000000000003"}));
        let sized = base(
            json!({"system_identifier": "11", "wal_start": "000000010000000000000003", "wal_segment_size": 1 << 26}),
        );
        assert_eq!(
            wal_start(&known).map(|(s, w, n)| (s, w.position, n)),
            Some((11, 3, 16 << 20))
        );
        assert_eq!(wal_start(&sized).map(|(_, _, n)| n), Some(1 << 26));
        // PostgreSQL 10's size in 8 kB blocks named the start by it.
        let blocks = base(
            json!({"system_identifier": "12", "wal_start": "000000010000000000008000", "wal_segment_size": 2048}),
        );
        let startless = base(json!({"system_identifier": "13"}));
        assert_eq!(wal_start(&blocks), None);
        let got =
            unknown_starts(&[known.clone(), sized, blocks.clone(), startless.clone()]).unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![(12, blocks.id), (13, startless.id)]
        );
        let nameless = base(json!({"wal_start": "000000010000000000000003"}));
        assert_eq!(unknown_starts(&[known, nameless.clone()]), Err(nameless.id));
    }
}
