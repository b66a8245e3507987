//! The manifest of a PostgreSQL base backup (kind `postgres`): one object, the
//! tar stream `pg_basebackup` wrote (the data directory, the WAL it needs, its
//! `backup_manifest`); in `source` the server and its version, and where its
//! WAL starts in the archive (`system_identifier`, `timeline`, `wal_start`,
//! `wal_segment_size`).

use std::collections::BTreeMap;

/// The operation that makes a base backup, in manifests and object keys.
pub const SNAPSHOT: &str = "snapshot";

/// The system base backup `m` is of, where it records one.
pub fn system(m: &super::Manifest) -> Option<u64> {
    super::facts::system_identifier(m.source.get("system_identifier")?)
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

/// The archived WAL the base backups `kept` (of any kind; those of others
/// are passed over) may need, by system: from the first segment of the
/// oldest, or all of it where one's start cannot be read (that backup's id).
/// `Err`: a base backup that names no system either, which may need any WAL
/// at all. What `cleanup` keeps in the archive and `bkp copy` copies.
pub fn wal_needed<'a>(
    kept: impl IntoIterator<Item = &'a super::Manifest>,
) -> Result<BTreeMap<u64, Needed>, crate::id::BackupId> {
    let mut needed = BTreeMap::new();
    for m in kept.into_iter().filter(|m| m.kind == super::Kind::Postgres) {
        let (system, from) = match wal_start(m) {
            Some((system, start, _)) => (system, Needed::From(start.position)),
            None => (system(m).ok_or(m.id)?, Needed::All(m.id)),
        };
        // `All` orders before every position.
        let n = needed.entry(system).or_insert(from);
        *n = (*n).min(from);
    }
    Ok(needed)
}

/// What a system's kept base backups need of its archived WAL ([`wal_needed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Needed {
    /// All of it: base backup ID records no start bkp can read.
    All(crate::id::BackupId),
    /// From this position (log id and segment, as [`super::wal::WalName`]).
    From(u64),
}

impl Needed {
    /// The first position needed.
    pub fn from(self) -> u64 {
        match self {
            Needed::All(_) => 0,
            Needed::From(p) => p,
        }
    }
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
        let startless = base(json!({"system_identifier": 13}));
        let later =
            base(json!({"system_identifier": "13", "wal_start": "000000010000000000000009"}));
        assert_eq!(wal_start(&blocks), None);
        let dump = crate::manifest::tests::sample(Kind::Pgdump, at);
        let got = wal_needed([&known, &sized, &blocks, &startless, &later, &dump]).unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![
                (11, Needed::From(3)),
                (12, Needed::All(blocks.id)),
                (13, Needed::All(startless.id))
            ]
        );
        assert_eq!(Needed::All(blocks.id).from(), 0);
        let nameless = base(json!({"wal_start": "000000010000000000000003"}));
        assert_eq!(wal_needed([&known, &nameless]), Err(nameless.id));
    }
}
