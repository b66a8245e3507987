//! Chains of backups, analysed in one place: a log segment meets the one before
//! it, an incremental export reaches its full export, a segment whose older
//! predecessors retention removed is covered by a snapshot, and the segments that
//! carry a restored snapshot up to a point in time leave no gap.
//!
//! Pure functions of the manifests: `list` shows [`Link`]s, `logs` warns about
//! [`Index::log_breaks`], `verify` reports [`Index::problems`], restore walks
//! [`Index::ancestry`] and [`log_cover`]. Every decision is taken on these typed
//! values; their `Display` is for people only.

use std::collections::BTreeSet;
use std::fmt;

use time::OffsetDateTime;

use crate::id::BackupId;
use crate::manifest::brief::Brief;
use crate::manifest::tigerbeetle::{self, LOGS};
use crate::manifest::{Kind, Manifest, Scope};

/// What a chain is judged on: a whole manifest, or its [`Brief`] where a run
/// looks at every backup of a long history.
pub trait Member {
    fn id(&self) -> BackupId;
    fn parent(&self) -> Option<BackupId>;
    fn kind(&self) -> Kind;
    fn scope(&self) -> Scope;
    fn operation(&self) -> &str;
    fn started_at(&self) -> OffsetDateTime;
    /// [`tigerbeetle::interval`].
    fn interval(&self) -> Option<(u64, u64)>;
    /// [`tigerbeetle::snapshot_newest`].
    fn snapshot_newest(&self) -> Option<u64>;
    /// [`Manifest::is_note`].
    fn is_note(&self) -> bool;
    /// [`tigerbeetle::cluster_id`].
    fn cluster(&self) -> Option<u128>;

    /// [`tigerbeetle::is_log_of`]: a log segment of `cluster`, or one that
    /// names no cluster.
    fn is_log_of(&self, cluster: u128) -> bool {
        self.operation() == LOGS && self.cluster().is_none_or(|c| c == cluster)
    }
}

impl Member for Manifest {
    fn id(&self) -> BackupId {
        self.id
    }
    fn parent(&self) -> Option<BackupId> {
        self.parent
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    fn scope(&self) -> Scope {
        self.scope
    }
    fn operation(&self) -> &str {
        &self.operation
    }
    fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }
    fn interval(&self) -> Option<(u64, u64)> {
        tigerbeetle::interval(self)
    }
    fn snapshot_newest(&self) -> Option<u64> {
        tigerbeetle::snapshot_newest(self)
    }
    fn is_note(&self) -> bool {
        Manifest::is_note(self)
    }
    fn cluster(&self) -> Option<u128> {
        tigerbeetle::cluster_id(self)
    }
}

impl Member for Brief {
    fn id(&self) -> BackupId {
        self.id
    }
    fn parent(&self) -> Option<BackupId> {
        Brief::parent(self)
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    fn scope(&self) -> Scope {
        self.scope
    }
    fn operation(&self) -> &str {
        &self.operation
    }
    fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }
    fn interval(&self) -> Option<(u64, u64)> {
        Brief::interval(self)
    }
    fn snapshot_newest(&self) -> Option<u64> {
        Brief::snapshot_newest(self)
    }
    fn is_note(&self) -> bool {
        Brief::is_note(self)
    }
    fn cluster(&self) -> Option<u128> {
        Brief::cluster(self)
    }
}

