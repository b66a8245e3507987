//! A backup in brief: what a listing shows of a manifest and what its chain is
//! judged on (see `crate::chain`), in a tenth of the memory of the whole
//! manifest, so that a run that must look at every backup of a history years
//! long holds these and not the manifests.

use time::{OffsetDateTime, UtcOffset};

use super::shared::Shared;
use super::tigerbeetle::{cluster_id, interval, snapshot_newest};
use super::{Kind, Manifest, Scope, Status};
use crate::id::BackupId;

/// One backup's row: its identity, its place in a chain and its sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Brief {
    pub id: BackupId,
    /// Its parent's id where it has one ([`PARENT`]; an `Option` would take
    /// a byte more, and with the cluster's the row 8 more).
    parent: BackupId,
    /// [`PARENT`], [`CLUSTER`], [`NOTE`].
    flags: u8,
    pub kind: Kind,
    pub scope: Scope,
    pub status: Status,
    pub operation: Shared,
    pub started_at: OffsetDateTime,
    /// Nanoseconds from its start to its end, and the end's offset from UTC
    /// (see [`Brief::finished_at`]).
    took: i64,
    finished_offset: UtcOffset,
    /// [`Manifest::stored_bytes`].
    pub stored_bytes: u64,
    /// The bytes of the files it holds.
    pub content_bytes: u64,
    /// The id of the key that sealed it, where it is encrypted.
    pub key_id: Option<Shared>,
    /// Where a TigerBeetle log segment or snapshot sits in its cluster's
    /// log, read once from its source facts: what, and its two numbers.
    position: Position,
    numbers: [u64; 2],
    /// The cluster a TigerBeetle backup names, where it names one
    /// ([`CLUSTER`]), as 16 bytes (an `u128` would double the alignment of
    /// the whole row).
    cluster: [u8; 16],
}

/// It names a parent.
const PARENT: u8 = 1;
/// It names a cluster.
const CLUSTER: u8 = 2;
/// It stored nothing ([`Manifest::is_note`]).
const NOTE: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    None,
    /// A log segment's interval, `(after, until]` ([`interval`]).
    Log,
    /// A snapshot's newest timestamp, where its rows were counted
    /// ([`snapshot_newest`]).
    Snapshot,
}

// The budget: ten years of 15-minute segments (365,000) in 50 MiB.
const _: () = assert!(std::mem::size_of::<Brief>() <= 144);

impl Brief {
    pub fn of(m: &Manifest) -> Brief {
        let position = match (interval(m), snapshot_newest(m)) {
            (Some((after, until)), _) => (Position::Log, [after, until]),
            (None, Some(newest)) => (Position::Snapshot, [newest, 0]),
            (None, None) => (Position::None, [0, 0]),
        };
        // Beyond ±292 years the end is kept as the start (no run takes that
        // long: only a manifest that is not bkp's).
        let took = i64::try_from((m.finished_at - m.started_at).whole_nanoseconds()).unwrap_or(0);
        let cluster = cluster_id(m);
        Brief {
            id: m.id,
            parent: m.parent.unwrap_or(BackupId::from_u128(0)),
            flags: if m.parent.is_some() { PARENT } else { 0 }
                | if cluster.is_some() { CLUSTER } else { 0 }
                | if m.is_note() { NOTE } else { 0 },
            kind: m.kind,
            scope: m.scope,
            status: m.status,
            operation: m.operation.clone(),
            started_at: m.started_at,
            took,
            finished_offset: m.finished_at.offset(),
            stored_bytes: m.stored_bytes(),
            content_bytes: m.files.iter().fold(0, |n, f| n.saturating_add(f.size)),
            key_id: m.encryption.as_ref().map(|e| e.key_id.clone()),
            position: position.0,
            numbers: position.1,
            cluster: cluster.unwrap_or(0).to_be_bytes(),
        }
    }

    /// When it finished, at the offset from UTC its manifest gave (its
    /// start where that lies beyond what a time can say).
    pub fn finished_at(&self) -> OffsetDateTime {
        self.started_at
            .checked_to_offset(UtcOffset::UTC)
            .and_then(|t| t.checked_add(time::Duration::nanoseconds(self.took)))
            .and_then(|t| t.checked_to_offset(self.finished_offset))
            .unwrap_or(self.started_at)
    }

