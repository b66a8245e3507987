//! What `cleanup` plans on: every backup of the store as retention sees it
//! ([`Candidate`]), and of each what the plan shows and what deleting it
//! touches, not the manifests. A store cleaned for the first time after
//! years holds hundreds of thousands of them; only the chunked ones are
//! held whole (which chunks the kept backups name decides what a deletion
//! frees).
//!
//! A deletion acts on the manifest as its own key holds it, read again just
//! before, and checked against the fingerprint of the version the plan was
//! made on ([`Book::same`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher, RandomState};

use anyhow::Result;
use time::OffsetDateTime;

use crate::id::BackupId;
use crate::manifest::shared::Shared;
use crate::manifest::usage::Tally;
use crate::manifest::{self, catalog, Kind, Manifest, Scope, Trust, Unreadable};
use crate::retention::{Candidate, Gather};
use crate::store::Store;

/// What the plan shows of one backup, and how its manifest is recognised.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub kind: Kind,
    pub scope: Scope,
    pub operation: Shared,
    pub started_at: OffsetDateTime,
    /// [`Manifest::stored_bytes`].
    pub stored_bytes: u64,
    /// A hash of the whole manifest, keyed afresh each run.
    fingerprint: u64,
    /// Where its keys' hashes are in [`Book::keys`] (a dry run's only).
    keys: (u32, u32),
}

/// Every backup of the store, for a cleanup (see the module documentation).
pub(super) struct Book {
    /// The backups of the kind cleaned (of every kind, without `--kind`).
    pub candidates: Vec<Candidate<BackupId>>,
    /// Beside each of them, by id (sorted; an id listed twice is refused
    /// before anything reads these).
    rows: Vec<(BackupId, Row)>,
    /// Every backup's id and kind, of every kind.
    pub ids: Vec<(BackupId, Kind)>,
    /// The chunked backups of every kind, whole.
    pub chunked: BTreeMap<(Kind, BackupId), Manifest>,
    pub unreadable: Vec<Unreadable>,
    /// The hashes of the keys each cleaned backup names (`needed_keys`),
    /// gathered for a dry run: it deletes nothing, and must not show what a
    /// real run's deletions remove as left over.
    keys: Vec<u64>,
    hasher: RandomState,
}

impl Book {
    /// Reads the catalog of every kind completely (checked against every
    /// manifest key), holding each manifest only while it is looked at.
    /// `kind`: the kind cleaned (the others are kept, and named by id).
    /// `gone`: the backups whose deletion an earlier run left to finish,
    /// named by id only. `dry`: for a dry run, which reads nothing again
    /// and deletes nothing, the hashes of the keys each cleaned backup names
    /// are gathered, and no fingerprint is made.
    pub fn read(
        store: &dyn Store,
        trust: &Trust,
        (kind, gone): (Option<Kind>, &BTreeSet<BackupId>),
        dry: bool,
    ) -> Result<Book> {
        let mut gather = Gather::default();
        let mut b = Book {
            candidates: Vec::new(),
            rows: Vec::new(),
            ids: Vec::new(),
            chunked: BTreeMap::new(),
            unreadable: Vec::new(),
            keys: Vec::new(),
            hasher: RandomState::new(),
        };
        for k in Kind::ALL {
            let marks = (gather.marks(), b.rows.len(), b.ids.len(), b.keys.len());
            let bad = catalog::fold(store, trust, k, catalog::Depth::Complete, &mut |m| {
                let Some(m) = m else {
                    // The kind's read starts again: what was made of it goes.
                    gather.truncate(marks.0);
                    b.rows.truncate(marks.1);
                    b.ids.truncate(marks.2);
                    b.keys.truncate(marks.3);
                    b.chunked.retain(|(of, _), _| *of != k);
                    return;
                };
                b.ids.push((m.id, m.kind));
                if gone.contains(&m.id) {
                    return;
                }
                if kind.is_none_or(|want| want == m.kind) {
                    gather.add(&m);
                    let row = b.row(&m, dry);
                    b.rows.push((m.id, row));
                }
                if m.chunks.is_some() {
                    b.chunked.insert((m.kind, m.id), m);
                }
            })?;
            b.unreadable.extend(bad);
        }
        // Cleanup adds no manifest: what the reads kept of the catalogs for
        // that is not held through the plan.
        catalog::forget_cached();
        b.candidates = gather.finish();
        b.rows.sort_unstable_by_key(|(id, _)| *id);
        b.rows.shrink_to_fit();
        b.ids.shrink_to_fit();
        b.keys.shrink_to_fit();
        Ok(b)
    }