/// What is wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A log segment that does not start at the beginning names no parent, and no
    /// snapshot covers what came before it.
    NoParent { after: u64 },
    /// The parent a backup names is not in the store (and no snapshot covers it).
    ParentMissing { parent: BackupId },
    /// A log segment does not start where its parent ended.
    Gap {
        parent: BackupId,
        until: u64,
        after: u64,
    },
    /// An incremental (of a kind that is not a log) names no parent.
    IncrementalWithoutParent { id: BackupId },
    /// A backup further up an incremental's chain is not in the store.
    AncestorMissing { ancestor: BackupId },
    /// The parents loop.
    Cycle { through: BackupId },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::NoParent { after } => write!(f, "starts at {after} with no parent"),
            Break::ParentMissing { parent } => write!(f, "parent {parent} missing"),
            Break::Gap {
                parent,
                until,
                after,
            } => write!(f, "gap ({until}, {after}] after {parent}"),
            Break::IncrementalWithoutParent { id } => {
                write!(f, "incremental {id} names no parent")
            }
            Break::AncestorMissing { ancestor } => write!(f, "ancestor {ancestor} missing"),
            Break::Cycle { through } => write!(f, "a cycle through {through}"),
        }
    }
}

/// How a backup sits in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A backup that builds on nothing (a full backup, the first log segment).
    Standalone,
    /// A link that meets its parent.
    After(BackupId),
    /// The oldest log segment left after retention removed older ones: the
    /// snapshot holds what they held.
    AfterSnapshot(BackupId),
    Broken(Break),
}

impl Link {
    pub fn broken(&self) -> Option<&Break> {
        match self {
            Link::Broken(b) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Standalone => f.write_str("-"),
            Link::After(p) => write!(f, "after {p}"),
            Link::AfterSnapshot(s) => write!(f, "after snapshot {s}"),
            Link::Broken(b) => write!(f, "BROKEN: {b}"),
        }
    }
}

/// The manifests of a store (or of one kind), or their briefs, oldest first,
/// indexed by id.
pub struct Index<'a, M: Member = Manifest> {
    all: &'a [M],
    /// Each id with its place in `all`, in order: ten years of backups in
    /// 7 MiB, where a hash map of them takes 13.
    by_id: Vec<(BackupId, u32)>,
}

impl<'a, M: Member> Index<'a, M> {
    pub fn new(all: &'a [M]) -> Self {
        let mut by_id: Vec<(BackupId, u32)> = all
            .iter()
            .zip(0..u32::MAX)
            .map(|(m, i)| (m.id(), i))
            .collect();
        by_id.sort_unstable();
        Index { all, by_id }
    }