    /// It stored nothing ([`Manifest::is_note`]).
    pub fn is_note(&self) -> bool {
        self.flags & NOTE != 0
    }

    /// The backup it builds on, if any.
    pub fn parent(&self) -> Option<BackupId> {
        (self.flags & PARENT != 0).then_some(self.parent)
    }

    /// The key of its manifest.
    pub fn key(&self) -> String {
        super::manifest_key(self.kind, self.id)
    }

    /// The cluster a TigerBeetle backup names ([`cluster_id`]).
    pub fn cluster(&self) -> Option<u128> {
        (self.flags & CLUSTER != 0).then_some(u128::from_be_bytes(self.cluster))
    }

    /// [`interval`], as read when the row was made.
    pub fn interval(&self) -> Option<(u64, u64)> {
        match self.position {
            Position::Log => Some((self.numbers[0], self.numbers[1])),
            _ => None,
        }
    }

    /// [`snapshot_newest`], as read when the row was made.
    pub fn snapshot_newest(&self) -> Option<u64> {
        match self.position {
            Position::Snapshot => Some(self.numbers[0]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_brief_reads_the_facts_a_chain_is_judged_on_as_the_manifest_does() {
        let raw = json!({
            "schema": "bkp.manifest/1.0", "id": "019a0000-0000-7000-8000-000000000001",
            "kind": "tigerbeetle", "scope": "incremental", "operation": "logs",
            "status": "completed", "started_at": "2026-11-20T00:00:00.5Z",
            "finished_at": "2026-11-20T00:00:05Z", "host": "h", "bkp_version": "0",
            "retention_days": 1, "compression": {"algorithm": "zstd", "level": 3, "threads": 2},
            "encryption": {"format": "f", "key_id": "k1"},
            "objects": [{"key": "a", "size": 7, "sha256": "", "content_bytes": 1, "content_sha256": ""}],
            "files": [{"name": "x", "size": 30, "sha256": ""}],
            "parent": "019a0000-0000-7000-8000-000000000000",
            "source": {"cluster_id": "340282366920938463463374607431768211455",
                       "after": "10", "until": "20"}
        });
        let m: Manifest = serde_json::from_value(raw).unwrap();
        let b = Brief::of(&m);
        assert_eq!(b.interval(), interval(&m));
        assert_eq!(b.interval(), Some((10, 20)));
        assert_eq!(b.cluster(), cluster_id(&m));
        assert_eq!(b.cluster(), Some(u128::MAX));
        assert_eq!(b.snapshot_newest(), None);
        assert_eq!((b.stored_bytes, b.content_bytes), (7, 30));
        assert_eq!(b.key_id.as_deref(), Some("k1"));
        assert_eq!(
            (b.started_at, b.parent(), b.key()),
            (m.started_at, m.parent, m.key())
        );
        assert_eq!(b.finished_at(), m.finished_at);
        let at = |b: &Brief| {
            b.finished_at()
                .format(&time::format_description::well_known::Rfc3339)
        };
        assert_eq!(at(&b).unwrap(), "2026-11-20T00:00:05Z");
        // An end at another offset than the start is listed as it was given,
        // and one past what a time can say at the start's offset is no panic.
        let mut other = m.clone();
        other.started_at = time::macros::datetime!(9999-12-31 23:30 +01:00);
        other.finished_at = time::macros::datetime!(9999-12-31 23:00 UTC);
        let b = Brief::of(&other);
        assert_eq!(at(&b).unwrap(), "9999-12-31T23:00:00Z");
        other.finished_at = time::macros::datetime!(2026-11-20 02:00 +02:00);
        other.started_at = time::macros::datetime!(2026-11-19 23:59 UTC);
        assert_eq!(at(&Brief::of(&other)).unwrap(), "2026-11-20T02:00:00+02:00");
        let mut plain = m.clone();
        (plain.parent, plain.source) = (None, Default::default());
        let b = Brief::of(&plain);
        assert_eq!((b.parent(), b.cluster(), b.interval()), (None, None, None));
        assert!(!b.is_note());
    }
}