    fn row(&mut self, m: &Manifest, dry: bool) -> Row {
        let from = self.keys.len();
        if dry {
            let hasher = &self.hasher;
            self.keys
                .extend(m.needed_keys().iter().map(|k| hasher.hash_one(k.as_str())));
        }
        Row {
            kind: m.kind,
            scope: m.scope,
            operation: m.operation.clone(),
            started_at: m.started_at,
            stored_bytes: m.stored_bytes(),
            // Serializing every manifest is most of the read's work: only
            // for a run that reads them again.
            fingerprint: if dry { 0 } else { self.fingerprint(m) },
            keys: (
                u32::try_from(from).unwrap_or(u32::MAX),
                u32::try_from(self.keys.len()).unwrap_or(u32::MAX),
            ),
        }
    }

    /// The row of backup `id` of the kind cleaned.
    pub fn get(&self, id: &BackupId) -> Option<&Row> {
        let at = self.rows.binary_search_by_key(id, |(i, _)| *i).ok()?;
        Some(&self.rows[at].1)
    }

    /// Whether `fresh`, read again from its key, is the version of backup
    /// `row` the plan was made on.
    fn same(&self, row: &Row, fresh: &Manifest) -> bool {
        self.fingerprint(fresh) == row.fingerprint
    }

    /// The hashes of the keys backup `row` names (a dry run's book only).
    pub fn keys_of(&self, row: &Row) -> &[u64] {
        let (from, to) = (row.keys.0 as usize, row.keys.1 as usize);
        self.keys.get(from..to).unwrap_or_default()
    }

    /// How [`Book::keys_of`] hashes a key (`hash_one` of the key as a
    /// `&str`), for after the book is dropped.
    pub fn key_hasher(&self) -> RandomState {
        self.hasher.clone()
    }

    /// Backup `id` of the kind cleaned as its own key holds it now, checked
    /// against the version the plan was made on (see
    /// [`catalog::reread_as`]).
    pub fn reread(&self, store: &dyn Store, trust: &Trust, id: BackupId) -> Result<Manifest> {
        let Some(row) = self.get(&id) else {
            anyhow::bail!("backup {id} is not among those cleanup planned on");
        };
        catalog::reread_as(store, trust, row.kind, id, |fresh| self.same(row, fresh))
    }

    /// A hash of the whole of `m`, as it serializes (a dry run's book
    /// makes none: it reads nothing again).
    fn fingerprint(&self, m: &Manifest) -> u64 {
        struct Feed<'a>(&'a mut dyn Hasher);
        impl std::io::Write for Feed<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.write(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = self.hasher.build_hasher();
        // Cannot fail: every map of a manifest is keyed by strings, and the
        // feed takes every byte.
        let _ = serde_json::to_writer(Feed(&mut h), m);
        h.finish()
    }
}

/// The key of backup `id` of `row`'s kind.
pub(super) fn key_of(row: &Row, id: BackupId) -> String {
    manifest::manifest_key(row.kind, id)
}

/// What the store holds once the deletions are unlisted, read afresh (a
/// manifest written meanwhile counts), each manifest held only while it is
/// looked at but the chunked and PostgreSQL ones.
pub(super) struct Remaining {
    /// Every key the listed manifests name (`needed_keys`), but the chunks
    /// of the chunked ones.
    pub named: BTreeSet<String>,
    /// The chunked ones, whole: their chunk lists name their chunks.
    pub chunked: Vec<Manifest>,
    /// PostgreSQL's, whole: the archived WAL older than all of them goes.
    pub postgres: Vec<Manifest>,
    /// What the store holds, but the backups whose deletion this run
    /// finishes (`finished`, sorted: their manifests may still be listed).
    pub tally: Tally,
    pub unreadable: Vec<Unreadable>,
}

impl Remaining {
    pub fn read(
        store: &dyn Store,
        trust: &Trust,
        finished: &[(Kind, BackupId)],
    ) -> Result<Remaining> {
        let mut r = Remaining {
            named: BTreeSet::new(),
            chunked: Vec::new(),
            postgres: Vec::new(),
            tally: Tally::default(),
            unreadable: Vec::new(),
        };
        for k in Kind::ALL {
            // One kind's, joined once its read is done: a read that starts
            // again forgets what was made of it.
            let mut named = Vec::new();
            let mut chunked = Vec::new();
            let mut postgres = Vec::new();
            let mut tally = Tally::default();
            let bad = catalog::fold(store, trust, k, catalog::Depth::Complete, &mut |m| {
                let Some(m) = m else {
                    named.clear();
                    chunked.clear();
                    postgres.clear();
                    tally = Tally::default();
                    return;
                };
                named.extend(m.needed_keys());
                if finished.binary_search(&(m.kind, m.id)).is_err() {
                    tally.add(&m);
                }
                if m.kind == Kind::Postgres {
                    postgres.push(m.clone());
                }
                if m.chunks.is_some() {
                    chunked.push(m);
                }
            })?;
            r.named.extend(named);
            r.chunked.extend(chunked);
            r.postgres.extend(postgres);
            r.tally.join(tally);
            r.unreadable.extend(bad);
        }
        Ok(r)
    }
}