    /// The backup with id `id`; of an id listed twice (under two kinds), the
    /// later in `all`.
    pub fn get(&self, id: BackupId) -> Option<&'a M> {
        let end = self.by_id.partition_point(|(k, _)| *k <= id);
        let (k, i) = *self.by_id.get(end.checked_sub(1)?)?;
        (k == id).then(|| &self.all[i as usize])
    }

    /// How `m` sits in its chain.
    pub fn link(&self, m: &M) -> Link {
        let Some(parent) = m.parent() else {
            return match m.interval() {
                Some((0, _)) | None => Link::Standalone,
                Some((after, _)) => match self.covering_snapshot(m) {
                    Some(s) => Link::AfterSnapshot(s),
                    None => Link::Broken(Break::NoParent { after }),
                },
            };
        };
        let Some(p) = self.get(parent) else {
            return match self.covering_snapshot(m) {
                Some(s) if m.kind().replays_log() => Link::AfterSnapshot(s),
                _ => Link::Broken(Break::ParentMissing { parent }),
            };
        };
        match (p.interval(), m.interval()) {
            (Some((_, until)), Some((after, _))) if until != after => Link::Broken(Break::Gap {
                parent,
                until,
                after,
            }),
            _ => Link::After(parent),
        }
    }

    /// For a log segment whose predecessor is gone: the snapshot that holds
    /// everything before it, if any. With the snapshot's newest TigerBeetle
    /// timestamp recorded (`tigerbeetle.count_rows`) that is exact: the segment
    /// starts at or before it. Otherwise: the newest snapshot that started before
    /// the segment, with no other segment between the two.
    pub fn covering_snapshot(&self, m: &M) -> Option<BackupId> {
        let (after, _) = m.interval()?;
        let before = |x: &&M| x.kind() == m.kind() && x.started_at() < m.started_at();
        let snap = self
            .all
            .iter()
            .filter(before)
            .filter(|x| x.scope() == Scope::Full)
            .max_by_key(|x| x.started_at())?;
        if let Some(newest) = snap.snapshot_newest() {
            return (after <= newest).then_some(snap.id());
        }
        let between = self
            .all
            .iter()
            .filter(before)
            .any(|x| x.operation() == m.operation() && x.started_at() > snap.started_at());
        (!between).then_some(snap.id())
    }

    /// Every log segment whose link is broken, with the break: each makes
    /// point-in-time recovery across it impossible.
    pub fn log_breaks(&self) -> Vec<(BackupId, Break)> {
        self.all
            .iter()
            .filter(|m| m.operation() == LOGS)
            .filter_map(|m| match self.link(m) {
                Link::Broken(b) => Some((m.id(), b)),
                _ => None,
            })
            .collect()
    }

    /// The chain ending at `head`, its full backup first: `head` itself for a full
    /// backup, else its parents up to the first full one.
    pub fn ancestry<'m>(&self, head: &'m M) -> Result<Vec<&'m M>, Break>
    where
        'a: 'm,
    {
        let mut out = vec![head];
        let mut seen = BTreeSet::new();
        let mut cur = head;
        while cur.scope() == Scope::Incremental {
            let parent = cur
                .parent()
                .ok_or(Break::IncrementalWithoutParent { id: cur.id() })?;
            let p = self.get(parent).ok_or(if cur.id() == head.id() {
                Break::ParentMissing { parent }
            } else {
                Break::AncestorMissing { ancestor: parent }
            })?;
            if !seen.insert(parent) {
                return Err(Break::Cycle { through: parent });
            }
            out.push(p);
            cur = p;
        }
        out.reverse();
        Ok(out)
    }

    /// Every break of `m`'s chain: its own link, and for an incremental of a kind
    /// that is not a log, whether its parents reach a full backup (a missing
    /// direct parent is reported once, by the link).
    pub fn problems(&self, m: &M) -> Vec<Break> {
        let mut out: Vec<Break> = self.link(m).broken().cloned().into_iter().collect();
        if m.scope() == Scope::Incremental && !m.kind().replays_log() {
            match self.ancestry(m) {
                Err(Break::ParentMissing { .. }) | Ok(_) => {}
                Err(b) => out.push(b),
            }
        }
        out
    }
}

/// A hole in the log between a restored state and the point it must reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    /// The segment that starts after the hole.
    pub next: BackupId,
    /// Covered up to here…
    pub reached: u64,
    /// … and the next segment starts here.
    pub after: u64,
}

/// The log segments (with data) that carry a state whose newest timestamp is
/// `from` up to timestamp `to`, in order, with how far they reach; a [`Hole`]
/// when they do not meet. The reach may stop short of `to` when the log has not
/// been captured that far.
pub fn log_cover<M: Member>(all: &[M], from: u64, to: u64) -> Result<(Vec<&M>, u64), Hole> {
    let mut logs: Vec<(&M, u64, u64)> = all
        .iter()
        .filter(|m| !m.is_note())
        .filter_map(|m| m.interval().map(|(a, u)| (m, a, u)))
        .filter(|(_, after, until)| log_needed(*after, *until, from, to))
        .collect();
    logs.sort_by_key(|(_, after, _)| *after);
    let mut reached = from;
    for (m, after, until) in &logs {
        if *after > reached {
            return Err(Hole {
                next: m.id(),
                reached,
                after: *after,
            });
        }
        reached = reached.max(*until);
    }
    Ok((logs.into_iter().map(|(m, _, _)| m).collect(), reached))
}

/// Whether a log segment of interval `(after, until]` may hold rows that a state
/// whose newest timestamp is `from` lacks, up to `to`. A segment ending exactly at
/// `from` may: a row imported after that state can lie below `from` when it is
/// newer than the newest row of its own kind (see `tblog::Watermark`); replay
/// checks the rows the state holds and applies the others.
pub fn log_needed(after: u64, until: u64, from: u64, to: u64) -> bool {
    until >= from && after < to
}

/// The head of `cluster`'s log chain in `all`: of the segments no other one
/// continues, the one whose interval ends last (`until`, a timestamp of the
/// cluster's own), the later listed on a tie. Not simply the newest to start: a
/// run that waited for the store lease started before the parent it continues,
/// and hosts' clocks differ. Such a segment whose interval cannot be read is the
/// head, so that the caller stops there rather than continue another branch.
///
/// Only segments that hold rows count. A run that found nothing new stores a
/// note (a manifest without objects, its interval empty at its parent's end):
/// it says the log was current, continues nothing and is the head of nothing,
/// so runs write notes without the store lease, and any number of them may
/// name one parent. (Earlier builds chained notes: a segment continuing one
/// still has its parent's end as its start.)
pub fn log_head<M: Member>(all: &[M], cluster: u128) -> Option<&M> {
    let logs: Vec<&M> = all
        .iter()
        .filter(|m| m.is_log_of(cluster) && !m.is_note())
        .collect();
    // Sorted, not hashed: ten years of segments' parents in a third of the
    // memory.
    let mut continued: Vec<BackupId> = logs.iter().filter_map(|m| m.parent()).collect();
    continued.sort_unstable();
    let ends = logs
        .iter()
        .filter(|m| continued.binary_search(&m.id()).is_err());
    ends.enumerate()
        .max_by_key(|&(i, m)| (m.interval().map_or(u64::MAX, |(_, until)| until), i))
        .map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Kind, Status};
    use serde_json::json;
    use time::macros::datetime;
    use time::OffsetDateTime;

    fn at(minute: i64) -> OffsetDateTime {
        datetime!(2026-11-20 00:00 UTC) + time::Duration::minutes(minute)
    }

    fn base(kind: Kind, scope: Scope, operation: &str, minute: i64) -> Manifest {
        Manifest {
            schema: crate::manifest::schema_string(),
            id: BackupId::new_v7(at(minute)),
            kind,
            scope,
            operation: operation.into(),
            status: Status::Completed,
            started_at: at(minute),
            finished_at: at(minute),
            host: "h".into(),
            bkp_version: "0".into(),
            retention_days: 1,
            compression: crate::stages::compress::Compression::None,
            encryption: None,
            objects: Vec::new(),
            files: Vec::new(),
            parent: None,
            uses: Vec::new(),
            chunks: None,
            source: Default::default(),
            store: None,
        }
    }

    fn snapshot(minute: i64, newest: Option<u64>) -> Manifest {
        let mut m = base(Kind::Tigerbeetle, Scope::Full, "snapshot", minute);
        if let Some(n) = newest {
            m.source.insert("newest_timestamp", json!(n));
        }
        m
    }

    fn segment(minute: i64, parent: Option<&Manifest>, after: u64, until: u64) -> Manifest {
        let mut m = base(Kind::Tigerbeetle, Scope::Incremental, "logs", minute);
        m.parent = parent.map(|p| p.id);
        m.source.insert("after", json!(after.to_string()));
        m.source.insert("until", json!(until.to_string()));
        m.objects.push(crate::manifest::ObjectEntry {
            key: format!("seg-{minute}"),
            size: 1,
            sha256: String::new(),
            content_bytes: 1,
            content_sha256: String::new(),
        });
        m
    }

    fn export(minute: i64, parent: Option<&Manifest>) -> Manifest {
        let scope = if parent.is_some() {
            Scope::Incremental
        } else {
            Scope::Full
        };
        let mut m = base(Kind::Duckdb, scope, "export", minute);
        m.parent = parent.map(|p| p.id);
        m
    }

    #[test]
    fn links_of_a_log_chain() {
        let s1 = segment(0, None, 0, 10);
        let s2 = segment(15, Some(&s1), 10, 20);
        let s3 = segment(30, Some(&s2), 25, 30); // gap (20, 25]
        let all = vec![s1.clone(), s2.clone(), s3.clone()];
        let ix = Index::new(&all);
        assert_eq!(ix.link(&s1), Link::Standalone);
        assert_eq!(ix.link(&s2), Link::After(s1.id));
        let gap = Break::Gap {
            parent: s2.id,
            until: 20,
            after: 25,
        };
        assert_eq!(ix.link(&s3), Link::Broken(gap.clone()));
        assert_eq!(ix.log_breaks(), vec![(s3.id, gap)]);
        assert_eq!(
            ix.link(&s3).to_string(),
            format!("BROKEN: gap (20, 25] after {}", s2.id)
        );
    }

    #[test]
    fn a_snapshot_covers_segments_whose_predecessors_are_gone() {
        let snap = snapshot(20, None);
        let gone = segment(10, None, 0, 10);
        let s2 = segment(30, Some(&gone), 10, 20);
        let s3 = segment(45, None, 20, 30);
        // Without the snapshot both are broken; with it both follow it.
        let alone = vec![s2.clone(), s3.clone()];
        let ix = Index::new(&alone);
        assert_eq!(
            ix.link(&s2),
            Link::Broken(Break::ParentMissing { parent: gone.id })
        );
        assert_eq!(ix.link(&s3), Link::Broken(Break::NoParent { after: 20 }));
        let all = vec![snap.clone(), s2.clone()];
        let ix = Index::new(&all);
        assert_eq!(ix.link(&s2), Link::AfterSnapshot(snap.id));
        // A segment between the snapshot and s3 means the snapshot does not cover it.
        let all = vec![snap.clone(), s2.clone(), s3.clone()];
        let ix = Index::new(&all);
        assert_eq!(ix.link(&s3), Link::Broken(Break::NoParent { after: 20 }));
    }

    #[test]
    fn a_counted_snapshot_covers_exactly_up_to_its_newest_timestamp() {
        let snap = snapshot(20, Some(15));
        let early = segment(30, None, 15, 20);
        let late = segment(31, None, 16, 20);
        let all = vec![snap.clone(), early.clone(), late.clone()];
        let ix = Index::new(&all);
        assert_eq!(ix.covering_snapshot(&early), Some(snap.id));
        assert_eq!(ix.covering_snapshot(&late), None);
        assert_eq!(ix.covering_snapshot(&snap), None, "not a segment");
    }

    #[test]
    fn ancestry_of_exports() {
        let full = export(0, None);
        let inc1 = export(10, Some(&full));
        let inc2 = export(20, Some(&inc1));
        let all = vec![full.clone(), inc1.clone(), inc2.clone()];
        let ix = Index::new(&all);
        let ids = |v: Vec<&Manifest>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(ix.ancestry(&inc2).unwrap()),
            vec![full.id, inc1.id, inc2.id]
        );
        assert_eq!(ids(ix.ancestry(&full).unwrap()), vec![full.id]);
        assert!(ix.problems(&inc2).is_empty());

        // The full export gone: inc2's direct parent is there, an ancestor is not.
        let all = vec![inc1.clone(), inc2.clone()];
        let ix = Index::new(&all);
        let missing = Break::AncestorMissing { ancestor: full.id };
        assert_eq!(ix.ancestry(&inc2), Err(missing.clone()));
        assert_eq!(ix.problems(&inc2), vec![missing]);
        // inc1's own parent is missing: reported once, by its link.
        assert_eq!(
            ix.problems(&inc1),
            vec![Break::ParentMissing { parent: full.id }]
        );
    }

    #[test]
    fn ancestry_refuses_orphans_and_cycles() {
        let mut orphan = export(0, None);
        orphan.scope = Scope::Incremental;
        let all = vec![orphan.clone()];
        assert_eq!(
            Index::new(&all).ancestry(&orphan),
            Err(Break::IncrementalWithoutParent { id: orphan.id })
        );
        let mut a = export(0, None);
        let mut b = export(1, Some(&a));
        a.scope = Scope::Incremental;
        a.parent = Some(b.id);
        b.parent = Some(a.id);
        let all = vec![a.clone(), b.clone()];
        assert!(matches!(
            Index::new(&all).ancestry(&b),
            Err(Break::Cycle { .. })
        ));
    }

    #[test]
    fn log_cover_finds_the_segments_and_the_holes() {
        let s1 = segment(0, None, 0, 10);
        let s2 = segment(15, Some(&s1), 10, 20);
        let s3 = segment(30, Some(&s2), 20, 30);
        let empty = {
            let mut m = segment(31, Some(&s3), 30, 30);
            m.objects.clear();
            m
        };
        let all = vec![s1.clone(), s2.clone(), s3.clone(), empty];
        let ids = |v: &[&Manifest]| v.iter().map(|m| m.id).collect::<Vec<_>>();
        // From a snapshot at 12 to 25: s2 and s3.
        let (segs, reached) = log_cover(&all, 12, 25).unwrap();
        assert_eq!(ids(&segs), vec![s2.id, s3.id]);
        assert_eq!(reached, 30);
        // From the beginning past the end: all three, reaching only 30.
        let (segs, reached) = log_cover(&all, 0, 100).unwrap();
        assert_eq!(ids(&segs), vec![s1.id, s2.id, s3.id]);
        assert_eq!(reached, 30);
        // From a state at 30: s3 (which ends there) may hold rows imported after
        // that state below 30, and so may a segment (30, 30] of such rows.
        let late = segment(32, Some(&s3), 30, 30);
        let with_late = vec![s1.clone(), s2.clone(), s3.clone(), late.clone()];
        let (segs, reached) = log_cover(&with_late, 30, 40).unwrap();
        assert_eq!(ids(&segs), vec![s3.id, late.id]);
        assert_eq!(reached, 30);
        // Nothing after 40 is needed for 40.
        let (segs, _) = log_cover(&all, 35, 40).unwrap();
        assert!(segs.is_empty());
        // s2 gone: a hole (10, 20] before s3.
        let holed = vec![s1.clone(), s3.clone()];
        assert_eq!(
            log_cover(&holed, 0, 25),
            Err(Hole {
                next: s3.id,
                reached: 10,
                after: 20
            })
        );
    }

    #[test]
    fn the_log_head_is_where_the_chain_ends_not_the_newest_start() {
        let a = segment(0, None, 0, 10);
        let b = segment(5, Some(&a), 10, 20);
        // Started before its parent (it waited for the lease) and continues it.
        let c = segment(3, Some(&b), 20, 30);
        let mut all = vec![a.clone(), c.clone(), b.clone()];
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(c.id));
        // Runs with nothing new leave notes, which are no head, however many
        // name one parent and whenever they start.
        let mut d = segment(10, Some(&c), 30, 30);
        d.objects.clear();
        let mut e = segment(8, Some(&d), 30, 30);
        e.objects.clear();
        let mut e2 = segment(40, Some(&c), 30, 30);
        e2.objects.clear();
        all.extend([e.clone(), d.clone(), e2.clone()]);
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(c.id));
        // Two branches (a fork an earlier build could leave): the one that
        // reaches further, wherever it is listed; a segment may continue a
        // note (earlier builds chained them).
        let f = segment(20, Some(&b), 20, 25);
        let g = segment(1, Some(&e), 30, 40);
        all.extend([f.clone(), g.clone()]);
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(g.id));
        // A tie: the later listed.
        let h = segment(2, Some(&f), 25, 40);
        all.push(h.clone());
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(h.id));
        let n = all.len();
        all.swap(n - 1, n - 2);
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(g.id));
        // Another cluster's segment is no head of this one, however far it reaches.
        let mut other = segment(30, Some(&g), 40, 90);
        other.source.insert("cluster_id", json!("7"));
        all.push(other.clone());
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(g.id));
        assert_eq!(log_head(&all, 7).map(|m| m.id), Some(other.id));
        // An end whose interval cannot be read is returned, to be refused.
        let mut unreadable = segment(31, Some(&h), 40, 50);
        unreadable.source.remove("until");
        all.push(unreadable.clone());
        assert_eq!(log_head(&all, 0).map(|m| m.id), Some(unreadable.id));
        assert!(log_head(&all[..0], 0).is_none());
    }

    #[test]
    fn briefs_judge_every_chain_as_the_whole_manifests_do() {
        let s1 = segment(0, None, 0, 10);
        let s2 = segment(15, Some(&s1), 10, 20);
        let gap = segment(30, Some(&s2), 25, 30);
        let counted = snapshot(40, Some(30));
        let after_counted = segment(45, None, 30, 40);
        let uncounted = snapshot(50, None);
        let orphan = segment(55, Some(&segment(1, None, 0, 1)), 40, 50);
        let mut note = base(Kind::Tigerbeetle, Scope::Incremental, "logs", 60);
        note.parent = Some(orphan.id);
        note.source.insert("after", json!("50"));
        note.source.insert("until", json!("50"));
        // Of another cluster, and ending last: the head of its own only.
        let mut other = segment(65, None, 0, 500);
        other.source.insert("cluster_id", json!("7"));
        let mut unreadable = segment(70, Some(&orphan), 50, 60);
        unreadable.source.remove("until");
        let full = export(0, None);
        let inc = export(10, Some(&full));
        let lost = export(20, Some(&export(5, None)));
        let inc_of_lost = export(30, Some(&lost));
        let all = vec![
            s1,
            s2,
            gap,
            counted,
            after_counted,
            uncounted,
            orphan,
            note,
            other,
            unreadable,
            full,
            inc,
            lost,
            inc_of_lost,
        ];
        let briefs: Vec<Brief> = all.iter().map(Brief::of).collect();
        let (whole, brief) = (Index::new(&all), Index::new(&briefs));
        for (m, b) in all.iter().zip(&briefs) {
            assert_eq!(whole.link(m), brief.link(b), "{}", m.operation);
            assert_eq!(whole.problems(m), brief.problems(b));
            assert_eq!(whole.covering_snapshot(m), brief.covering_snapshot(b));
            let ids = |r: Result<Vec<&Manifest>, Break>| r.map(|v| ids_of(&v));
            let bids = |r: Result<Vec<&Brief>, Break>| r.map(|v| v.iter().map(|b| b.id).collect());
            assert_eq!(ids(whole.ancestry(m)), bids(brief.ancestry(b)));
        }
        assert!(!whole.log_breaks().is_empty());
        assert_eq!(whole.log_breaks(), brief.log_breaks());
        // With the end whose interval cannot be read (the head of every
        // cluster), and without it.
        let readable = |m: &&Manifest| m.operation != "logs" || m.interval().is_some();
        let fewer: Vec<Manifest> = all.iter().filter(readable).cloned().collect();
        let fewer_briefs: Vec<Brief> = fewer.iter().map(Brief::of).collect();
        for (all, briefs) in [(&all, &briefs), (&fewer, &fewer_briefs)] {
            for cluster in [0, 7, 9] {
                assert_eq!(
                    log_head(all, cluster).map(|m| m.id),
                    log_head(briefs, cluster).map(|b| b.id)
                );
            }
        }
        assert_ne!(
            log_head(&fewer, 0).map(|m| m.id),
            log_head(&fewer, 7).map(|m| m.id)
        );
        for (from, to) in [(0, 60), (10, 45), (30, 50), (20, 26)] {
            let w = log_cover(&all, from, to).map(|(v, r)| (ids_of(&v), r));
            let b =
                log_cover(&briefs, from, to).map(|(v, r)| (v.iter().map(|b| b.id).collect(), r));
            assert_eq!(w, b, "({from}, {to}]");
        }
    }

    fn ids_of(ms: &[&Manifest]) -> Vec<BackupId> {
        ms.iter().map(|m| m.id).collect()
    }
}
